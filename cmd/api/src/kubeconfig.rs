//! `kommit kubeconfig`: a kubeconfig for the cluster's admin.

use std::path::Path;

use base64::Engine;

use crate::auth::admin_token;
use crate::pki::Pki;
use crate::serve::server_file;

/// Why no kubeconfig could be made.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// A file of the data directory is missing or unreadable.
    #[error("{path}: {error} (has `kommit up` run with this data directory?)")]
    Read {
        /// The file.
        path: String,
        /// The error (in the message, not a `source`: it is said once).
        error: std::io::Error,
    },
}

fn read(path: &Path) -> Result<String, KubeconfigError> {
    std::fs::read_to_string(path).map_err(|error| KubeconfigError::Read {
        path: path.display().to_string(),
        error,
    })
}

/// A kubeconfig (YAML) for the admin of the cluster whose data directory is `data_dir`:
/// the server URL (`server`, or the one the API last served at), the CA, the admin token.
pub fn kubeconfig(data_dir: &Path, server: Option<&str>) -> Result<String, KubeconfigError> {
    let ca = read(&Pki::dir(data_dir).join("ca.crt"))?;
    let token = admin_token(data_dir).map_err(|e| match e {
        crate::pki::PkiError::Io { path, source } => KubeconfigError::Read {
            path: path.display().to_string(),
            error: source,
        },
        crate::pki::PkiError::Rcgen(e) => KubeconfigError::Read {
            path: data_dir.display().to_string(),
            error: std::io::Error::other(e.to_string()),
        },
    })?;
    let server = match server {
        Some(s) => s.to_string(),
        None => read(&server_file(data_dir))?.trim().to_string(),
    };
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca.as_bytes());
    Ok(format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kommit
  cluster:
    server: {server}
    certificate-authority-data: {ca_data}
users:
- name: kommit-admin
  user:
    token: {token}
contexts:
- name: kommit
  context:
    cluster: kommit
    user: kommit-admin
current-context: kommit
"
    ))
}
