//! Helpers shared by the node's integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kommit_node::image::DemoProgram;

/// The demo program of these tests: the crate's own small binary.
pub mod scenarios;

pub fn demo_program() -> DemoProgram {
    DemoProgram {
        path: env!("CARGO_BIN_EXE_kommit-node-demo").into(),
        args: vec![],
    }
}

/// A node name no other test (or test run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Removes every Docker container labelled with the node when dropped (also on panic).
pub struct DockerCleanup(pub String);

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=kommit.dev/node={}", self.0),
            ])
            .output();
        if let Ok(out) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .arg("rm")
                    .arg("-f")
                    .args(&ids)
                    .output();
            }
        }
    }
}

/// Containers (ids) Docker has for the node, running or not.
pub fn docker_ids(node: &str, extra_filter: Option<&str>) -> Vec<String> {
    let mut cmd = std::process::Command::new("docker");
    cmd.args([
        "ps",
        "-aq",
        "--filter",
        &format!("label=kommit.dev/node={node}"),
    ]);
    if let Some(f) = extra_filter {
        cmd.args(["--filter", f]);
    }
    let out = cmd.output().expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Polls `f` every 100 ms until it returns Some, at most `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kommit_node::runtime::Runtime;
use kommit_node::{Agent, AgentConfig, MemoryControlPlane};

/// A pod bound to `node` with a fresh uid; `spec` is the PodSpec as JSON (nodeName added).
pub fn pod(node: &str, name: &str, mut spec: serde_json::Value) -> Pod {
    spec["nodeName"] = serde_json::Value::String(node.to_string());
    if spec.get("terminationGracePeriodSeconds").is_none() {
        spec["terminationGracePeriodSeconds"] = serde_json::json!(3);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": unique(&format!("uid-{name}"))},
        "spec": spec,
    }))
    .expect("valid pod")
}

pub fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap()
}

/// A running agent; dropping it stops the agent (containers stay, as in production).
pub struct RunningAgent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningAgent {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Starts an agent with short intervals (relist 200 ms, resync 2 s).
pub fn start_agent(
    node: &str,
    runtime: Arc<dyn Runtime>,
    control: &MemoryControlPlane,
) -> RunningAgent {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("KOMMIT_LOG"))
        .with_test_writer()
        .try_init();
    let mut cfg = AgentConfig::new(node);
    cfg.relist_interval = Duration::from_millis(200);
    cfg.resync_interval = Duration::from_secs(2);
    cfg.lease_renew_interval = Duration::from_millis(500);
    let agent = Agent::new(cfg, runtime, Arc::new(control.clone()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        agent
            .run(async {
                let _ = rx.await;
            })
            .await
            .expect("agent runs");
    });
    RunningAgent {
        stop: Some(tx),
        task: Some(task),
    }
}

/// Waits for a status of `uid` that `f` accepts; panics with the last status otherwise.
pub async fn wait_status(
    control: &MemoryControlPlane,
    uid: &str,
    limit: Duration,
    what: &str,
    f: impl FnMut(&PodStatus) -> bool,
) -> PodStatus {
    match control.wait_pod_status(uid, limit, f).await {
        Ok(s) => s,
        Err(last) => panic!(
            "timed out after {limit:?} waiting for {what}; last status: {}",
            serde_json::to_string_pretty(&last).unwrap()
        ),
    }
}

pub fn phase(s: &PodStatus) -> &str {
    s.phase.as_deref().unwrap_or_default()
}

/// The status of container `name`.
pub fn cstatus<'a>(
    s: &'a PodStatus,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    s.container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

pub fn running(s: &PodStatus, name: &str) -> bool {
    cstatus(s, name)
        .and_then(|c| c.state.as_ref())
        .and_then(|st| st.running.as_ref())
        .is_some()
}

pub fn waiting_reason(s: &PodStatus, name: &str) -> Option<String> {
    cstatus(s, name)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

pub fn terminated(
    s: &PodStatus,
    name: &str,
) -> Option<k8s_openapi::api::core::v1::ContainerStateTerminated> {
    cstatus(s, name)?.state.as_ref()?.terminated.clone()
}

pub fn restarts(s: &PodStatus, name: &str) -> i32 {
    cstatus(s, name).map_or(0, |c| c.restart_count)
}

pub fn container_id(s: &PodStatus, name: &str) -> String {
    let id = cstatus(s, name)
        .and_then(|c| c.container_id.clone())
        .unwrap_or_default();
    id.split_once("://")
        .map(|(_, i)| i.to_string())
        .unwrap_or(id)
}
