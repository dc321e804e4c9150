//! `kommit validate`, `kommit plan` and `kommit init` through the real binary.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Output};

use support::GitRepo;

fn kommit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kommit"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("kommit runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const CM: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  colour: blue\n";

fn repo_with_history() -> (GitRepo, String, String, String) {
    let repo = GitRepo::init();
    repo.write("manifests/settings.yaml", CM);
    let good = repo.commit("good");
    repo.write("manifests/settings.yaml", &CM.replace("blue", "green"));
    let better = repo.commit("better");
    repo.write("manifests/settings.yaml", &CM.replace("\ndata:", "\ndta:"));
    let bad = repo.commit("bad");
    (repo, good, better, bad)
}

#[test]
fn validate_exit_codes() {
    let (repo, good, _, bad) = repo_with_history();
    let dir = repo.path().to_str().unwrap();
    let o = kommit(&["validate", "--repo", dir, &good]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("commit {} is valid: 1 object in 1 file\n", &good[..12])
    );

    let o = kommit(&["validate", "--repo", dir]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "manifests/settings.yaml:5:1: dta: unknown field `dta`\ncommit {} is rejected: 1 error\n",
            &bad[..12]
        )
    );
    // --path limits the load to a folder.
    let o = kommit(&["validate", "--repo", dir, "--path", "manifests", &good]);
    assert_eq!(o.status.code(), Some(0));
    let o = kommit(&["validate", "--repo", dir, "--path", "elsewhere", &good]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("`elsewhere` is not a folder"),
        "{}",
        stderr(&o)
    );

    // Usage and repository errors: 2.
    let o = kommit(&["validate", "--repo", dir, "no-such-ref"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("revision `no-such-ref` not found"),
        "{}",
        stderr(&o)
    );
    let empty = tempfile::tempdir().unwrap();
    let o = kommit(&["validate", "--repo", empty.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot open Git repository"),
        "{}",
        stderr(&o)
    );
    let o = kommit(&["validate", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    let fresh = GitRepo::init();
    let o = kommit(&["validate", "--repo", fresh.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no commits yet"), "{}", stderr(&o));
}

#[test]
fn plan_exit_codes_and_formats() {
    let (repo, good, better, bad) = repo_with_history();
    let dir = repo.path().to_str().unwrap();
    let range = format!("{good}..{better}");
    let o = kommit(&["plan", "--repo", dir, &range]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with(&format!(
        "kommit plan {}..{}: commit is valid; 0 added, 1 changed, 0 removed, 0 unchanged",
        &good[..12],
        &better[..12]
    )));
    assert!(
        text.contains("-  colour: blue\n    +  colour: green"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no colour when not a terminal");
    // BASE HEAD as two arguments gives the same plan.
    let two = kommit(&["plan", "--repo", dir, &good, &better]);
    assert_eq!(stdout(&two), text);
    // One commit: planned against its first parent.
    let one = kommit(&["plan", "--repo", dir, &better]);
    assert_eq!(stdout(&one), text);
    let coloured = kommit(&["plan", "--repo", dir, "--color", "always", &range]);
    assert!(stdout(&coloured).contains("\x1b[32m"));

    let o = kommit(&["plan", "--repo", dir, "--format", "json", &range]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["schema"], "kommit.plan/v1");
    assert_eq!(v["valid"], true);
    assert_eq!(v["changes"][0]["object"]["name"], "settings");
    assert_eq!(v["rollout"][0]["summary"], "no pod template uses it");

    let o = kommit(&[
        "plan",
        "--repo",
        dir,
        "--format",
        "markdown",
        &format!("{better}..{bad}"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("**Rejected**: 1 error."),
        "{}",
        stdout(&o)
    );
    let o = kommit(&[
        "plan",
        "--repo",
        dir,
        "--format",
        "json",
        &format!("{better}..{bad}"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["field"], "dta");

    let o = kommit(&["plan", "--repo", dir, "main..nowhere"]);
    assert_eq!(o.status.code(), Some(2));
    let o = kommit(&["plan", "--repo", dir, "a..b", "c"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn init_makes_a_valid_repository_with_a_work_tree() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("cluster");
    let o = kommit(&["init", target.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let repo_dir = target.to_str().unwrap();
    let o = kommit(&["validate", "--repo", repo_dir]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("is valid: 3 objects in 1 file"),
        "{}",
        stdout(&o)
    );
    // git agrees: the work tree matches the commit, on branch main.
    let status = support::git_in(&target, &["status", "--porcelain"]);
    assert_eq!(status, "");
    assert_eq!(
        support::git_in(&target, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "main"
    );
    assert!(target.join("hello.yaml").exists() && target.join("README.md").exists());
    // A second init into a non-empty folder is refused.
    let o = kommit(&["init", repo_dir]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not empty"), "{}", stderr(&o));
}
