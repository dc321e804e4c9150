//! Kubernetes' atomic update of a volume's files (its `AtomicWriter`), so a program never
//! reads a half-written set.
//!
//! Layout of a volume directory:
//!
//! ```text
//! <dir>/..2026_12_03_07_41_45.123456789   the current files (a new directory per change)
//! <dir>/..data -> ..2026_12_03_07_41_45.123456789
//! <dir>/index.html -> ..data/index.html   one symlink per top-level name
//! ```
//!
//! An update writes a new timestamped directory, points a temporary `..data_tmp` symlink at
//! it and renames that over `..data` (one atomic `rename(2)`), adds symlinks for new names,
//! removes those of names no longer present, then deletes the old directory. A program
//! that opens `<dir>/index.html` sees either the old or the new file, never a mix. All
//! links are relative, so the directory works the same when bind-mounted elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::jiff::Timestamp;

/// The name of the symlink to the current files.
pub const DATA_DIR: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// One file of a volume's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContent {
    /// Contents.
    pub data: Vec<u8>,
    /// Permission bits (`0o644` by default, as Kubernetes' `defaultMode`).
    pub mode: u32,
}

/// A volume's files: relative path (`key`, or an item's `path` such as `conf/app.yaml`)
/// to contents.
pub type Payload = BTreeMap<String, FileContent>;

/// Why a volume's files cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A path in the payload is absolute, has `..`, or starts with `..`.
    #[error("invalid path {0:?}: must be relative, without `..` and not start with `..`")]
    InvalidPath(String),
    /// The file system refused.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WriteError {
    let path = path.to_path_buf();
    move |source| WriteError::Io { what, path, source }
}

/// Checks a payload path as Kubernetes does.
pub fn validate_path(p: &str) -> Result<(), WriteError> {
    let bad = || WriteError::InvalidPath(p.to_string());
    if p.is_empty() || p.starts_with("..") {
        return Err(bad());
    }
    for c in Path::new(p).components() {
        match c {
            Component::Normal(_) => {}
            _ => return Err(bad()),
        }
    }
    Ok(())
}

fn top_level(p: &str) -> &str {
    p.split('/').next().unwrap_or(p)
}

/// Whether the files behind `..data` are exactly `payload` (contents and modes).
fn unchanged(dir: &Path, payload: &Payload) -> bool {
    let data = dir.join(DATA_DIR);
    let Ok(target) = std::fs::read_link(&data) else {
        return false;
    };
    let current = dir.join(target);
    let mut on_disk = BTreeSet::new();
    if collect_files(&current, &current, &mut on_disk).is_err() {
        return false;
    }
    if on_disk.len() != payload.len() || !payload.keys().all(|k| on_disk.contains(k)) {
        return false;
    }
    payload.iter().all(|(k, f)| {
        let p = current.join(k);
        let same_mode = std::fs::metadata(&p)
            .map(|m| m.permissions().mode() & 0o7777 == f.mode & 0o7777)
            .unwrap_or(false);
        same_mode && std::fs::read(&p).is_ok_and(|d| d == f.data)
    })
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            collect_files(root, &p, out)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// Writes `payload` into `dir` with the atomic scheme above; returns whether anything
/// changed (false when the files already were `payload`).
pub fn write_atomic(dir: &Path, payload: &Payload) -> Result<bool, WriteError> {
    for p in payload.keys() {
        validate_path(p)?;
    }
    std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    if unchanged(dir, payload) {
        return Ok(false);
    }
    let old = std::fs::read_link(dir.join(DATA_DIR)).ok();

    // 1. The new files, in a fresh timestamped directory.
    let ts_name = new_dir_name(dir);
    let ts = dir.join(&ts_name);
    std::fs::create_dir(&ts).map_err(io("cannot create", &ts))?;
    std::fs::set_permissions(&ts, std::fs::Permissions::from_mode(0o755))
        .map_err(io("cannot chmod", &ts))?;
    for (rel, f) in payload {
        let path = ts.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
        }
        let mut file = std::fs::File::create(&path).map_err(io("cannot create", &path))?;
        file.write_all(&f.data).map_err(io("cannot write", &path))?;
        file.sync_all().map_err(io("cannot sync", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode & 0o7777))
            .map_err(io("cannot chmod", &path))?;
    }

    // 2. Swap `..data` in one rename.
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&ts_name, &tmp).map_err(io("cannot link", &tmp))?;
    let data = dir.join(DATA_DIR);
    std::fs::rename(&tmp, &data).map_err(io("cannot rename", &data))?;

    // 3. User-visible names: add the new ones, drop the ones no longer in the payload.
    let names: BTreeSet<&str> = payload.keys().map(|k| top_level(k)).collect();
    for name in &names {
        let link = dir.join(name);
        let want = Path::new(DATA_DIR).join(name);
        match std::fs::read_link(&link) {
            Ok(t) if t == want => {}
            Ok(_) => {
                std::fs::remove_file(&link).map_err(io("cannot remove", &link))?;
                symlink(&want, &link).map_err(io("cannot link", &link))?;
            }
            Err(_) => {
                if link.symlink_metadata().is_ok() {
                    // Something else (a directory made by a subPath mount) is in the way.
                    tracing::debug!("not replacing {}: not a symlink", link.display());
                    continue;
                }
                symlink(&want, &link).map_err(io("cannot link", &link))?;
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("..") || names.contains(name.as_str()) {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_symlink()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    // 4. The old files go.
    if let Some(old) = old
        && old != Path::new(&ts_name)
    {
        let old = dir.join(old);
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::debug!("cannot remove {}: {e}", old.display());
        }
    }
    Ok(true)
}

fn new_dir_name(dir: &Path) -> String {
    let now = Timestamp::now();
    let base = format!(
        "..{}_{:09}",
        now.strftime("%Y_%m_%d_%H_%M_%S"),
        now.subsec_nanosecond()
    );
    let mut name = base.clone();
    let mut n = 1;
    while dir.join(&name).symlink_metadata().is_ok() {
        name = format!("{base}_{n}");
        n += 1;
    }
    name
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "kommit-atomic-{}-{}",
            std::process::id(),
            Timestamp::now().as_nanosecond()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn dir_names_start_with_two_dots() {
        let d = tmp();
        let n = new_dir_name(&d);
        assert!(n.starts_with("..2"), "{n}");
        assert!(!n[2..].contains('.'), "{n}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn paths_are_checked() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "..data", "..x/y"] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
        for good in ["a", "a/b.txt", "a.b", "x..y"] {
            assert!(validate_path(good).is_ok(), "{good}");
        }
    }
}
