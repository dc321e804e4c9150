//! `kubectl get -w` against the API on a loopback socket: a cache with observed objects
//! and a snapshot loaded from a Git repository made with the git CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_sees_a_new_pod_and_watch_tasks_end() {
    let c = Cluster::start().await;
    let before = kommit_api::active_watches();
    let mut child = c
        .kubectl_cmd(&["get", "pods", "-n", "hello", "-w", "--output-watch-events"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The initial list.
    let first = rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
    assert!(first.contains("NAME"), "{first}");
    // Wait until the watch is established, then add a pod.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while kommit_api::active_watches() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl never opened a watch"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    c.put_pod("hello", "late-pod", "Running", "n1").await;
    let mut seen = false;
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(20)) {
        if line.contains("late-pod") {
            assert!(line.contains("ADDED") && line.contains("Running"), "{line}");
            seen = true;
            break;
        }
    }
    assert!(seen, "kubectl get -w did not show the new pod");
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while kommit_api::active_watches() > before {
        assert!(
            std::time::Instant::now() < deadline,
            "watch task outlived its client"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
