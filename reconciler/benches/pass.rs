//! How long one pass of every controller takes over a converged cluster, pure and
//! through the executor on an in-memory cache. Prints figures; asserts nothing.
//!
//!     cargo bench -p kommit-reconciler --bench pass
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kommit_reconciler::memory::MemoryStore;
use kommit_reconciler::{Config, Context, Desired, Object, podutil, reconcile_all};

fn deployment(i: usize, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("app-{i}"), "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": format!("app-{i}")}},
            "template": {
                "metadata": {"labels": {"app": format!("app-{i}")}},
                "spec": {"containers": [{"name": "c", "image": "img:1",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
            }
        }
    }))
    .unwrap()
}

fn node(i: usize) -> Node {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("node-{i}"), "creationTimestamp": "2023-11-14T22:13:20Z"},
        "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

fn lease(i: usize, now: Timestamp) -> k8s_openapi::api::coordination::v1::Lease {
    let mut l: k8s_openapi::api::coordination::v1::Lease =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("node-{i}"), "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": format!("node-{i}")}
        }))
        .unwrap();
    l.spec.as_mut().unwrap().renew_time = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
    );
    l
}

fn converge(desired: &Desired, nodes: usize) -> MemoryStore {
    let mut store = MemoryStore::new();
    for i in 0..nodes {
        store.put(node(i).into()).unwrap();
    }
    let t0 = 1_700_000_000;
    for step in 0..12 {
        let now = Timestamp::from_second(t0 + step).unwrap();
        for i in 0..nodes {
            store.put(lease(i, now).into()).unwrap();
        }
        // Kubelet: make bound pods ready.
        for pod in store.observed().pods {
            if podutil::node_name(&pod).is_some() && podutil::phase(&pod) == "Pending" {
                let mut p = pod.clone();
                let st = p.status.get_or_insert_with(Default::default);
                st.phase = Some("Running".into());
                st.conditions = Some(vec![k8s_openapi::api::core::v1::PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
                    ),
                    ..Default::default()
                }]);
                store.put(Object::Pod(p)).unwrap();
            }
        }
        let ctx = Context::seeded(now, step as u64);
        let pass = reconcile_all(&ctx, desired, &store.observed(), &Config::default());
        store.apply_all(&pass.outcome.actions);
    }
    store
}

fn main() {
    for (deployments, replicas, nodes) in [(10, 10, 3), (100, 10, 10), (200, 25, 20)] {
        let desired = Desired {
            deployments: (0..deployments).map(|i| deployment(i, replicas)).collect(),
            ..Default::default()
        };
        let store = converge(&desired, nodes);
        let observed = store.observed();
        let pods = observed.pods.len();
        let ctx = Context::seeded(Timestamp::from_second(1_700_000_012).unwrap(), 9);
        let runs = 20;
        let start = Instant::now();
        let mut actions = 0;
        for _ in 0..runs {
            actions += reconcile_all(&ctx, &desired, &observed, &Config::default())
                .outcome
                .actions
                .len();
        }
        let per = start.elapsed() / runs;
        println!(
            "steady pass: {deployments} deployments x {replicas} replicas ({pods} pods, {nodes} nodes): {:.2} ms/pass, {} actions",
            per.as_secs_f64() * 1e3,
            actions / runs as usize
        );
        // A rollout step: every template changed.
        let mut changed = desired.clone();
        for d in &mut changed.deployments {
            d.spec
                .as_mut()
                .unwrap()
                .template
                .spec
                .as_mut()
                .unwrap()
                .containers[0]
                .image = Some("img:2".into());
        }
        let start = Instant::now();
        let out = reconcile_all(&ctx, &changed, &observed, &Config::default());
        println!(
            "rollout start pass: {:.2} ms, {} actions",
            start.elapsed().as_secs_f64() * 1e3,
            out.outcome.actions.len()
        );
    }
}
