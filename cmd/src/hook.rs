//! `kommit hook pre-receive`: run from a bare repository's `hooks/pre-receive`, it
//! validates what is pushed to the tracked branch and refuses the push when invalid.

use std::io::BufRead;
use std::process::ExitCode;

use kommit_desired::{
    HookRepository, LoadError, LoadOptions, ObjectId, Snapshot, is_ancestor, plan,
};

use crate::desired_args::{EXIT_ERROR, EXIT_INVALID, EXIT_OK};

/// Git hooks.
#[derive(Debug, clap::Subcommand)]
pub enum Hook {
    /// Validate pushes to the tracked branch; refuse invalid commits (reads git's
    /// `<old> <new> <ref>` lines on stdin, runs in the bare repository).
    PreReceive(PreReceiveArgs),
}

/// Arguments of `kommit hook pre-receive`.
#[derive(Debug, clap::Args)]
pub struct PreReceiveArgs {
    /// The tracked branch (default: git config `kommit.branch`, else the branch HEAD names).
    #[arg(long)]
    branch: Option<String>,
    /// Folder of the manifests (default: git config `kommit.path`, else the whole tree).
    #[arg(long)]
    path: Option<String>,
}

/// Runs a hook.
pub fn run(hook: &Hook) -> ExitCode {
    match hook {
        Hook::PreReceive(args) => pre_receive(args),
    }
}

fn refuse(message: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("kommit: push refused: {message}");
    ExitCode::from(code)
}

fn full_branch(b: &str) -> String {
    if b.starts_with("refs/") {
        b.to_owned()
    } else {
        format!("refs/heads/{b}")
    }
}

fn pre_receive(args: &PreReceiveArgs) -> ExitCode {
    let dir = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let hook = match HookRepository::open(&dir) {
        Ok(h) => h,
        Err(e) => return refuse(e, EXIT_ERROR),
    };
    let config = hook.real.config_snapshot();
    let branch = args
        .branch
        .clone()
        .or_else(|| config.string("kommit.branch").map(|s| s.to_string()))
        .or_else(|| {
            hook.real
                .head_name()
                .ok()
                .flatten()
                .map(|n| n.as_bstr().to_string())
        })
        .map(|b| full_branch(&b));
    let path = args
        .path
        .clone()
        .or_else(|| config.string("kommit.path").map(|s| s.to_string()))
        .unwrap_or_default();
    let Some(branch) = branch else {
        return refuse(
            "no tracked branch: set `git config kommit.branch main` or pass --branch",
            EXIT_ERROR,
        );
    };
    let options = LoadOptions::with_path(&path);
    let stdin = std::io::stdin();
    let mut code = ExitCode::from(EXIT_OK);
    for line in stdin.lock().lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => return refuse(format!("cannot read the pushed refs: {e}"), EXIT_ERROR),
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [old, new, name] = fields[..] else {
            return refuse(format!("unexpected line from git: {line:?}"), EXIT_ERROR);
        };
        if name != branch {
            continue;
        }
        let (Ok(old), Ok(new)) = (
            ObjectId::from_hex(old.as_bytes()),
            ObjectId::from_hex(new.as_bytes()),
        ) else {
            return refuse(format!("unexpected ids from git: {line:?}"), EXIT_ERROR);
        };
        if new.is_null() {
            return refuse(
                format!("{branch} is the branch kommit deploys; it cannot be deleted"),
                EXIT_INVALID,
            );
        }
        let result = check(
            &hook.repo,
            &branch,
            (!old.is_null()).then_some(old),
            new,
            &options,
        );
        if result != ExitCode::from(EXIT_OK) {
            code = result;
        }
    }
    code
}

fn check(
    repo: &kommit_desired::gix::Repository,
    branch: &str,
    old: Option<ObjectId>,
    new: ObjectId,
    options: &LoadOptions,
) -> ExitCode {
    let base = old.and_then(|o| match Snapshot::load_commit(repo, o, options, None) {
        Ok(s) => Some(s),
        Err(LoadError::Rejected(r)) => Some(*r.partial),
        Err(_) => None,
    });
    match Snapshot::load_commit(repo, new, options, base.as_ref()) {
        Ok(snapshot) => {
            eprintln!(
                "kommit: {} accepted on {branch}: {} objects",
                new.to_hex_with_len(12),
                snapshot.objects.len()
            );
            if let Some(o) = old
                && !is_ancestor(repo, o, new).unwrap_or(true)
            {
                eprintln!(
                    "kommit: note: this is a force-push: {} does not descend from {}",
                    new.to_hex_with_len(12),
                    o.to_hex_with_len(12)
                );
            }
            let p = plan(base.as_ref(), &snapshot);
            for r in &p.rollout {
                eprintln!("kommit:   {} {}: {}", r.action.as_str(), r.key, r.summary);
            }
            ExitCode::from(EXIT_OK)
        }
        Err(LoadError::Rejected(r)) => {
            let n = r.errors.len();
            eprintln!(
                "kommit: push refused: commit {} on {branch} has {n} error{}; nothing was deployed",
                new.to_hex_with_len(12),
                if n == 1 { "" } else { "s" }
            );
            for e in &r.errors {
                eprintln!("{e}");
            }
            ExitCode::from(EXIT_INVALID)
        }
        Err(e) => refuse(
            format!("cannot load {}: {e}", new.to_hex_with_len(12)),
            EXIT_ERROR,
        ),
    }
}
