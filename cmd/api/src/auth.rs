//! Bearer tokens. The data directory keeps only their SHA-256 (`tokens`, one
//! `<hex sha256> <user>` a line); the admin token made at first start is also kept in
//! `admin.token` (mode 0600), as kubeadm keeps `admin.conf`, so that
//! `kommit kubeconfig` can print it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::pki::{PkiError, write_private};

/// The tokens the API accepts.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], String>,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn tokens_file(data_dir: &Path) -> PathBuf {
    data_dir.join("tokens")
}

/// Path of the admin token file.
pub fn admin_token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

impl Tokens {
    /// An empty set plus the given `(token, user)` pairs (tests, embedding).
    pub fn from_plain<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Tokens {
        Tokens {
            by_hash: pairs
                .into_iter()
                .map(|(t, u)| (hash(t), u.to_string()))
                .collect(),
        }
    }

    /// The user a token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<&str> {
        self.by_hash.get(&hash(token)).map(String::as_str)
    }

    /// Reads the token hashes from `data_dir`; at first start makes an admin token
    /// (stored hashed in `tokens` and in clear in `admin.token`).
    pub fn load_or_create(data_dir: &Path) -> Result<Tokens, PkiError> {
        let file = tokens_file(data_dir);
        if !file.exists() {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token = hex::encode(bytes);
            write_private(&admin_token_file(data_dir), &format!("{token}\n"))?;
            write_private(&file, &format!("{} admin\n", hex::encode(hash(&token))))?;
            tracing::info!(file = %file.display(), "made the admin token");
        }
        let text = std::fs::read_to_string(&file).map_err(|source| PkiError::Io {
            path: file.clone(),
            source,
        })?;
        let mut by_hash = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let parsed = parts
                .next()
                .and_then(|h| hex::decode(h).ok())
                .and_then(|h| <[u8; 32]>::try_from(h).ok());
            match (parsed, parts.next()) {
                (Some(h), Some(user)) => {
                    by_hash.insert(h, user.to_string());
                }
                _ => tracing::warn!(
                    file = %file.display(),
                    line = i + 1,
                    "ignoring a malformed token line (want: <sha256 hex> <user>)"
                ),
            }
        }
        Ok(Tokens { by_hash })
    }
}

/// The admin token kept in `data_dir` (made by [`Tokens::load_or_create`]).
pub fn admin_token(data_dir: &Path) -> Result<String, PkiError> {
    let path = admin_token_file(data_dir);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|source| PkiError::Io { path, source })
}
