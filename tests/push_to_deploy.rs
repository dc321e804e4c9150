//! `kommit init --bare` and the pre-receive hook, driven by a real `git push`.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::GitRepo;

fn init_bare(dir: &std::path::Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_kommit"))
        .args(["init", "--bare", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn push(clone: &GitRepo, args: &[&str]) -> (bool, String) {
    let mut all = vec!["push", "origin"];
    all.extend_from_slice(args);
    let o = clone.try_git(&all);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn pre_receive_hook_refuses_invalid_pushes() {
    let scratch = tempfile::tempdir().unwrap();
    let bare = scratch.path().join("cluster.git");
    init_bare(&bare);
    let clone = GitRepo::clone_from(bare.to_str().unwrap());
    let start = clone.head();

    // An invalid commit is refused with its errors, and the branch does not move.
    let hello = std::fs::read_to_string(clone.path().join("hello.yaml")).unwrap();
    clone.write(
        "hello.yaml",
        &hello.replace("replicas: 2", "replicas: 2\n  paused: maybe"),
    );
    clone.write(
        "extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: nowhere}\n",
    );
    clone.commit("bad");
    let (ok, err) = push(&clone, &["main"]);
    assert!(!ok, "the push must be refused:\n{err}");
    assert!(err.contains("push refused: commit"), "{err}");
    assert!(err.contains("has 2 errors; nothing was deployed"), "{err}");
    assert!(
        err.contains("extra.yaml:3:32: metadata.namespace: namespace `nowhere` is not declared"),
        "{err}"
    );
    assert!(
        err.contains(
            "hello.yaml:14:11: spec.paused: invalid type: string \"maybe\", expected true or false"
        ),
        "{err}"
    );
    assert_eq!(support::git_in(&bare, &["rev-parse", "main"]), start);

    // Fixed: accepted, with the rollout shown to the pusher.
    clone.write("hello.yaml", &hello.replace("replicas: 2", "replicas: 4"));
    clone.remove("extra.yaml");
    let fixed = clone.commit("scale");
    let (ok, err) = push(&clone, &["main"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("accepted on refs/heads/main: 3 objects"),
        "{err}"
    );
    assert!(
        err.contains("changed Deployment hello/hello: scaled from 2 to 4; no pods replaced"),
        "{err}"
    );
    assert_eq!(support::git_in(&bare, &["rev-parse", "main"]), fixed);

    // Other branches are not checked.
    clone.git(&["checkout", "-q", "-b", "wip"]);
    clone.write("junk.yaml", "not: [valid");
    clone.commit("wip");
    let (ok, err) = push(&clone, &["wip"]);
    assert!(ok, "{err}");

    // A force-push of a valid commit is accepted and reported as such.
    clone.git(&["checkout", "-q", "main"]);
    clone.git(&["reset", "-q", "--hard", &start]);
    clone.write("hello.yaml", &hello.replace("replicas: 2", "replicas: 1"));
    clone.commit("rewrite");
    let (ok, err) = push(&clone, &["--force", "main"]);
    assert!(ok, "{err}");
    assert!(err.contains("this is a force-push"), "{err}");

    // The tracked branch cannot be deleted.
    let (ok, err) = push(&clone, &["--delete", "main"]);
    assert!(!ok);
    assert!(
        err.contains("refs/heads/main is the branch kommit deploys; it cannot be deleted"),
        "{err}"
    );
}
