//! Rollout records: the assessment of a revision from fixtures of observed state, and a
//! commit record's life through a simulated rollout.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kommit_reconciler::rollout::{
    self, ChangedObject, CommitRecord, CommitSpec, Health, RolloutState, assess,
};
use kommit_reconciler::{Desired, Observed};
use serde_json::Value;

/// A fixture file of `rollout/`: documents after a `# desired` comment are from Git, the
/// others observed.
fn scenario(name: &str) -> (Desired, Observed) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rollout")
        .join(name);
    let text = std::fs::read_to_string(path).unwrap();
    let (mut desired, mut observed) = (Desired::default(), Observed::default());
    for doc in text.split("\n---\n") {
        let is_desired = doc.lines().any(|l| l.trim() == "# desired");
        let v: Value = serde_yaml_ng::from_str(doc).unwrap();
        let kind = v["kind"].as_str().unwrap().to_string();
        match (kind.as_str(), is_desired) {
            ("Deployment", true) => desired.deployments.push(serde_json::from_value(v).unwrap()),
            ("Job", true) => desired.jobs.push(serde_json::from_value(v).unwrap()),
            ("DaemonSet", true) => desired.daemon_sets.push(serde_json::from_value(v).unwrap()),
            ("Pod", true) => desired.pods.push(serde_json::from_value(v).unwrap()),
            ("Deployment", false) => observed
                .deployments
                .push(serde_json::from_value::<Deployment>(v).unwrap()),
            ("ReplicaSet", false) => observed
                .replica_sets
                .push(serde_json::from_value::<ReplicaSet>(v).unwrap()),
            ("Pod", false) => observed
                .pods
                .push(serde_json::from_value::<Pod>(v).unwrap()),
            ("Job", false) => observed
                .jobs
                .push(serde_json::from_value::<Job>(v).unwrap()),
            ("DaemonSet", false) => observed
                .daemon_sets
                .push(serde_json::from_value::<DaemonSet>(v).unwrap()),
            other => panic!("{name}: unexpected document {other:?}"),
        }
    }
    (desired, observed)
}

fn spec(commit: &str) -> CommitSpec {
    CommitSpec {
        commit: commit.into(),
        author: "Ada <ada@example.com>".into(),
        message: "web: v2\n\nlonger text".into(),
        branch: "main".into(),
        ..CommitSpec::default()
    }
}

fn sha(n: u8) -> String {
    format!("{n:x}").repeat(40)
}

#[test]
fn a_crash_looping_new_pod_fails_the_rollout_and_names_the_pod() {
    let (desired, observed) = scenario("crashloop.yaml");
    let a = assess(&desired, &observed);
    assert!(!a.converged);
    let web = &a.objects[0];
    assert_eq!(web.id(), "Deployment default/web");
    assert_eq!(
        (web.desired, web.updated, web.ready, web.available, web.old),
        (1, 1, 0, 0, 1)
    );
    assert_eq!(web.health, Health::Failed);
    assert_eq!(web.reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(
        web.line(),
        "default/web: 0/1 ready, 1 old (CrashLoopBackOff)"
    );
    assert_eq!(a.failures.len(), 1);
    assert!(
        a.failures[0]
            .message
            .contains("pod web-new-aaaaa container web is crash-looping (4 restarts)"),
        "{:?}",
        a.failures[0]
    );

    let mut record = CommitRecord::applied(spec(&sha(1)), vec![], t(0));
    assert!(record.observe(&a, t(5)));
    assert_eq!(record.status.state, RolloutState::Failed);
    assert_eq!(record.status.reason, "CrashLoopBackOff");
    assert!(
        record
            .status
            .message
            .starts_with("Deployment default/web: pod web-new-aaaaa")
    );
    assert_eq!(record.status.end_time.as_ref().unwrap().0, t(5));
    assert_eq!(
        record.metadata.labels.as_ref().unwrap()[rollout::STATE_LABEL],
        "Failed"
    );
}

#[test]
fn a_few_restarts_are_not_yet_a_crash_loop() {
    let (desired, mut observed) = scenario("crashloop.yaml");
    let pod = observed
        .pods
        .iter_mut()
        .find(|p| p.metadata.name.as_deref() == Some("web-new-aaaaa"))
        .unwrap();
    pod.status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .restart_count = rollout::CRASH_LOOP_RESTARTS - 1;
    let a = assess(&desired, &observed);
    assert!(a.failures.is_empty(), "{:?}", a.failures);
    assert_eq!(a.objects[0].health, Health::Progressing);
    let mut record = CommitRecord::applied(spec(&sha(1)), vec![], t(0));
    record.observe(&a, t(5));
    assert_eq!(record.status.state, RolloutState::Progressing);
    assert_eq!(record.status.message, "waiting for Deployment default/web");
}

#[test]
fn a_failed_job_fails_the_rollout_and_a_rolled_out_daemonset_is_healthy() {
    let (desired, observed) = scenario("job-failed.yaml");
    let a = assess(&desired, &observed);
    // Jobs that finished count as done for convergence; the failure is what decides.
    assert!(a.converged);
    let ids: Vec<String> = a.objects.iter().map(|o| o.id()).collect();
    assert_eq!(ids, ["Job shop/migrate", "DaemonSet shop/agent"]);
    let job = &a.objects[0];
    assert_eq!(job.health, Health::Failed);
    assert_eq!(job.line(), "shop/migrate: Failed (BackoffLimitExceeded)");
    let ds = &a.objects[1];
    assert_eq!(ds.health, Health::Healthy);
    assert_eq!((ds.desired, ds.updated, ds.ready), (2, 2, 2));
    assert_eq!(ds.line(), "shop/agent: 2/2 ready (daemon)");

    let start: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
    let mut record = CommitRecord::applied(spec(&sha(2)), vec![], start);
    record.observe(&a, "2026-01-01T10:00:31Z".parse().unwrap());
    assert_eq!(record.status.state, RolloutState::Failed);
    assert_eq!(record.status.reason, "BackoffLimitExceeded");
    assert_eq!(
        record.status.message,
        "Job shop/migrate: Job has reached the specified backoff limit"
    );
    // The same failure, dated before the rollout started, belongs to an earlier one.
    let mut later = CommitRecord::applied(
        spec(&sha(3)),
        vec![],
        "2026-01-01T10:01:00Z".parse().unwrap(),
    );
    later.observe(&a, "2026-01-01T10:01:01Z".parse().unwrap());
    assert_eq!(later.status.state, RolloutState::Progressing);
    later.observe(&a, "2026-01-01T10:01:04Z".parse().unwrap());
    assert_eq!(later.status.state, RolloutState::Converged);
}

fn sim_with(d: Deployment) -> Sim {
    let mut sim = Sim::new(fixture_all("nodes.yaml"));
    sim.desired = Desired {
        deployments: vec![d],
        revision: Some("c1".into()),
        ..Default::default()
    };
    sim
}

/// Steps the simulation until the record is final, checking every intermediate record.
fn follow(sim: &mut Sim, record: &mut CommitRecord, max_steps: usize) -> Vec<CommitRecord> {
    let mut seen = Vec::new();
    for _ in 0..max_steps {
        sim.step(1);
        if record.observe(&assess(&sim.desired, &sim.observed()), t(sim.now)) {
            seen.push(record.clone());
        }
        if record.status.state.is_final() {
            return seen;
        }
    }
    panic!("the record stayed {:?}", record.status);
}

#[test]
fn a_rolling_update_is_progressing_then_converged() {
    let mut sim = sim_with(web("web:1"));
    let mut first = CommitRecord::applied(spec(&sha(1)), vec![], t(0));
    follow(&mut sim, &mut first, 30);
    assert_eq!(first.status.state, RolloutState::Converged);
    assert_eq!(
        first.status.message,
        "1 workload updated and ready (4 pods)"
    );

    let mut d = web("web:2");
    set_replicas(&mut d, 4);
    sim.desired.deployments = vec![d];
    let changes = vec![ChangedObject {
        action: "Changed".into(),
        kind: "Deployment".into(),
        namespace: "default".into(),
        name: "web".into(),
        summary: "4 pods replaced".into(),
    }];
    let mut second = CommitRecord::applied(spec(&sha(2)), changes.clone(), t(sim.now));
    let seen = follow(&mut sim, &mut second, 60);
    let last = seen.last().unwrap();
    assert_eq!(last.status.state, RolloutState::Converged);
    assert_eq!(last.status.changes, changes);
    let web = &last.status.objects[0];
    assert_eq!(
        (web.desired, web.updated, web.ready, web.available, web.old),
        (4, 4, 4, 4, 0)
    );
    assert_eq!(web.health, Health::Healthy);
    // On the way: old pods still running while new ones came up (maxSurge 1).
    assert!(
        seen.iter()
            .any(|r| r.status.state == RolloutState::Progressing
                && r.status.objects[0].old > 0
                && r.status.objects[0].updated > 0),
        "{:?}",
        seen.iter().map(|r| &r.status.objects).collect::<Vec<_>>()
    );
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .all(|r| r.status.state == RolloutState::Progressing && r.status.end_time.is_none())
    );
    // A final record does not change any more.
    let before = second.clone();
    sim.step(1);
    assert!(!second.observe(&assess(&sim.desired, &sim.observed()), t(sim.now)));
    assert_eq!(second, before);
}

#[test]
fn no_progress_within_the_deadline_fails_with_progress_deadline_exceeded() {
    let mut sim = sim_with(web("web:1"));
    let mut first = CommitRecord::applied(spec(&sha(1)), vec![], t(0));
    follow(&mut sim, &mut first, 30);

    // web:2 pods never become ready.
    sim.never_ready = |p| pod_image(p) == "web:2";
    let mut d = web("web:2");
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(20);
    sim.desired.deployments = vec![d.clone()];
    let mut second = CommitRecord::applied(spec(&sha(2)), vec![], t(sim.now));
    follow(&mut sim, &mut second, 60);
    assert_eq!(second.status.state, RolloutState::Failed);
    assert_eq!(second.status.reason, "ProgressDeadlineExceeded");
    assert!(
        second.status.message.contains("has timed out progressing"),
        "{}",
        second.status.message
    );
    assert_eq!(second.status.objects[0].health, Health::Failed);

    // The next commit starts with that timeout still in the Deployment's status: it is
    // not held against it.
    sim.now += 5;
    let mut d3 = d.clone();
    set_image(&mut d3, "web:3");
    sim.desired.deployments = vec![d3];
    let mut third = CommitRecord::applied(spec(&sha(3)), vec![], t(sim.now));
    let stale = assess(&sim.desired, &sim.observed());
    assert_eq!(stale.failures.len(), 1, "the old timeout is visible");
    third.observe(&stale, t(sim.now));
    assert_eq!(third.status.state, RolloutState::Progressing);
    follow(&mut sim, &mut third, 60);
    assert_eq!(third.status.state, RolloutState::Converged);
}

#[test]
fn converged_only_after_staying_ready_for_the_settle_time() {
    let (desired, mut observed) = scenario("crashloop.yaml");
    // The old ReplicaSet and its pod are gone; the new pod is up and ready.
    observed
        .replica_sets
        .retain(|rs| rs.metadata.name.as_deref() == Some("web-new"));
    observed
        .pods
        .retain(|p| p.metadata.name.as_deref() == Some("web-new-aaaaa"));
    let ready = |observed: &mut Observed, yes: bool| {
        let pod = &mut observed.pods[0];
        make_ready(pod, t(0));
        if !yes {
            let st = pod.status.as_mut().unwrap();
            st.conditions.as_mut().unwrap()[0].status = "False".into();
        }
    };
    ready(&mut observed, true);
    let mut r = CommitRecord::applied(spec(&sha(1)), vec![], t(0));
    r.observe(&assess(&desired, &observed), t(1));
    assert_eq!(r.status.state, RolloutState::Progressing);
    assert_eq!(r.status.ready_since.as_ref().unwrap().0, t(1));
    assert!(
        r.status.message.contains("settling"),
        "{}",
        r.status.message
    );
    // The pod exits and is not ready any more: the clock starts again.
    ready(&mut observed, false);
    r.observe(&assess(&desired, &observed), t(2));
    assert_eq!(r.status.ready_since, None);
    ready(&mut observed, true);
    r.observe(&assess(&desired, &observed), t(3));
    r.observe(
        &assess(&desired, &observed),
        t(3 + rollout::SETTLE_SECONDS - 1),
    );
    assert_eq!(r.status.state, RolloutState::Progressing);
    r.observe(&assess(&desired, &observed), t(3 + rollout::SETTLE_SECONDS));
    assert_eq!(r.status.state, RolloutState::Converged);
    assert_eq!(
        r.status.end_time.as_ref().unwrap().0,
        t(3 + rollout::SETTLE_SECONDS)
    );
}

#[test]
fn a_newer_commit_supersedes_a_rollout_in_progress_only() {
    let mut sim = sim_with(web("web:1"));
    sim.never_ready = |_| true;
    let mut first = CommitRecord::applied(spec(&sha(1)), vec![], t(0));
    sim.step(1);
    first.observe(&assess(&sim.desired, &sim.observed()), t(1));
    assert_eq!(first.status.state, RolloutState::Progressing);
    assert!(first.supersede(&sha(2), t(2)));
    assert_eq!(first.status.state, RolloutState::Superseded);
    assert_eq!(first.status.superseded_by.as_deref(), Some(sha(2).as_str()));
    assert_eq!(
        first.status.message,
        "commit 22222222 was applied before this rollout ended"
    );
    assert_eq!(first.status.end_time.as_ref().unwrap().0, t(2));
    // Final: neither a later assessment nor another commit changes it.
    sim.never_ready = |_| false;
    sim.step(1);
    assert!(!first.observe(&assess(&sim.desired, &sim.observed()), t(3)));
    assert!(!first.supersede(&sha(3), t(3)));
    assert_eq!(first.status.state, RolloutState::Superseded);
}

#[test]
fn a_rejected_commit_keeps_its_errors_and_is_final() {
    let errors = vec![
        "web.yaml:7:5: spec.replicass: unknown field".to_string(),
        "web.yaml:9:3: metadata.name: must be DNS-1123".to_string(),
    ];
    let mut r = CommitRecord::rejected(spec(&sha(4)), errors.clone(), t(10));
    assert_eq!(r.status.state, RolloutState::Rejected);
    assert_eq!(r.status.errors, errors);
    assert_eq!(
        r.status.message,
        "2 validation errors; the cluster keeps the last applied commit"
    );
    assert_eq!(r.status.start_time, r.status.end_time);
    assert!(!r.observe(&rollout::Assessment::default(), t(11)));
    assert!(!r.supersede(&sha(5), t(11)));
    assert_eq!(r.key(), format!("/registry/commits/{}", sha(4)));
}

#[test]
fn a_record_is_a_kubernetes_style_object() {
    let r = CommitRecord::rejected(spec(&sha(4)), vec!["bad".into()], t(10));
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["apiVersion"], "kommit.dev/v1");
    assert_eq!(v["kind"], "Commit");
    assert_eq!(v["metadata"]["name"], sha(4));
    assert_eq!(v["metadata"]["creationTimestamp"], "2023-11-14T22:13:30Z");
    assert_eq!(v["metadata"]["labels"]["kommit.dev/state"], "Rejected");
    assert_eq!(v["spec"]["author"], "Ada <ada@example.com>");
    assert_eq!(v["status"]["state"], "Rejected");
    assert_eq!(v["status"]["startTime"], "2023-11-14T22:13:30Z");
    assert_eq!(v["status"]["errors"][0], "bad");
    let back: CommitRecord = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.spec.subject(), "web: v2");
    assert_eq!(back.spec.short(), "44444444");
}
