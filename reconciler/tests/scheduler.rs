//! Scheduler filters, scores and FailedScheduling messages from fixtures.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kommit_reconciler::memory::MemoryStore;
use kommit_reconciler::scheduler::{self, fit_error_message};
use kommit_reconciler::{Object, Observed, podutil};

fn nodes() -> Vec<Node> {
    fixture_all("nodes.yaml")
}

/// A pending pod; `extra` is YAML merged into its spec (indented 2).
fn pod(name: &str, owner: Option<&str>, extra: &str) -> Pod {
    let owner = owner
        .map(|uid| {
            format!(
                "  ownerReferences:\n    - {{apiVersion: apps/v1, kind: ReplicaSet, name: rs, uid: {uid}, controller: true}}\n"
            )
        })
        .unwrap_or_default();
    let mut p: Pod = yaml(&format!(
        "metadata:\n  name: {name}\n  namespace: default\n  uid: uid-{name}\n  resourceVersion: \"3\"\n{owner}spec:\n  containers:\n    - name: c\n      image: i\n      resources:\n        requests: {{cpu: 500m, memory: 256Mi}}\n{extra}status:\n  phase: Pending\n"
    ));
    p.metadata.creation_timestamp = Some(Time(t(0)));
    p
}

fn bound_to(actions: &[kommit_reconciler::Action]) -> Vec<(String, String)> {
    updated(actions, "Pod")
        .into_iter()
        .filter_map(|o| match o {
            Object::Pod(p) => {
                podutil::node_name(p).map(|n| (p.metadata.name.clone().unwrap(), n.to_string()))
            }
            _ => None,
        })
        .collect()
}

fn unschedulable(actions: &[kommit_reconciler::Action]) -> Vec<String> {
    updated(actions, "Pod")
        .into_iter()
        .filter_map(|o| match o {
            Object::Pod(p) => podutil::condition(p, "PodScheduled")
                .filter(|c| c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
                .and_then(|c| c.message.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn binds_pending_pod_with_condition_and_event() {
    let obs = Observed {
        nodes: nodes(),
        pods: vec![pod("p", None, "")],
        ..Default::default()
    };
    let out = scheduler::schedule(&ctx(0), &obs);
    assert_eq!(
        bound_to(&out.actions),
        vec![("p".to_string(), "node-a".to_string())]
    );
    let Object::Pod(p) = updated(&out.actions, "Pod")[0] else {
        unreachable!()
    };
    assert_eq!(
        podutil::condition(p, "PodScheduled").unwrap().status,
        "True"
    );
    assert_eq!(p.metadata.resource_version.as_deref(), Some("3"));
    assert_eq!(
        events(&out.actions),
        vec![(
            "Scheduled".into(),
            "Successfully assigned default/p to node-a".into()
        )]
    );
}

#[test]
fn replicas_of_one_owner_spread_then_least_allocated() {
    let pods: Vec<Pod> = (0..4)
        .map(|i| pod(&format!("r{i}"), Some("rs-1"), ""))
        .collect();
    let obs = Observed {
        nodes: nodes(),
        pods,
        ..Default::default()
    };
    let out = scheduler::schedule(&ctx(0), &obs);
    let b = bound_to(&out.actions);
    let on = |n: &str| b.iter().filter(|(_, node)| node == n).count();
    assert_eq!((on("node-a"), on("node-b")), (2, 2), "{b:?}");
    // Deterministic: the same input gives the same placement.
    assert_eq!(bound_to(&scheduler::schedule(&ctx(0), &obs).actions), b);

    // Least allocated: node-a already busy with another owner's pod → node-b.
    let mut busy = pod("busy", Some("other"), "");
    busy.spec.as_mut().unwrap().node_name = Some("node-a".into());
    let obs = Observed {
        nodes: nodes(),
        pods: vec![busy, pod("x", Some("rs-2"), "")],
        ..Default::default()
    };
    assert_eq!(
        bound_to(&scheduler::schedule(&ctx(0), &obs).actions),
        vec![("x".to_string(), "node-b".to_string())]
    );
}

#[test]
fn failed_scheduling_message_reads_like_kubernetes() {
    let mut ns = nodes();
    // node-a is full of CPU; node-b lacks the label.
    let mut hog = pod("hog", None, "");
    hog.spec.as_mut().unwrap().containers[0]
        .resources
        .as_mut()
        .unwrap()
        .requests
        .as_mut()
        .unwrap()
        .insert(
            "cpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1800m".into()),
        );
    hog.spec.as_mut().unwrap().node_name = Some("node-a".into());
    ns[1].metadata.labels.as_mut().unwrap().remove("zone");
    let p = pod("p", None, "  nodeSelector: {zone: a}\n");
    let obs = Observed {
        nodes: ns,
        pods: vec![hog, p],
        ..Default::default()
    };
    let out = scheduler::schedule(&ctx(0), &obs);
    let msg = "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node affinity/selector.";
    assert_eq!(unschedulable(&out.actions), vec![msg.to_string()]);
    assert_eq!(
        events(&out.actions),
        vec![("FailedScheduling".into(), msg.into())]
    );
    let Object::Event(e) = created(&out.actions, "Event")[0] else {
        unreachable!()
    };
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.involved_object.name.as_deref(), Some("p"));

    // Unchanged on the next run: no new event or write.
    let mut store = MemoryStore::new();
    for o in obs.pods.iter().cloned() {
        store.put(o.into()).unwrap();
    }
    for n in obs.nodes.iter().cloned() {
        store.put(n.into()).unwrap();
    }
    let first = scheduler::schedule(&ctx(1), &store.observed());
    assert!(store.apply_all(&first.actions).is_empty());
    let second = scheduler::schedule(&ctx(2), &store.observed());
    assert!(second.actions.is_empty(), "{:?}", second.actions);

    // A new node that fits: retried and bound.
    let mut n3 = nodes()[0].clone();
    n3.metadata.name = Some("node-c".into());
    store.put(n3.into()).unwrap();
    let third = scheduler::schedule(&ctx(3), &store.observed());
    assert_eq!(
        bound_to(&third.actions),
        vec![("p".to_string(), "node-c".to_string())]
    );
}

#[test]
fn memory_pods_and_multiple_reasons_per_node() {
    let mut ns = nodes();
    for n in &mut ns {
        let alloc = n.status.as_mut().unwrap().allocatable.as_mut().unwrap();
        alloc.insert(
            "cpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("100m".into()),
        );
        alloc.insert(
            "memory".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("128Mi".into()),
        );
    }
    let obs = Observed {
        nodes: ns,
        pods: vec![pod("p", None, "")],
        ..Default::default()
    };
    let out = scheduler::schedule(&ctx(0), &obs);
    assert_eq!(
        unschedulable(&out.actions),
        vec!["0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory.".to_string()]
    );
}

#[test]
fn taints_tolerations_readiness_and_cordons() {
    let mut ns = nodes();
    // node-a: tainted dedicated=gpu:NoSchedule. node-b: not ready.
    ns[0].spec = Some(yaml(
        "taints: [{key: dedicated, value: gpu, effect: NoSchedule}]",
    ));
    ns[1].status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
    let obs = Observed {
        nodes: ns.clone(),
        pods: vec![pod("p", None, "")],
        ..Default::default()
    };
    assert_eq!(
        unschedulable(&scheduler::schedule(&ctx(0), &obs).actions),
        vec![
            "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
                .to_string()
        ]
    );
    // Tolerating the taint lets it onto node-a.
    let tolerant = pod(
        "t",
        None,
        "  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]\n",
    );
    let obs = Observed {
        nodes: ns.clone(),
        pods: vec![tolerant],
        ..Default::default()
    };
    assert_eq!(
        bound_to(&scheduler::schedule(&ctx(0), &obs).actions),
        vec![("t".to_string(), "node-a".to_string())]
    );
    // PreferNoSchedule does not filter; cordoned nodes do.
    let mut ns = nodes();
    ns[0].spec = Some(yaml("taints: [{key: soft, effect: PreferNoSchedule}]"));
    ns[1].spec = Some(yaml("unschedulable: true"));
    let obs = Observed {
        nodes: ns,
        pods: vec![pod("p", None, "")],
        ..Default::default()
    };
    assert_eq!(
        bound_to(&scheduler::schedule(&ctx(0), &obs).actions),
        vec![("p".to_string(), "node-a".to_string())]
    );
}

#[test]
fn node_name_affinity_and_host_ports() {
    let affinity = "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n          - matchExpressions: [{key: zone, operator: In, values: [b]}]\n";
    let obs = Observed {
        nodes: nodes(),
        pods: vec![pod("p", None, affinity)],
        ..Default::default()
    };
    assert_eq!(
        bound_to(&scheduler::schedule(&ctx(0), &obs).actions),
        vec![("p".to_string(), "node-b".to_string())]
    );

    // Host port 8080 taken on node-a by a bound pod: the next goes to node-b.
    let port = "  containers:\n    - name: c\n      image: i\n      ports: [{containerPort: 80, hostPort: 8080}]\n";
    let mut first: Pod = pod("first", None, "");
    first.spec = Some(yaml(port.replace("\n  ", "\n").trim_start_matches("  ")));
    first.spec.as_mut().unwrap().node_name = Some("node-a".into());
    let mut second = first.clone();
    second.metadata.name = Some("second".into());
    second.spec.as_mut().unwrap().node_name = None;
    assert_eq!(
        first.spec.as_ref().unwrap().containers[0]
            .ports
            .as_ref()
            .unwrap()[0]
            .host_port,
        Some(8080)
    );
    // node-b is busier, so without the port conflict node-a would win.
    let mut heavy = pod("heavy", None, "");
    heavy.spec.as_mut().unwrap().node_name = Some("node-b".into());
    let obs = Observed {
        nodes: nodes(),
        pods: vec![first.clone(), heavy.clone(), second.clone()],
        ..Default::default()
    };
    assert_eq!(
        bound_to(&scheduler::schedule(&ctx(0), &obs).actions),
        vec![("second".to_string(), "node-b".to_string())]
    );
    second.spec.as_mut().unwrap().containers[0].ports = None;
    let obs = Observed {
        nodes: nodes(),
        pods: vec![first, heavy, second],
        ..Default::default()
    };
    assert_eq!(
        bound_to(&scheduler::schedule(&ctx(0), &obs).actions),
        vec![("second".to_string(), "node-a".to_string())]
    );
}

#[test]
fn no_nodes_and_message_sorting() {
    let obs = Observed {
        pods: vec![pod("p", None, "")],
        ..Default::default()
    };
    assert_eq!(
        unschedulable(&scheduler::schedule(&ctx(0), &obs).actions),
        vec!["no nodes available to schedule pods".to_string()]
    );
    let reasons = [
        ("Insufficient memory".to_string(), 1),
        ("Insufficient cpu".to_string(), 2),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        fit_error_message(3, &reasons),
        "0/3 nodes are available: 1 Insufficient memory, 2 Insufficient cpu."
    );
}

#[test]
fn terminated_pods_free_their_resources() {
    let mut ns = nodes();
    ns.truncate(1);
    let alloc = ns[0].status.as_mut().unwrap().allocatable.as_mut().unwrap();
    alloc.insert(
        "cpu".into(),
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("600m".into()),
    );
    let mut done = pod("done", None, "");
    done.spec.as_mut().unwrap().node_name = Some("node-a".into());
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let obs = Observed {
        nodes: ns.clone(),
        pods: vec![done.clone(), pod("p", None, "")],
        ..Default::default()
    };
    assert_eq!(
        bound_to(&scheduler::schedule(&ctx(0), &obs).actions).len(),
        1
    );
    done.status.as_mut().unwrap().phase = Some("Running".into());
    let obs = Observed {
        nodes: ns,
        pods: vec![done, pod("p", None, "")],
        ..Default::default()
    };
    assert_eq!(
        unschedulable(&scheduler::schedule(&ctx(0), &obs).actions),
        vec!["0/1 nodes are available: 1 Insufficient cpu.".to_string()]
    );
}
