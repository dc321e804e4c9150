//! LIST latency with 10,000 pods in the cache: server-side (router, JSON and Table),
//! and `kubectl get pods -A` wall time against the HTTPS server.
//!
//! Run: `cargo bench -p kommit-api --bench list`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use kommit_api::{ApiState, ServeConfig, Server, Tokens};
use kommit_cache::{Cache, PutRequest};
use serde_json::json;
use tower::ServiceExt;

const PODS: usize = 10_000;

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
