//! ReplicaSet controller decisions from fixtures.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kommit_reconciler::context::NAME_ALPHABET;
use kommit_reconciler::meta;
use kommit_reconciler::{Action, Object, Observed, Requeue, replicaset};

const RS: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-5d8f7
  namespace: default
  uid: 11111111-1111-4111-8111-111111111111
  generation: 3
  resourceVersion: "7"
  ownerReferences:
    - apiVersion: apps/v1
      kind: Deployment
      name: web
      uid: dddddddd-dddd-4ddd-8ddd-dddddddddddd
      controller: true
spec:
  replicas: 3
  selector:
    matchLabels: {app: web, pod-template-hash: 5d8f7}
  template:
    metadata:
      labels: {app: web, pod-template-hash: 5d8f7}
      annotations: {team: blue}
    spec:
      containers:
        - name: web
          image: web:1
"#;

fn rs(replicas: i32) -> ReplicaSet {
    let mut rs: ReplicaSet = yaml(RS);
    rs.spec.as_mut().unwrap().replicas = Some(replicas);
    rs
}

/// A pod of the ReplicaSet named `name`, created at `created`, on `node`, ready since `ready`.
fn pod(name: &str, created: i64, node: Option<&str>, ready: Option<i64>) -> Pod {
    let mut p: Pod = yaml(&format!(
        r#"
metadata:
  name: {name}
  namespace: default
  uid: uid-{name}
  resourceVersion: "{created}"
  creationTimestamp: "2023-11-14T22:13:20Z"
  labels: {{app: web, pod-template-hash: 5d8f7}}
  ownerReferences:
    - apiVersion: apps/v1
      kind: ReplicaSet
      name: web-5d8f7
      uid: 11111111-1111-4111-8111-111111111111
      controller: true
spec:
  containers:
    - name: web
      image: web:1
status:
  phase: Pending
"#
    ));
    p.metadata.creation_timestamp = Some(Time(t(created)));
    if let Some(n) = node {
        p.spec.as_mut().unwrap().node_name = Some(n.into());
    }
    if let Some(r) = ready {
        make_ready(&mut p, t(r));
    }
    p
}

fn obs(pods: Vec<Pod>) -> Observed {
    Observed {
        pods,
        replica_sets: vec![rs(3)],
        ..Default::default()
    }
}

fn status_update(actions: &[Action]) -> ReplicaSet {
    match updated(actions, "ReplicaSet")[0] {
        Object::ReplicaSet(r) => r.clone(),
        _ => unreachable!(),
    }
}

#[test]
fn scale_up_creates_named_owned_pods_with_events() {
    let out = replicaset::reconcile(
        &ctx(0),
        &rs(3),
        &obs(vec![pod("web-5d8f7-aaaaa", 0, Some("n1"), Some(0))]),
    )
    .unwrap();
    let made = created(&out.actions, "Pod");
    assert_eq!(made.len(), 2);
    for o in &made {
        let Object::Pod(p) = o else { unreachable!() };
        let name = meta::name(&p.metadata);
        let suffix = name.strip_prefix("web-5d8f7-").unwrap();
        assert_eq!(suffix.len(), 5);
        assert!(suffix.bytes().all(|c| NAME_ALPHABET.contains(&c)), "{name}");
        let owner = meta::controller_of(&p.metadata).unwrap();
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("ReplicaSet", "web-5d8f7")
        );
        assert_eq!(owner.uid, "11111111-1111-4111-8111-111111111111");
        assert_eq!(
            p.metadata.labels.as_ref().unwrap()["pod-template-hash"],
            "5d8f7"
        );
        assert_eq!(meta::annotation(&p.metadata, "team"), Some("blue"));
        assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
        assert!(p.metadata.uid.is_some());
        assert_eq!(pod_image(p), "web:1");
    }
    let ev = events(&out.actions);
    assert_eq!(ev.len(), 2);
    for (o, (reason, msg)) in made.iter().zip(&ev) {
        assert_eq!(reason, "SuccessfulCreate");
        assert_eq!(msg, &format!("Created pod: {}", meta::name(o.metadata())));
    }
    // Status counts what exists now.
    let st = status_update(&out.actions).status.unwrap();
    assert_eq!(
        (st.replicas, st.ready_replicas, st.available_replicas),
        (1, Some(1), Some(1))
    );
    assert_eq!(st.fully_labeled_replicas, Some(1));
    assert_eq!(st.observed_generation, Some(3));
}

#[test]
fn scale_down_deletes_unscheduled_then_not_ready_then_newest() {
    let pods = vec![
        pod("old-ready", 0, Some("n1"), Some(10)),
        pod("new-ready", 50, Some("n2"), Some(60)),
        pod("not-ready", 5, Some("n4"), None),
        pod("unscheduled", 1, None, None),
        pod("newest-ready", 90, Some("n3"), Some(95)),
    ];
    let r = rs(2);
    let out = replicaset::reconcile(&ctx(100), &r, &obs(pods.clone())).unwrap();
    assert_eq!(
        deleted(&out.actions, "Pod"),
        vec!["unscheduled", "not-ready", "newest-ready"]
    );
    let ev = events(&out.actions);
    assert_eq!(
        ev[0],
        ("SuccessfulDelete".into(), "Deleted pod: unscheduled".into())
    );
    // Deletes compare the revision read.
    assert!(out.actions.iter().any(
        |a| matches!(a, Action::Delete { key, mod_revision: Some(1) } if key.name == "unscheduled")
    ));
}

#[test]
fn scale_down_prefers_pods_doubled_up_on_a_node() {
    let pods = vec![
        pod("a1", 0, Some("n1"), Some(10)),
        pod("a2", 1, Some("n1"), Some(10)),
        pod("b1", 2, Some("n2"), Some(10)),
    ];
    let out = replicaset::reconcile(&ctx(100), &rs(2), &obs(pods)).unwrap();
    let gone = deleted(&out.actions, "Pod");
    assert_eq!(gone.len(), 1);
    assert!(gone[0].starts_with('a'), "{gone:?}");
}

#[test]
fn failed_and_terminating_pods_are_replaced() {
    let mut failed = pod("failed", 0, Some("n1"), None);
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    let mut going = pod("going", 0, Some("n1"), Some(1));
    going.metadata.deletion_timestamp = Some(Time(t(50)));
    let pods = vec![failed, going, pod("fine", 0, Some("n2"), Some(1))];
    let out = replicaset::reconcile(&ctx(100), &rs(3), &obs(pods)).unwrap();
    assert_eq!(created(&out.actions, "Pod").len(), 2);
    assert!(deleted(&out.actions, "Pod").is_empty());
    assert_eq!(status_update(&out.actions).status.unwrap().replicas, 1);
}

#[test]
fn min_ready_seconds_delays_availability_and_requeues() {
    let mut r = rs(2);
    r.spec.as_mut().unwrap().min_ready_seconds = Some(10);
    let pods = vec![
        pod("p1", 0, Some("n1"), Some(0)),
        pod("p2", 0, Some("n1"), Some(95)),
    ];
    let out = replicaset::reconcile(&ctx(100), &r, &obs(pods)).unwrap();
    let st = status_update(&out.actions).status.unwrap();
    assert_eq!(
        (st.ready_replicas, st.available_replicas),
        (Some(2), Some(1))
    );
    assert_eq!(out.requeue, Requeue::After(Duration::from_secs(5)));
}

#[test]
fn settled_replicaset_writes_nothing() {
    let pods = vec![
        pod("p1", 0, Some("n1"), Some(0)),
        pod("p2", 0, Some("n1"), Some(0)),
        pod("p3", 0, Some("n1"), Some(0)),
    ];
    let out = replicaset::reconcile(&ctx(100), &rs(3), &obs(pods.clone())).unwrap();
    let mut settled = rs(3);
    settled.status = status_update(&out.actions).status;
    let again = replicaset::reconcile(&ctx(101), &settled, &obs(pods)).unwrap();
    assert!(again.actions.is_empty(), "{:?}", again.actions);
}

#[test]
fn pods_of_other_replicasets_are_not_counted() {
    let mut stranger = pod("stranger", 0, Some("n1"), Some(0));
    stranger.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
    let out = replicaset::reconcile(&ctx(100), &rs(1), &obs(vec![stranger])).unwrap();
    assert_eq!(created(&out.actions, "Pod").len(), 1);
    assert!(deleted(&out.actions, "Pod").is_empty());
}
