//! Rollout records through the real kubectl: `kubectl get commits` (short name `kc`),
//! its Table columns, label selection on the state, `describe` by a commit id prefix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use common::*;
use kommit_cache::PutRequest;
use kommit_reconciler::rollout::{ChangedObject, CommitRecord, CommitSpec};

fn spec(commit: &str, message: &str) -> CommitSpec {
    CommitSpec {
        commit: commit.into(),
        author: "Ada <ada@example.invalid>".into(),
        message: message.into(),
        branch: "main".into(),
        ..CommitSpec::default()
    }
}

async fn put(c: &Cluster, r: &CommitRecord) {
    c.cache
        .put(PutRequest::new(r.key(), serde_json::to_vec(r).unwrap()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_lists_and_describes_commit_records() {
    let c = Cluster::start().await;
    let now = k8s_openapi::jiff::Timestamp::now();
    let good = "a1".repeat(20);
    let bad = "b2".repeat(20);
    let mut applied = CommitRecord::applied(
        spec(&good, "web: v2\n\nbody"),
        vec![ChangedObject {
            action: "Changed".into(),
            kind: "Deployment".into(),
            namespace: "hello".into(),
            name: "web".into(),
            summary: "2 pods replaced".into(),
        }],
        now,
    );
    applied.supersede(&bad, now);
    put(&c, &applied).await;
    let rejected = CommitRecord::rejected(
        spec(&bad, "web: typo"),
        vec!["apps/web.yaml:9:3: spec.replicass: unknown field".into()],
        now,
    );
    put(&c, &rejected).await;

    let out = c.kubectl_ok(&["get", "commits"]);
    let header = out.lines().next().unwrap();
    for col in ["COMMIT", "STATE", "MESSAGE", "AGE"] {
        assert!(header.contains(col), "missing {col}: {out}");
    }
    let row = out.lines().find(|l| l.starts_with(&good)).expect("listed");
    assert!(
        row.contains("Superseded") && row.contains("web: v2"),
        "{out}"
    );
    assert!(!row.contains("body"), "only the subject: {out}");
    let row = out.lines().find(|l| l.starts_with(&bad)).expect("listed");
    assert!(
        row.contains("Rejected") && row.contains("web: typo"),
        "{out}"
    );

    // Short name, wide columns, selection by state.
    let out = c.kubectl_ok(&["get", "kc", "-o", "wide"]);
    assert!(
        out.lines().next().unwrap().contains("AUTHOR") && out.contains("ValidationFailed"),
        "{out}"
    );
    assert!(out.contains("Ada <ada@example.invalid>"), "{out}");
    let out = c.kubectl_ok(&[
        "get",
        "commits",
        "-l",
        "kommit.dev/state=Rejected",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), format!("commit.kommit.dev/{bad}"));

    // One record as YAML; describe by a prefix of the id.
    let out = c.kubectl_ok(&["get", "commit", &good, "-o", "yaml"]);
    assert!(
        out.contains("kind: Commit") && out.contains(&format!("supersededBy: {bad}")),
        "{out}"
    );
    let out = c.kubectl_ok(&["describe", "commit", &bad[..8]]);
    assert!(
        out.contains(&format!("Name:         {bad}"))
            && out.contains("Rejected")
            && out.contains("spec.replicass: unknown field"),
        "{out}"
    );

    // Read-only like every resource.
    let err = c.kubectl_err(&["delete", "commit", &good]);
    assert!(
        err.contains("MethodNotAllowed") || err.contains("not allowed"),
        "{err}"
    );
}
