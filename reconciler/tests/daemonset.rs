//! The DaemonSet controller with the scheduler and a simulated kubelet: placement by
//! selector, affinity and taints, rolling updates, status.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kommit_reconciler::daemonset::{self, CONTROLLER_REVISION_HASH};
use kommit_reconciler::{Desired, meta, podutil};

fn ds(extra_spec: &str, pod_extra: &str) -> DaemonSet {
    yaml(&format!(
        "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  namespace: default
spec:
  selector:
    matchLabels: {{app: agent}}
{extra_spec}  template:
    metadata:
      labels: {{app: agent}}
    spec:
{pod_extra}      containers:
      - name: agent
        image: kommit.dev/demo:1
"
    ))
}

fn node(name: &str, zone: &str) -> Node {
    let mut n: Node = fixture_all::<Node>("nodes.yaml").remove(0);
    n.metadata.name = Some(name.into());
    let labels = n.metadata.labels.as_mut().unwrap();
    labels.insert("kubernetes.io/hostname".into(), name.into());
    labels.insert("zone".into(), zone.into());
    n
}

fn sim_with(nodes: Vec<Node>, d: DaemonSet) -> Sim {
    let mut sim = Sim::new(nodes);
    sim.desired = Desired {
        daemon_sets: vec![d],
        ..Desired::default()
    };
    sim
}

fn pods(sim: &Sim) -> Vec<Pod> {
    sim.observed()
        .pods
        .into_iter()
        .filter(|p| meta::controller_of(&p.metadata).is_some_and(|o| o.kind == "DaemonSet"))
        .filter(podutil::is_active)
        .collect()
}

fn nodes_of(sim: &Sim) -> Vec<String> {
    let mut n: Vec<String> = pods(sim)
        .iter()
        .filter_map(|p| podutil::node_name(p).map(str::to_string))
        .collect();
    n.sort();
    n
}

fn status(sim: &Sim) -> DaemonSetStatus {
    sim.observed()
        .daemon_set_status("default", "agent")
        .and_then(|d| d.status.clone())
        .unwrap()
}

fn settle(sim: &mut Sim) {
    for _ in 0..6 {
        sim.step(1);
    }
}

#[test]
fn one_pod_per_node_bound_by_affinity_with_status() {
    let mut sim = sim_with(
        vec![node("n1", "a"), node("n2", "a"), node("n3", "b")],
        ds("", ""),
    );
    sim.step(1);
    let created = pods(&sim);
    assert_eq!(created.len(), 3);
    for p in &created {
        assert!(podutil::node_name(p).is_none(), "the scheduler binds");
        let target = daemonset::target_node(p).unwrap();
        assert!(["n1", "n2", "n3"].contains(&target));
        let tols = p.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
        assert!(tols.iter().any(
            |t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")
                && t.effect.as_deref() == Some("NoExecute")
        ));
        assert!(meta::controller_of(&p.metadata).is_some_and(|o| o.kind == "DaemonSet"));
    }
    settle(&mut sim);
    assert_eq!(nodes_of(&sim), vec!["n1", "n2", "n3"]);
    let st = status(&sim);
    assert_eq!(st.desired_number_scheduled, 3);
    assert_eq!(st.current_number_scheduled, 3);
    assert_eq!(st.number_ready, 3);
    assert_eq!(st.updated_number_scheduled, Some(3));
    assert_eq!(st.number_available, Some(3));
    assert_eq!(st.number_unavailable, None);
    assert_eq!(st.number_misscheduled, 0);
    assert_eq!(st.observed_generation, Some(1));

    // A new node gets a pod; a node that goes loses it (pod GC).
    sim.store.put(node("n4", "b").into()).unwrap();
    sim.live.push("n4".into());
    settle(&mut sim);
    assert_eq!(nodes_of(&sim), vec!["n1", "n2", "n3", "n4"]);
    // A pod that dies is replaced on its node.
    let victim = pods(&sim)
        .into_iter()
        .find(|p| podutil::node_name(p) == Some("n2"))
        .unwrap();
    let mut failed = victim.clone();
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    failed.status.as_mut().unwrap().conditions = None;
    failed.metadata.creation_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(sim.now)),
    );
    sim.store.put(failed.into()).unwrap();
    settle(&mut sim);
    assert_eq!(
        nodes_of(&sim),
        vec!["n1", "n3", "n4"],
        "no replacement while the failure is fresh"
    );
    sim.step(10);
    settle(&mut sim);
    assert_eq!(nodes_of(&sim), vec!["n1", "n2", "n3", "n4"]);
    assert!(
        pods(&sim)
            .iter()
            .all(|p| p.metadata.uid != victim.metadata.uid)
    );
}

#[test]
fn node_selector_affinity_and_taints_choose_the_nodes() {
    let mut tainted = node("n3", "a");
    tainted.spec.get_or_insert_with(Default::default).taints = Some(vec![Taint {
        key: "dedicated".into(),
        value: Some("db".into()),
        effect: "NoSchedule".into(),
        time_added: None,
    }]);
    let nodes = vec![node("n1", "a"), node("n2", "b"), tainted];
    let mut sim = sim_with(nodes.clone(), ds("", "      nodeSelector: {zone: a}\n"));
    settle(&mut sim);
    assert_eq!(nodes_of(&sim), vec!["n1"], "zone a, untainted");
    assert_eq!(status(&sim).desired_number_scheduled, 1);

    let tolerate = "      tolerations:\n      - {key: dedicated, operator: Equal, value: db, effect: NoSchedule}\n";
    let mut sim = sim_with(nodes.clone(), ds("", tolerate));
    settle(&mut sim);
    assert_eq!(nodes_of(&sim), vec!["n1", "n2", "n3"]);

    let affinity = "      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {key: zone, operator: NotIn, values: [a]}
";
    let mut sim = sim_with(nodes, ds("", affinity));
    settle(&mut sim);
    assert_eq!(nodes_of(&sim), vec!["n2"]);

    // Relabelling a node out of the selector removes its pod.
    let mut sim = sim_with(
        vec![node("n1", "a"), node("n2", "a")],
        ds("", "      nodeSelector: {zone: a}\n"),
    );
    settle(&mut sim);
    assert_eq!(nodes_of(&sim).len(), 2);
    let mut moved = sim.observed().node("n2").unwrap().clone();
    moved
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("zone".into(), "b".into());
    sim.store.put(moved.into()).unwrap();
    settle(&mut sim);
    assert_eq!(nodes_of(&sim), vec!["n1"]);
}

#[test]
fn a_lost_node_keeps_its_daemon_pod() {
    let mut sim = sim_with(vec![node("n1", "a"), node("n2", "a")], ds("", ""));
    settle(&mut sim);
    sim.live.retain(|n| n != "n2");
    for _ in 0..40 {
        sim.step(10);
    }
    // Unreachable for 400 s: pods without the toleration would have been evicted.
    assert_eq!(nodes_of(&sim), vec!["n1", "n2"]);
}

fn set_image(d: &mut DaemonSet, image: &str) {
    d.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some(image.into());
}

fn images(sim: &Sim) -> Vec<String> {
    let mut v: Vec<String> = pods(sim).iter().map(|p| pod_image(p).to_string()).collect();
    v.sort();
    v
}

#[test]
fn rolling_update_keeps_max_unavailable() {
    let nodes = vec![
        node("n1", "a"),
        node("n2", "a"),
        node("n3", "a"),
        node("n4", "a"),
    ];
    let mut sim = sim_with(
        nodes,
        ds(
            "  updateStrategy:\n    rollingUpdate: {maxUnavailable: 1}\n",
            "",
        ),
    );
    settle(&mut sim);
    set_image(&mut sim.desired.daemon_sets[0], "kommit.dev/demo:2");
    sim.desired.daemon_sets[0].metadata.generation = Some(2);
    let mut steps = 0;
    loop {
        sim.step(1);
        steps += 1;
        let ready_nodes = pods(&sim).iter().filter(|p| podutil::is_ready(p)).count();
        assert!(ready_nodes >= 3, "at most one node without a ready pod");
        if images(&sim).iter().all(|i| i == "kommit.dev/demo:2") && ready_nodes == 4 {
            break;
        }
        assert!(steps < 60, "update did not finish: {:?}", images(&sim));
    }
    let st = status(&sim);
    assert_eq!(st.updated_number_scheduled, Some(4));
    assert_eq!(st.observed_generation, Some(2));
    let hashes: std::collections::BTreeSet<String> = pods(&sim)
        .iter()
        .map(|p| p.metadata.labels.as_ref().unwrap()[CONTROLLER_REVISION_HASH].clone())
        .collect();
    assert_eq!(hashes.len(), 1);
}

#[test]
fn rolling_update_with_surge_starts_the_new_pod_first() {
    let nodes = vec![node("n1", "a"), node("n2", "a")];
    let mut sim = sim_with(
        nodes,
        ds(
            "  updateStrategy:\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n",
            "",
        ),
    );
    settle(&mut sim);
    set_image(&mut sim.desired.daemon_sets[0], "kommit.dev/demo:2");
    let mut steps = 0;
    let mut saw_two_on_a_node = false;
    loop {
        sim.step(1);
        steps += 1;
        let ready = pods(&sim).iter().filter(|p| podutil::is_ready(p)).count();
        assert!(ready >= 2, "maxUnavailable 0: every node keeps a ready pod");
        let per_node = pods(&sim).len();
        saw_two_on_a_node |= per_node > 2;
        assert!(per_node <= 3, "maxSurge 1");
        if images(&sim) == vec!["kommit.dev/demo:2", "kommit.dev/demo:2"] {
            break;
        }
        assert!(steps < 60, "update did not finish: {:?}", images(&sim));
    }
    assert!(saw_two_on_a_node);
}

#[test]
fn on_delete_leaves_old_pods_until_they_go() {
    let mut sim = sim_with(
        vec![node("n1", "a"), node("n2", "a")],
        ds("  updateStrategy: {type: OnDelete}\n", ""),
    );
    settle(&mut sim);
    set_image(&mut sim.desired.daemon_sets[0], "kommit.dev/demo:2");
    settle(&mut sim);
    assert_eq!(images(&sim), vec!["kommit.dev/demo:1", "kommit.dev/demo:1"]);
    assert_eq!(status(&sim).updated_number_scheduled, Some(0));
    let one = pods(&sim).remove(0);
    let key = kommit_reconciler::Object::from(one).key().unwrap();
    sim.store
        .apply(&kommit_reconciler::Action::Delete {
            key,
            mod_revision: None,
        })
        .unwrap();
    settle(&mut sim);
    assert_eq!(images(&sim), vec!["kommit.dev/demo:1", "kommit.dev/demo:2"]);
}

#[test]
fn removing_the_daemonset_from_git_removes_its_pods_and_record() {
    let mut sim = sim_with(vec![node("n1", "a")], ds("", ""));
    settle(&mut sim);
    assert_eq!(pods(&sim).len(), 1);
    sim.desired.daemon_sets.clear();
    sim.step(1);
    assert!(pods(&sim).is_empty());
    assert!(
        sim.observed()
            .daemon_set_status("default", "agent")
            .is_none()
    );
}
