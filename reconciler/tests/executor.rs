//! The executor against a real in-memory cache: compare-and-swap semantics, stored
//! layout, and the reconcile loop converging a rollout with a simulated kubelet.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kommit_cache::{Cache, PutRequest, RangeRequest};
use kommit_reconciler::executor::{Applied, Clock, Executor};
use kommit_reconciler::{Action, Desired, Object, ObjectKey, podutil};
use tokio::sync::watch;

struct Fixed(Timestamp);
impl Clock for Fixed {
    fn now(&self) -> Timestamp {
        self.0
    }
}

async fn seed_nodes(cache: &Cache) {
    for n in fixture_all::<Node>("nodes.yaml") {
        let key = Object::from(n.clone()).key().unwrap().to_key();
        cache
            .put(PutRequest::new(key, serde_json::to_vec(&n).unwrap()))
            .await
            .unwrap();
    }
}

/// What a kubelet does for every node: renew leases, run bound pods, finish deletions.
async fn kubelet(exec: &Executor, now: Timestamp) {
    let cache = exec.cache();
    for n in ["node-a", "node-b"] {
        let l = lease(n, now);
        let key = Object::from(l.clone()).key().unwrap().to_key();
        cache
            .put(PutRequest::new(key, serde_json::to_vec(&l).unwrap()))
            .await
            .unwrap();
    }
    let (obs, _, _) = exec.read_observed().await.unwrap();
    for pod in obs.pods {
        if podutil::node_name(&pod).is_none() {
            continue;
        }
        if podutil::is_terminating(&pod) {
            let key = Object::from(pod).key().unwrap();
            exec.apply(&Action::Delete {
                key,
                mod_revision: None,
            })
            .await
            .unwrap();
        } else if podutil::phase(&pod) == "Pending" {
            let mut p = pod.clone();
            make_ready(&mut p, now);
            // A status write that loses a race is simply redone next time.
            let _ = exec.apply(&Action::Update(p.into())).await.unwrap();
        }
    }
}

fn pod_fixture() -> Pod {
    fixture("bare-pod.yaml")
}

#[tokio::test]
async fn actions_are_compare_and_swap_transactions() {
    let cache = Cache::in_memory();
    let exec = Executor::new(cache.clone());
    let pod = pod_fixture();
    let create = Action::Create(pod.clone().into());
    let Applied::Done(rev) = exec.apply(&create).await.unwrap() else {
        panic!("create failed")
    };
    // Stored under Kubernetes' key, as JSON with apiVersion/kind and no resourceVersion.
    let kv = cache
        .get("/registry/pods/default/toolbox")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kv.mod_revision, rev);
    let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(
        (v["apiVersion"].as_str(), v["kind"].as_str()),
        (Some("v1"), Some("Pod"))
    );
    assert!(v["metadata"].get("resourceVersion").is_none());
    // Reading back sets resourceVersion = mod_revision.
    let (obs, _, bad) = exec.read_observed().await.unwrap();
    assert!(bad.is_empty());
    assert_eq!(obs.pods[0].metadata.resource_version, Some(rev.to_string()));

    // Creating again conflicts.
    assert_eq!(exec.apply(&create).await.unwrap(), Applied::Conflict);
    // Updating what was read works once; the stale copy then conflicts.
    let mut read = obs.pods[0].clone();
    read.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("v".into(), "2".into());
    assert!(matches!(
        exec.apply(&Action::Update(read.clone().into()))
            .await
            .unwrap(),
        Applied::Done(_)
    ));
    assert_eq!(
        exec.apply(&Action::Update(read.clone().into()))
            .await
            .unwrap(),
        Applied::Conflict
    );
    // A stale delete conflicts; a fresh one deletes; deleting again is done.
    let key = ObjectKey::new("Pod", Some("default"), "toolbox").unwrap();
    let stale = Action::Delete {
        key: key.clone(),
        mod_revision: Some(rev),
    };
    assert_eq!(exec.apply(&stale).await.unwrap(), Applied::Conflict);
    let cur = cache
        .get("/registry/pods/default/toolbox")
        .await
        .unwrap()
        .unwrap()
        .mod_revision;
    let fresh = Action::Delete {
        key: key.clone(),
        mod_revision: Some(cur),
    };
    assert!(matches!(
        exec.apply(&fresh).await.unwrap(),
        Applied::Done(_)
    ));
    assert!(
        cache
            .get("/registry/pods/default/toolbox")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        exec.apply(&fresh).await.unwrap(),
        Applied::Done(_)
    ));
}

#[tokio::test]
async fn undecodable_values_are_skipped_and_named() {
    let cache = Cache::in_memory();
    cache
        .put(PutRequest::new(
            "/registry/pods/default/garbage",
            "not json",
        ))
        .await
        .unwrap();
    let exec = Executor::new(cache);
    let (obs, _, bad) = exec.read_observed().await.unwrap();
    assert!(obs.pods.is_empty());
    assert_eq!(bad, vec!["/registry/pods/default/garbage".to_string()]);
}

#[tokio::test]
async fn passes_converge_a_deployment_in_the_cache() {
    let cache = Cache::in_memory();
    seed_nodes(&cache).await;
    let desired = Desired {
        deployments: vec![web("web:1")],
        ..Default::default()
    };
    let mut now = t(0);
    for _ in 0..8 {
        kubelet(&Executor::new(cache.clone()), now).await;
        let exec = Executor::new(cache.clone()).with_clock(Arc::new(Fixed(now)));
        let report = exec.run_once(&desired).await.unwrap();
        assert!(report.errors.is_empty());
        now = now
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1))
            .unwrap();
    }
    let pods = cache
        .range(RangeRequest::prefix("/registry/pods/default/web-"))
        .await
        .unwrap();
    assert_eq!(pods.kvs.len(), 4);
    let rs = cache
        .range(RangeRequest::prefix("/registry/replicasets/default/web-"))
        .await
        .unwrap();
    assert_eq!(rs.kvs.len(), 1);
    let status = cache
        .get("/registry/deployments/default/web")
        .await
        .unwrap()
        .unwrap();
    let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_slice(&status.value).unwrap();
    assert_eq!(d.status.unwrap().available_replicas, Some(4));
    assert!(
        cache
            .get("/registry/namespaces/default")
            .await
            .unwrap()
            .is_some()
    );
    let events = cache
        .range(RangeRequest::prefix("/registry/events/default/"))
        .await
        .unwrap();
    assert!(events.kvs.len() >= 9, "{} events", events.kvs.len());
}

#[tokio::test]
async fn a_concurrent_write_is_a_conflict_then_fixed_on_the_next_pass() {
    let cache = Cache::in_memory();
    seed_nodes(&cache).await;
    let exec = Executor::new(cache.clone()).with_clock(Arc::new(Fixed(t(0))));
    // A pending bare pod; someone changes it between our read and our bind.
    exec.apply(&Action::Create(pod_fixture().into()))
        .await
        .unwrap();
    let (obs, _, _) = exec.read_observed().await.unwrap();
    let pass = kommit_reconciler::scheduler::schedule(&ctx(0), &obs);
    let mut other = obs.pods[0].clone();
    other
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("touched".into(), "yes".into());
    exec.apply(&Action::Update(other.into())).await.unwrap();
    let mut report = Default::default();
    exec.apply_all(&pass.actions, &mut report).await.unwrap();
    assert_eq!(report.conflicts, 1);
    // The next pass binds it, keeping the other writer's change.
    let desired = Desired {
        pods: vec![pod_fixture()],
        ..Default::default()
    };
    let _ = desired;
    let report = exec.run_once(&Desired::default()).await.unwrap();
    assert_eq!(report.conflicts, 0, "{:?}", report.log);
    let (obs, _, _) = exec.read_observed().await.unwrap();
    let p = obs
        .pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("toolbox"))
        .unwrap();
    assert_eq!(podutil::node_name(p), Some("node-a"));
    assert_eq!(p.metadata.labels.as_ref().unwrap()["touched"], "yes");
    assert_eq!(
        cache
            .range(RangeRequest::prefix("/registry/events/"))
            .await
            .unwrap()
            .kvs
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_rolls_out_new_commits_until_shutdown() {
    let cache = Cache::in_memory();
    seed_nodes(&cache).await;
    let exec = Executor::new(cache.clone());
    let (desired_tx, desired_rx) = watch::channel(Arc::new(Desired {
        deployments: vec![web("web:1")],
        revision: Some("c1".into()),
        ..Default::default()
    }));
    let (stop_tx, stop_rx) = watch::channel(false);
    let passes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = passes.clone();
    let runner = exec.clone();
    let loop_task = tokio::spawn(async move {
        runner
            .run(desired_rx, stop_rx, move |_| {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .await
    });

    // The kubelet runs on its own; wait until the pods of `image` are all ready.
    async fn wait_for(exec: &Executor, image: &str) -> Vec<Pod> {
        for _ in 0..500 {
            kubelet(exec, SystemNow::now()).await;
            let (obs, _, _) = exec.read_observed().await.unwrap();
            let pods: Vec<Pod> = obs.pods.into_iter().filter(podutil::is_active).collect();
            if pods.len() == 4
                && pods
                    .iter()
                    .all(|p| podutil::is_ready(p) && pod_image(p) == image)
            {
                return pods;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("pods of {image} never all ready");
    }
    wait_for(&exec, "web:1").await;
    desired_tx.send_replace(Arc::new(Desired {
        deployments: vec![web("web:2")],
        revision: Some("c2".into()),
        ..Default::default()
    }));
    let pods = wait_for(&exec, "web:2").await;
    assert!(pods.iter().all(|p| podutil::node_name(p).is_some()));

    // Removing the Deployment from Git removes its pods.
    desired_tx.send_replace(Arc::new(Desired::default()));
    let mut gone = false;
    for _ in 0..200 {
        if cache
            .range(RangeRequest::prefix("/registry/pods/"))
            .await
            .unwrap()
            .kvs
            .is_empty()
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "pods left after the Deployment was removed");

    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), loop_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(passes.load(std::sync::atomic::Ordering::Relaxed) > 3);
}

struct SystemNow;
impl SystemNow {
    fn now() -> Timestamp {
        kommit_reconciler::executor::SystemClock.now()
    }
}
