//! What `kommit up` tracks: the repository (a local path or a URL), the branch, the
//! manifest folder, and where its data lives.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kommit_desired::watch::Source;

/// The resolved target of `kommit up`.
#[derive(Debug, Clone)]
pub struct Target {
    /// For the ref watcher.
    pub source: Source,
    /// Shown to people (path or URL).
    pub display: String,
    /// The tracked branch.
    pub branch: String,
    /// The manifest folder inside the repository (`""`: the whole tree).
    pub path: String,
    /// A name for the default data directory.
    pub name: String,
}

/// A URL rather than a path.
pub fn is_url(repo: &str) -> bool {
    repo.contains("://") || (repo.contains('@') && repo.contains(':') && !Path::new(repo).exists())
}

/// Resolves REPO, --branch and --path.
pub fn resolve(
    repo: Option<&str>,
    branch: Option<&str>,
    path: Option<&str>,
) -> anyhow::Result<Target> {
    let repo = repo.unwrap_or(".");
    if is_url(repo) {
        let Some(branch) = branch else {
            bail!("--branch is required with a repository URL ({repo})");
        };
        let name = repo
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or("cluster")
            .trim_end_matches(".git")
            .to_owned();
        return Ok(Target {
            source: Source::Remote {
                url: repo.to_owned(),
                // Filled in once the data directory is known.
                mirror: PathBuf::new(),
            },
            display: repo.to_owned(),
            branch: branch.to_owned(),
            path: path.unwrap_or("").to_owned(),
            name: sanitize(&name),
        });
    }
    let given = std::fs::canonicalize(repo).with_context(|| format!("{repo}: no such folder"))?;
    let discovered = kommit_desired::gix::discover(&given)
        .with_context(|| format!("{}: not inside a Git repository", given.display()))?;
    let root: PathBuf = match discovered.workdir() {
        Some(w) => std::fs::canonicalize(w).unwrap_or_else(|_| w.to_path_buf()),
        None => std::fs::canonicalize(discovered.git_dir())
            .unwrap_or_else(|_| discovered.git_dir().to_path_buf()),
    };
    // A folder inside the work tree means: that repository, manifests in that folder.
    let relative = given
        .strip_prefix(&root)
        .map(|p| {
            p.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default();
    let path = match path {
        Some(p) => p.to_owned(),
        None => relative.clone(),
    };
    let branch = match branch {
        Some(b) => b.to_owned(),
        None => {
            let head = discovered
                .head_name()
                .context("reading the repository's HEAD")?
                .with_context(|| {
                    format!(
                        "{}: HEAD is detached; name a branch with --branch",
                        root.display()
                    )
                })?;
            head.shorten().to_string()
        }
    };
    let mut name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cluster".into())
        .trim_end_matches(".git")
        .to_owned();
    if !path.is_empty() {
        name = format!("{name}-{}", path.replace('/', "-"));
    }
    Ok(Target {
        source: Source::Local(root.clone()),
        display: root.display().to_string(),
        branch,
        path,
        name: sanitize(&name),
    })
}

fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() {
        "cluster".into()
    } else {
        out
    }
}

/// The default data directory: `$XDG_STATE_HOME/kommit/<name>`, else
/// `~/.local/state/kommit/<name>`: outside the work tree, so nothing kommit writes shows
/// up in `git status`.
pub fn default_data_dir(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("kommit").join(name));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither $XDG_STATE_HOME nor $HOME is set: pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/state/kommit").join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        assert!(is_url("https://example.invalid/c.git"));
        assert!(is_url("file:///tmp/x"));
        assert!(!is_url("examples/hello"));
    }

    #[test]
    fn names_are_safe_folder_names() {
        assert_eq!(sanitize("kommit-examples/hello"), "kommit-examples-hello");
        assert_eq!(sanitize(""), "cluster");
    }
}
