//! CPU and memory limits for process containers through cgroups, where the host allows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::runtime::Resources;

const ROOT: &str = "/sys/fs/cgroup";
static WARNED: AtomicBool = AtomicBool::new(false);

fn warn_once(msg: String) {
    if !WARNED.swap(true, Ordering::SeqCst) {
        tracing::warn!("process runtime: limits not applied: {msg}");
    } else {
        tracing::debug!("process runtime: limits not applied: {msg}");
    }
}

/// Makes the container's cgroups with its limits; returns the directories the shim joins
/// (none when there are no limits or the host does not allow it).
pub(crate) fn prepare(node: &str, id: &str, r: &Resources) -> Vec<PathBuf> {
    if r.cpu_limit_millis.is_none() && r.memory_limit_bytes.is_none() {
        return Vec::new();
    }
    let root = Path::new(ROOT);
    let res = if root.join("cgroup.controllers").exists() {
        v2(root, node, id, r)
    } else {
        v1(root, node, id, r)
    };
    match res {
        Ok(dirs) => dirs,
        Err(e) => {
            warn_once(e);
            Vec::new()
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("{}: {e}", path.display()))
}

fn v2(root: &Path, node: &str, id: &str, r: &Resources) -> Result<Vec<PathBuf>, String> {
    let parent = root.join("kommit");
    let node_dir = parent.join(node);
    let dir = node_dir.join(id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for p in [root, parent.as_path(), node_dir.as_path()] {
        let _ = write(&p.join("cgroup.subtree_control"), "+cpu +memory");
    }
    if let Some(m) = r.memory_limit_bytes {
        write(&dir.join("memory.max"), &m.to_string())?;
    }
    if let Some(c) = r.cpu_limit_millis {
        write(&dir.join("cpu.max"), &format!("{} 100000", c * 100))?;
    }
    Ok(vec![dir])
}

fn v1(root: &Path, node: &str, id: &str, r: &Resources) -> Result<Vec<PathBuf>, String> {
    let mut dirs = Vec::new();
    if let Some(m) = r.memory_limit_bytes {
        let dir = root.join("memory").join("kommit").join(node).join(id);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        write(&dir.join("memory.limit_in_bytes"), &m.to_string())?;
        dirs.push(dir);
    }
    if let Some(c) = r.cpu_limit_millis {
        let dir = root.join("cpu").join("kommit").join(node).join(id);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        write(&dir.join("cpu.cfs_period_us"), "100000")?;
        write(&dir.join("cpu.cfs_quota_us"), &(c * 100).to_string())?;
        dirs.push(dir);
    }
    Ok(dirs)
}

/// Removes a container's cgroups (they must be empty: the process has ended).
pub(crate) fn remove(dirs: &[PathBuf]) {
    for d in dirs {
        if let Err(e) = std::fs::remove_dir(d) {
            tracing::debug!("cannot remove cgroup {}: {e}", d.display());
        }
        // The node's directory too, once empty.
        if let Some(parent) = d.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}
