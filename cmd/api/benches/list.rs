//! LIST latency with 10,000 pods in the cache: server-side (router, JSON and Table),
//! and `kubectl get pods -A` wall time against the HTTPS server. Before the LISTs, 1,000
//! concurrent WATCH streams through the router: resident memory they add, the fan-out
//! latency of one change to all of them, and that every watch task ends when its client
//! drops.
//!
//! Run: `cargo bench -p kommit-api --bench list`
//!
//! Figures on a 2-core machine with other builds running (1-min load average 1.3-2.4
//! for both), before and after the list and Table were written without copying every
//! object into a new `Value` tree:
//!
//! | | before | after |
//! |---|---|---|
//! | LIST JSON (7.8 MB), p50 / p99 | 288 / 357 ms | 172 / 178 ms |
//! | LIST Table (4.7 MB), p50 / p99 | 338 / 423 ms | 177 / 211 ms |
//! | `kubectl get pods -A`, median | 3.34 s | 2.96 s |
//! | 1,000 watches: RSS added, one change to all | | 9.1 MiB, 7.7 ms |
//!
//! The RSS figure is read once every watch has delivered an event; the allocator may
//! reuse heap freed while loading the pods, so it is a lower bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use kommit_api::{ApiState, ServeConfig, Server, Tokens};
use kommit_cache::{Cache, DeleteRangeRequest, PutRequest};
use serde_json::json;
use tower::ServiceExt;

const PODS: usize = 10_000;
const WATCHES: usize = 1_000;

/// Resident set size of this process, in bytes (`/proc/self/statm`, 4 KiB pages).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4096
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cache = Cache::in_memory();
    let now = jiff::Timestamp::now().to_string();
    for i in 0..PODS {
        let ns = format!("ns-{}", i % 20);
        let name = format!("web-{i:05}");
        let v = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{i}"), "labels": {"app": "web", "pod-template-hash": "5d8f"}, "creationTimestamp": now,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f", "uid": "rs", "controller": true}]},
            "spec": {"nodeName": format!("node-{}", i % 100), "containers": [{"name": "web", "image": "hello:1", "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.244.1.2", "hostIP": "10.0.0.1", "startTime": now,
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "web", "image": "hello:1", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": now}}}]}});
        cache
            .put(PutRequest::new(
                format!("/registry/pods/{ns}/{name}"),
                serde_json::to_vec(&v).unwrap(),
            ))
            .await
            .unwrap();
    }
    let (_tx, rx) = tokio::sync::watch::channel(None);
    let state = ApiState {
        cache,
        applied: rx,
        logs: None,
    };
    let app = kommit_api::app(state.clone(), Tokens::from_plain([("t", "admin")]));
    // First, before the LISTs leave freed heap behind for the watches to reuse.
    watches(&app, &state.cache).await;
    for (label, accept) in [
        ("JSON", "application/json"),
        (
            "Table",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        ),
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..40 {
            let req = Request::get("/api/v1/pods")
                .header("authorization", "Bearer t")
                .header("accept", accept)
                .body(Body::empty())
                .unwrap();
            let start = Instant::now();
            let resp = app.clone().oneshot(req).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            times.push(start.elapsed());
            bytes = body.len();
        }
        println!(
            "LIST {PODS} pods ({label}, {bytes} bytes): p50 {:?}  p99 {:?}",
            pct(&mut times, 0.5),
            pct(&mut times, 0.99)
        );
    }

    let data = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::new(data.path().to_path_buf());
    config.listen = "127.0.0.1:0".parse().unwrap();
    let server = Server::bind(config, state).await.unwrap();
    tokio::spawn(server.run(std::future::pending()));
    let kubeconfig = data.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        kommit_api::kubeconfig(data.path(), None).unwrap(),
    )
    .unwrap();
    let mut walls = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let out = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "pods", "-A"])
            .env("HOME", data.path())
            .output()
            .await
            .expect("kubectl runs");
        walls.push(start.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.iter().filter(|b| **b == b'\n').count(), PODS + 1);
    }
    println!(
        "kubectl get pods -A ({PODS} pods): median {:?}  max {:?}",
        pct(&mut walls, 0.5),
        pct(&mut walls, 1.0)
    );
}

/// Opens `WATCHES` cluster-wide pod watches, changes one pod, and reports memory,
/// fan-out latency and the watch tasks left after the clients drop.
async fn watches(app: &axum::Router, cache: &Cache) {
    let before = kommit_api::active_watches();
    let rss_before = rss();
    let rev = cache.current_revision();
    let mut bodies = Vec::new();
    for _ in 0..WATCHES {
        let req = Request::get(format!("/api/v1/pods?watch=true&resourceVersion={rev}"))
            .header("authorization", "Bearer t")
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert!(resp.status().is_success());
        bodies.push(resp.into_body());
    }
    let opened = kommit_api::active_watches() - before;
    // Each client reads its stream until the changed pod arrives.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for mut body in bodies {
        let done = done_tx.clone();
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    seen.extend_from_slice(&data);
                    if seen.windows(10).any(|w| w == b"web-watch\"") {
                        done.send(Instant::now()).unwrap();
                        break;
                    }
                }
            }
            // Keep the stream open until the bench drops the client.
            std::future::pending::<()>().await;
        }));
    }
    drop(done_tx);
    let v = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-watch", "namespace": "ns-0", "uid": "uid-watch"},
        "spec": {"containers": [{"name": "web", "image": "hello:1"}]}});
    let start = Instant::now();
    cache
        .put(PutRequest::new(
            "/registry/pods/ns-0/web-watch",
            serde_json::to_vec(&v).unwrap(),
        ))
        .await
        .unwrap();
    let mut last = start;
    for _ in 0..WATCHES {
        last = last.max(done_rx.recv().await.unwrap());
    }
    // Every watch has now run and delivered an event.
    let rss_after = rss();
    println!(
        "WATCH: {opened} concurrent watches, RSS +{:.1} MiB ({:.1} KiB each); one change reached all in {:?}",
        (rss_after.saturating_sub(rss_before)) as f64 / (1 << 20) as f64,
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0 / WATCHES as f64,
        last - start
    );
    for c in &clients {
        c.abort();
    }
    for c in clients {
        let _ = c.await;
    }
    // Dropped clients end their watch tasks; bounded wait for them to notice.
    let deadline = Instant::now() + Duration::from_secs(60);
    while kommit_api::active_watches() > before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cache
        .delete_range(DeleteRangeRequest::key("/registry/pods/ns-0/web-watch"))
        .await
        .unwrap();
    println!(
        "WATCH: after the clients dropped, {} of {opened} watch tasks still running",
        kommit_api::active_watches() - before
    );
}
