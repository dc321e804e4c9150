//! Garbage collection, objects from Git, namespaces and node lifecycle.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kommit_reconciler::gc::{self, GcConfig};
use kommit_reconciler::memory::MemoryStore;
use kommit_reconciler::nodelifecycle::{self, NodeLifecycleConfig};
use kommit_reconciler::{Action, Desired, Object, Observed, Requeue, bare, meta, podutil};

/// A store after converging `desired` on the fixture nodes (everything ready).
fn converged(desired: Desired) -> Sim {
    let mut sim = Sim::new(fixture_all("nodes.yaml"));
    sim.desired = desired;
    for _ in 0..10 {
        sim.step(1);
    }
    sim
}

#[test]
fn removing_a_deployment_deletes_its_replicasets_then_pods() {
    let sim = converged(Desired {
        deployments: vec![web("web:1")],
        ..Default::default()
    });
    let obs = sim.observed();
    assert_eq!(obs.replica_sets.len(), 1);
    assert_eq!(obs.pods.len(), 4);
    let out = gc::collect(&ctx(100), &Desired::default(), &obs, &GcConfig::default());
    let kinds: Vec<&str> = out
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete { key, .. } => Some(key.kind),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        vec!["ReplicaSet", "Pod", "Pod", "Pod", "Pod", "Deployment"]
    );
    // With the Deployment still in Git nothing is collected.
    let keep = gc::collect(&ctx(100), &sim.desired, &obs, &GcConfig::default());
    assert!(
        deleted(&keep.actions, "Pod").is_empty() && deleted(&keep.actions, "ReplicaSet").is_empty()
    );
}

#[test]
fn objects_nobody_in_kommit_made_are_left_alone() {
    let mut stray: Pod = fixture("bare-pod.yaml");
    stray.metadata.name = Some("hand-made".into());
    let obs = Observed {
        pods: vec![stray],
        ..Default::default()
    };
    let out = gc::collect(&ctx(0), &Desired::default(), &obs, &GcConfig::default());
    assert!(out.actions.is_empty());
}

#[test]
fn bare_pods_from_git_are_created_replaced_on_change_and_collected() {
    let git: Pod = fixture("bare-pod.yaml");
    let desired = Desired {
        pods: vec![git.clone()],
        revision: Some("c1".into()),
        ..Default::default()
    };
    let mut store = MemoryStore::new();
    let out = bare::reconcile_pods(&ctx(0), &desired, &store.observed());
    let made = created(&out.actions, "Pod");
    assert_eq!(made.len(), 1);
    assert_eq!(
        meta::annotation(made[0].metadata(), meta::REVISION_ANNOTATION),
        Some("c1")
    );
    assert!(store.apply_all(&out.actions).is_empty());
    let first_uid = store.observed().pods[0].metadata.uid.clone();
    // Same revision again: nothing.
    assert!(
        bare::reconcile_pods(&ctx(1), &desired, &store.observed())
            .actions
            .is_empty()
    );
    // Changed command: delete and create anew (new UID).
    let mut changed = git.clone();
    changed.spec.as_mut().unwrap().containers[0].command = Some(vec!["sleep".into(), "60".into()]);
    let desired2 = Desired {
        pods: vec![changed],
        ..Default::default()
    };
    let out = bare::reconcile_pods(&ctx(2), &desired2, &store.observed());
    assert_eq!(deleted(&out.actions, "Pod"), vec!["toolbox"]);
    assert_eq!(created(&out.actions, "Pod").len(), 1);
    assert!(store.apply_all(&out.actions).is_empty());
    assert_ne!(store.observed().pods[0].metadata.uid, first_uid);
    // Deleted on the node: created again, since Git still has it.
    let key = Object::from(store.observed().pods[0].clone())
        .key()
        .unwrap();
    store
        .apply(&Action::Delete {
            key,
            mod_revision: None,
        })
        .unwrap();
    assert_eq!(
        created(
            &bare::reconcile_pods(&ctx(3), &desired2, &store.observed()).actions,
            "Pod"
        )
        .len(),
        1
    );
    // Removed from Git: collected.
    let obs = Observed {
        pods: vec![made[0].clone()]
            .into_iter()
            .map(|o| match o {
                Object::Pod(p) => p,
                _ => unreachable!(),
            })
            .collect(),
        ..Default::default()
    };
    assert_eq!(
        deleted(
            &gc::collect(&ctx(4), &Desired::default(), &obs, &GcConfig::default()).actions,
            "Pod"
        ),
        vec!["toolbox"]
    );
}

#[test]
fn namespaces_system_and_from_git() {
    let ns: Namespace = yaml("metadata: {name: shop}");
    let desired = Desired {
        namespaces: vec![ns],
        ..Default::default()
    };
    let mut store = MemoryStore::new();
    let out = bare::reconcile_namespaces(&ctx(0), &desired, &store.observed());
    let mut names: Vec<String> = created(&out.actions, "Namespace")
        .iter()
        .map(|o| meta::name(o.metadata()).to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "default",
            "kube-node-lease",
            "kube-public",
            "kube-system",
            "shop"
        ]
    );
    store.apply_all(&out.actions);
    assert!(store.get("/registry/namespaces/shop").is_some());
    assert!(
        bare::reconcile_namespaces(&ctx(1), &desired, &store.observed())
            .actions
            .is_empty()
    );
    // Removed from Git: only shop goes.
    let out = gc::collect(
        &ctx(2),
        &Desired::default(),
        &store.observed(),
        &GcConfig::default(),
    );
    assert_eq!(deleted(&out.actions, "Namespace"), vec!["shop"]);
}

#[test]
fn git_replicaset_is_copied_and_updated_in_place() {
    let rs: k8s_openapi::api::apps::v1::ReplicaSet = yaml(
        "metadata: {name: plain}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: plain}}\n  template:\n    metadata: {labels: {app: plain}}\n    spec: {containers: [{name: c, image: i}]}\n",
    );
    let mut desired = Desired {
        replica_sets: vec![rs.clone()],
        ..Default::default()
    };
    let mut store = MemoryStore::new();
    store.apply_all(&bare::reconcile_replica_sets(&ctx(0), &desired, &store.observed()).actions);
    let uid = store.observed().replica_sets[0].metadata.uid.clone();
    desired.replica_sets[0].spec.as_mut().unwrap().replicas = Some(5);
    let out = bare::reconcile_replica_sets(&ctx(1), &desired, &store.observed());
    let Object::ReplicaSet(up) = updated(&out.actions, "ReplicaSet")[0] else {
        unreachable!()
    };
    assert_eq!(
        (up.metadata.uid.clone(), rs_spec(up), up.metadata.generation),
        (uid, 5, Some(2))
    );
}

#[test]
fn pod_gc_deletes_pods_on_missing_nodes_and_expired_terminations() {
    let mut lost: Pod = fixture("bare-pod.yaml");
    lost.metadata.name = Some("on-gone-node".into());
    lost.spec.as_mut().unwrap().node_name = Some("node-x".into());
    let mut stuck: Pod = fixture("bare-pod.yaml");
    stuck.metadata.name = Some("stuck".into());
    stuck.spec.as_mut().unwrap().node_name = Some("node-a".into());
    stuck.metadata.deletion_timestamp = Some(Time(t(30)));
    let obs = Observed {
        nodes: fixture_all("nodes.yaml"),
        pods: vec![lost, stuck],
        ..Default::default()
    };
    let out = gc::pod_gc(&ctx(10), &Desired::default(), &obs, &GcConfig::default());
    assert_eq!(deleted(&out.actions, "Pod"), vec!["on-gone-node"]);
    assert_eq!(out.requeue, Requeue::After(Duration::from_secs(21)));
    let out = gc::pod_gc(&ctx(30), &Desired::default(), &obs, &GcConfig::default());
    assert_eq!(deleted(&out.actions, "Pod"), vec!["on-gone-node", "stuck"]);
}

#[test]
fn events_expire_after_their_ttl() {
    let mut sim = converged(Desired {
        deployments: vec![web("web:1")],
        ..Default::default()
    });
    let n = sim.observed().events.len();
    assert!(n > 0);
    sim.now += 3601;
    let out = gc::collect(
        &ctx(sim.now),
        &sim.desired,
        &sim.observed(),
        &GcConfig::default(),
    );
    assert_eq!(deleted(&out.actions, "Event").len(), n);
}

fn node_with_lease(renewed: i64) -> (Node, Observed) {
    let node: Node = fixture_all::<Node>("nodes.yaml").remove(0);
    let mut pod: Pod = fixture("bare-pod.yaml");
    pod.spec.as_mut().unwrap().node_name = Some("node-a".into());
    make_ready(&mut pod, t(0));
    let obs = Observed {
        nodes: vec![node.clone()],
        leases: vec![lease("node-a", t(renewed))],
        pods: vec![pod],
        ..Default::default()
    };
    (node, obs)
}

fn updated_node(actions: &[Action]) -> Node {
    match updated(actions, "Node")[0] {
        Object::Node(n) => n.clone(),
        _ => unreachable!(),
    }
}

#[test]
fn node_becomes_unknown_40s_after_its_last_lease_renewal() {
    let cfg = NodeLifecycleConfig::default();
    let (_, obs) = node_with_lease(0);
    // At 40 s: still Ready, requeued for when it would expire.
    let out = nodelifecycle::reconcile(&ctx(40), &obs, &cfg);
    assert!(out.actions.is_empty(), "{:?}", out.actions);
    assert!(matches!(out.requeue, Requeue::After(d) if d <= Duration::from_secs(2)));
    // At 41 s: Unknown, tainted, event, pod not ready.
    let out = nodelifecycle::reconcile(&ctx(41), &obs, &cfg);
    let node = updated_node(&out.actions);
    let ready = node
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("Unknown", Some("NodeStatusUnknown"))
    );
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    assert_eq!(ready.last_transition_time, Some(Time(t(41))));
    let taints = node.spec.as_ref().unwrap().taints.as_ref().unwrap();
    let mut keys: Vec<(String, String)> = taints
        .iter()
        .map(|t| (t.key.clone(), t.effect.clone()))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("node.kubernetes.io/unreachable".into(), "NoExecute".into()),
            ("node.kubernetes.io/unreachable".into(), "NoSchedule".into())
        ]
    );
    assert_eq!(
        events(&out.actions),
        vec![(
            "NodeNotReady".into(),
            "Node node-a status is now: NodeNotReady".into()
        )]
    );
    let Object::Pod(p) = updated(&out.actions, "Pod")[0] else {
        unreachable!()
    };
    assert!(!podutil::is_ready(p));
    assert!(p.metadata.deletion_timestamp.is_none());
    // A fresher lease keeps it Ready.
    let (_, fresh) = node_with_lease(30);
    assert!(
        nodelifecycle::reconcile(&ctx(41), &fresh, &cfg)
            .actions
            .is_empty()
    );
}

#[test]
fn pods_on_a_lost_node_are_evicted_after_five_minutes() {
    let cfg = NodeLifecycleConfig::default();
    let (_, obs) = node_with_lease(0);
    let mut store = MemoryStore::new();
    for o in [
        Object::from(obs.nodes[0].clone()),
        obs.leases[0].clone().into(),
        obs.pods[0].clone().into(),
    ] {
        store.put(o).unwrap();
    }
    assert!(
        store
            .apply_all(&nodelifecycle::reconcile(&ctx(41), &store.observed(), &cfg).actions)
            .is_empty()
    );
    // 299 s into the taint: waiting, asked back in time.
    let out = nodelifecycle::reconcile(&ctx(340), &store.observed(), &cfg);
    assert!(updated(&out.actions, "Pod").is_empty());
    assert_eq!(out.requeue, Requeue::After(Duration::from_secs(1)));
    // 300 s: marked for deletion.
    let out = nodelifecycle::reconcile(&ctx(341), &store.observed(), &cfg);
    let Object::Pod(p) = updated(&out.actions, "Pod")[0] else {
        unreachable!()
    };
    assert_eq!(p.metadata.deletion_timestamp, Some(Time(t(371))));
    assert_eq!(
        podutil::condition(p, "DisruptionTarget")
            .unwrap()
            .reason
            .as_deref(),
        Some("DeletionByTaintManager")
    );
    assert!(events(&out.actions).iter().any(
        |(r, m)| r == "TaintManagerEviction" && m == "Marking for deletion Pod default/toolbox"
    ));
    // A pod tolerating unreachable for ever stays.
    let mut forever = store.observed();
    forever.pods[0].spec.as_mut().unwrap().tolerations = Some(yaml(
        "[{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute}]",
    ));
    assert!(
        updated(
            &nodelifecycle::reconcile(&ctx(10_000), &forever, &cfg).actions,
            "Pod"
        )
        .is_empty()
    );
}

#[test]
fn node_back_to_ready_loses_its_taints() {
    let cfg = NodeLifecycleConfig::default();
    let (_, obs) = node_with_lease(0);
    let mut store = MemoryStore::new();
    for o in [
        Object::from(obs.nodes[0].clone()),
        obs.leases[0].clone().into(),
    ] {
        store.put(o).unwrap();
    }
    store.apply_all(&nodelifecycle::reconcile(&ctx(41), &store.observed(), &cfg).actions);
    // The kubelet posts Ready again and renews its lease.
    let mut node = store.observed().nodes[0].clone();
    for c in node.status.as_mut().unwrap().conditions.as_mut().unwrap() {
        c.status = "True".into();
    }
    store.put(node.into()).unwrap();
    store.put(lease("node-a", t(60)).into()).unwrap();
    let out = nodelifecycle::reconcile(&ctx(61), &store.observed(), &cfg);
    assert!(updated_node(&out.actions).spec.unwrap().taints.is_none());
}
