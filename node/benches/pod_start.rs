//! Pod start latency through the node agent: from a pod appearing in the control plane to
//! its status reporting all containers running (the node's share of commit-to-running).
//!
//! `cargo bench -p kommit-node --bench pod_start` prints, for the Docker runtime (when an
//! engine answers) and the process runtime, the median and worst of 10 single-pod starts
//! and of 5 starts of 3 pods at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kommit_node::image::DemoProgram;
use kommit_node::runtime::Runtime;
use kommit_node::runtime::docker::{DockerConfig, DockerRuntime};
use kommit_node::runtime::process::{ProcessConfig, ProcessRuntime};
use kommit_node::{Agent, AgentConfig, MemoryControlPlane};

fn demo() -> DemoProgram {
    DemoProgram {
        path: env!("CARGO_BIN_EXE_kommit-node-demo").into(),
        args: vec![],
    }
}

fn pod(node: &str, i: usize, round: usize) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("bench-{round}-{i}"), "namespace": "default",
                     "uid": format!("bench-{}-{round}-{i}", std::process::id())},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 2,
                 "containers": [{"name": "main", "image": "kommit.dev/demo:bench", "args": ["sleep"]}]}
    }))
    .unwrap()
}

async fn measure(name: &str, runtime: Arc<dyn Runtime>) {
    let node = runtime.node_name().to_string();
    let control = MemoryControlPlane::new();
    let mut cfg = AgentConfig::new(&node);
    cfg.relist_interval = Duration::from_millis(200);
    let agent = Agent::new(cfg, runtime.clone(), Arc::new(control.clone()));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(agent.run(async {
        let _ = rx.await;
    }));
    // Warm-up (builds the demo image on Docker).
    let warm = pod(&node, 0, 999);
    let warm_uid = warm.metadata.uid.clone().unwrap();
    control.put_pod(warm);
    wait_running(&control, std::slice::from_ref(&warm_uid)).await;
    control.delete_pod(&warm_uid);

    for (batch, rounds) in [(1usize, 10usize), (3, 5)] {
        let mut times = Vec::new();
        for round in 0..rounds {
            let pods: Vec<Pod> = (0..batch)
                .map(|i| pod(&node, i, round + batch * 100))
                .collect();
            let uids: Vec<String> = pods
                .iter()
                .map(|p| p.metadata.uid.clone().unwrap())
                .collect();
            let t = Instant::now();
            for p in pods {
                control.put_pod(p);
            }
            wait_running(&control, &uids).await;
            times.push(t.elapsed());
            for u in &uids {
                control.delete_pod(u);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        times.sort();
        println!(
            "{name:8} {batch} pod(s) to Running: median {:>7.1} ms, worst {:>7.1} ms ({rounds} runs)",
            ms(times[times.len() / 2]),
            ms(*times.last().unwrap())
        );
    }
    // Let the agent remove the last pods, then stop it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = tx.send(());
    let _ = task.await;
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn wait_running(control: &MemoryControlPlane, uids: &[String]) {
    for u in uids {
        control
            .wait_pod_status(u, Duration::from_secs(120), |s| {
                s.phase.as_deref() == Some("Running")
            })
            .await
            .expect("pod running");
    }
}

#[tokio::main]
async fn main() {
    let node = format!("bench-docker-{}", std::process::id());
    match DockerRuntime::connect(DockerConfig::new(&node, demo())).await {
        Ok(rt) => measure("docker", Arc::new(rt)).await,
        Err(e) => println!("docker   skipped: {e}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::new(ProcessConfig {
        node_name: format!("bench-process-{}", std::process::id()),
        data_dir: dir.path().into(),
        demo: demo(),
        host_ip: "127.0.0.1".into(),
    })
    .unwrap();
    measure("process", Arc::new(rt)).await;
}
