//! Repository helpers: ancestry, opening a repository from a pre-receive hook (objects
//! in quarantine), and creating a repository with a first commit.

use std::path::{Path, PathBuf};

use gix::ObjectId;

use crate::error::LoadError;

fn repo_err(e: impl std::fmt::Display) -> LoadError {
    LoadError::Repository(e.to_string())
}

/// Whether `ancestor` is `descendant` or one of its ancestors (a move from `ancestor` to
/// `descendant` is a fast-forward).
pub fn is_ancestor(
    repo: &gix::Repository,
    ancestor: ObjectId,
    descendant: ObjectId,
) -> Result<bool, LoadError> {
    if ancestor == descendant {
        return Ok(true);
    }
    match repo.merge_base(ancestor, descendant) {
        Ok(Some(base)) => Ok(base.detach() == ancestor),
        Ok(None) => Ok(false),
        Err(e) => Err(repo_err(format!(
            "cannot compare {ancestor} and {descendant}: {e}"
        ))),
    }
}

/// The first parent of a commit (None for a root commit or an unreadable one).
pub fn first_parent(repo: &gix::Repository, commit: ObjectId) -> Option<ObjectId> {
    let c = repo.find_commit(commit).ok()?;
    c.parent_ids().next().map(|p| p.detach())
}

/// A repository opened from inside a `pre-receive` hook.
///
/// During `pre-receive`, Git keeps the pushed objects in a quarantine folder named by
/// `GIT_OBJECT_DIRECTORY` (with the repository's own objects in
/// `GIT_ALTERNATE_OBJECT_DIRECTORIES`). gix does not read those variables, so this opens
/// a temporary repository whose `objects/info/alternates` lists all of them.
pub struct HookRepository {
    /// The repository to read objects from.
    pub repo: gix::Repository,
    /// The real repository (for its configuration and refs).
    pub real: gix::Repository,
    _tmp: Option<tempfile::TempDir>,
}

impl HookRepository {
    /// Opens the repository at `dir` (the hook's working directory) with the quarantined
    /// objects visible, when there are any.
    pub fn open(dir: &Path) -> Result<HookRepository, LoadError> {
        let real = crate::open_repository(dir)?;
        let quarantine = std::env::var_os("GIT_OBJECT_DIRECTORY").map(PathBuf::from);
        let Some(quarantine) = quarantine else {
            return Ok(HookRepository {
                repo: real.clone(),
                real,
                _tmp: None,
            });
        };
        let mut dirs = vec![absolute(dir, &quarantine)];
        if let Some(alts) = std::env::var_os("GIT_ALTERNATE_OBJECT_DIRECTORIES") {
            dirs.extend(std::env::split_paths(&alts).map(|p| absolute(dir, &p)));
        }
        dirs.push(real.objects.store_ref().path().to_path_buf());
        let tmp = tempfile::Builder::new()
            .prefix("kommit-hook-")
            .tempdir()
            .map_err(repo_err)?;
        let git = tmp.path();
        for d in ["objects/info", "refs/heads", "refs/tags"] {
            std::fs::create_dir_all(git.join(d)).map_err(repo_err)?;
        }
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").map_err(repo_err)?;
        std::fs::write(
            git.join("config"),
            "[core]\n\trepositoryformatversion = 0\n\tbare = true\n",
        )
        .map_err(repo_err)?;
        let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        std::fs::write(git.join("objects/info/alternates"), list.join("\n") + "\n")
            .map_err(repo_err)?;
        let mut repo = gix::open(git).map_err(|e| LoadError::Open {
            path: git.display().to_string(),
            message: e.to_string(),
        })?;
        repo.object_cache_size_if_unset(16 * 1024 * 1024);
        Ok(HookRepository {
            repo,
            real,
            _tmp: Some(tmp),
        })
    }
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Creates a repository at `dir` (bare or with a work tree) whose branch `branch` has one
/// commit holding `files` (path → contents, `/`-separated paths). In a work tree, the
/// files are written and the index matches the commit. Returns the commit.
pub fn create_repository(
    dir: &Path,
    bare: bool,
    branch: &str,
    files: &[(&str, &[u8])],
    message: &str,
) -> Result<ObjectId, LoadError> {
    let open_err = |e: &dyn std::fmt::Display| LoadError::Open {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    let repo = if bare {
        gix::init_bare(dir).map_err(|e| open_err(&e))?
    } else {
        gix::init(dir).map_err(|e| open_err(&e))?
    };
    let mut editor = repo
        .edit_tree(ObjectId::empty_tree(repo.object_hash()))
        .map_err(repo_err)?;
    for (path, data) in files {
        let blob = repo.write_blob(data).map_err(repo_err)?.detach();
        editor
            .upsert(*path, gix::object::tree::EntryKind::Blob, blob)
            .map_err(repo_err)?;
    }
    let tree = editor.write().map_err(repo_err)?.detach();
    let name = repo
        .config_snapshot()
        .string("user.name")
        .map_or_else(|| "kommit".to_owned(), |s| s.to_string());
    let email = repo
        .config_snapshot()
        .string("user.email")
        .map_or_else(|| "kommit@localhost".to_owned(), |s| s.to_string());
    let sig = gix::actor::Signature {
        name: name.into(),
        email: email.into(),
        time: gix::date::Time::now_local_or_utc(),
    };
    let mut t1 = gix::date::parse::TimeBuf::default();
    let mut t2 = gix::date::parse::TimeBuf::default();
    let reference = format!("refs/heads/{branch}");
    let commit = repo
        .commit_as(
            sig.to_ref(&mut t1),
            sig.to_ref(&mut t2),
            reference.as_str(),
            message,
            tree,
            Vec::<ObjectId>::new(),
        )
        .map_err(repo_err)?
        .detach();
    // HEAD names the branch.
    std::fs::write(repo.git_dir().join("HEAD"), format!("ref: {reference}\n")).map_err(repo_err)?;
    if !bare {
        for (path, data) in files {
            let p = dir.join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(repo_err)?;
            }
            std::fs::write(&p, data).map_err(repo_err)?;
        }
        let mut index = repo.index_from_tree(&tree).map_err(repo_err)?;
        index.write(Default::default()).map_err(repo_err)?;
    }
    Ok(commit)
}
