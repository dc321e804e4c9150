//! Helpers shared by the node's integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kommit_node::image::DemoProgram;

/// The demo program of these tests: the crate's own small binary.
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
