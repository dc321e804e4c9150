//! Helpers for tests: real Git repositories made with the `git` command line.
//!
//! Use from a test file in the top-level `tests/` folder with `mod support;`, or from a
//! crate's own tests with `#[path = "<relative path to>/tests/support/mod.rs"] mod support;`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A Git repository in a temporary directory (removed on drop).
pub struct GitRepo {
    dir: tempfile::TempDir,
    path: PathBuf,
    bare: bool,
}

/// A `git` command with a fixed identity and date and no user or system configuration,
/// so tests behave the same on every machine and commit ids are reproducible.
pub fn git_command(cwd: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.invalid")
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.invalid")
        .env("GIT_AUTHOR_DATE", "2025-01-01T12:00:00+00:00")
        .env("GIT_COMMITTER_DATE", "2025-01-01T12:00:00+00:00")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ]);
    cmd
}

/// Runs git in `cwd`; panics with its output unless it succeeds; returns stdout.
pub fn git_in(cwd: &Path, args: &[&str]) -> String {
    let out = git_command(cwd).args(args).output().expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed in {}:\n{}{}",
        cwd.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

impl GitRepo {
    /// A new repository with a work tree, branch `main`, no commits.
    pub fn init() -> GitRepo {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("repo");
        std::fs::create_dir(&path).unwrap();
        git_in(&path, &["init", "-q", "-b", "main"]);
        GitRepo {
            dir,
            path,
            bare: false,
        }
    }

    /// A new bare repository, branch `main`, no commits.
    pub fn init_bare() -> GitRepo {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("repo.git");
        std::fs::create_dir(&path).unwrap();
        git_in(&path, &["init", "-q", "--bare", "-b", "main"]);
        GitRepo {
            dir,
            path,
            bare: true,
        }
    }

    /// A clone of `url` (a path or URL) with a work tree.
    pub fn clone_from(url: &str) -> GitRepo {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("clone");
        git_in(dir.path(), &["clone", "-q", url, "clone"]);
        GitRepo {
            dir,
            path,
            bare: false,
        }
    }

    /// The repository's directory (the work tree, or the bare repository itself).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `.git` directory (the repository itself when bare).
    pub fn git_dir(&self) -> PathBuf {
        if self.bare {
            self.path.clone()
        } else {
            self.path.join(".git")
        }
    }

    /// A scratch directory next to the repository, removed with it.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Runs git in the repository; panics unless it succeeds; returns stdout.
    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.path, args)
    }

    /// Runs git in the repository and returns its whole output, success or not.
    pub fn try_git(&self, args: &[&str]) -> Output {
        git_command(&self.path)
            .args(args)
            .output()
            .expect("git runs")
    }

    /// Writes a file of the work tree (folders are created).
    pub fn write(&self, path: &str, text: &str) {
        self.write_bytes(path, text.as_bytes());
    }

    /// Writes raw bytes to a file of the work tree.
    pub fn write_bytes(&self, path: &str, bytes: &[u8]) {
        let p = self.path.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, bytes).unwrap();
    }

    /// Removes a file of the work tree.
    pub fn remove(&self, path: &str) {
        std::fs::remove_file(self.path.join(path)).unwrap();
    }

    /// Stages everything and commits; returns the new commit's id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&[
            "commit",
            "-q",
            "--allow-empty",
            "--no-verify",
            "-m",
            message,
        ]);
        self.head()
    }

    /// The id of HEAD.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// The id of the blob at `rev:path`.
    pub fn blob_id(&self, rev: &str, path: &str) -> String {
        self.git(&["rev-parse", &format!("{rev}:{path}")])
    }

    /// The file of a loose object in the object database.
    pub fn loose_object_path(&self, id: &str) -> PathBuf {
        self.git_dir().join("objects").join(&id[..2]).join(&id[2..])
    }
}

/// Removes every Docker container a kommit node labelled (`kommit.dev/node`), sandboxes
/// included: what a test or bench leaves behind when it ends, passing or not.
pub fn remove_node_containers(node: &str) {
    let Ok(out) = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=kommit.dev/node={node}"),
        ])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
}
