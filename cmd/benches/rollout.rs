//! Rolling-update time of `kommit up` on Docker: from the moment `git commit` of a new
//! version of a 10-replica Deployment (maxSurge 25%, maxUnavailable 25%) returns to the
//! moment its status, read through etcdctl, shows 10 updated, available replicas and no
//! old ones. Run twice: with an HTTP readiness probe (periodSeconds 1) and without one.
//! The run without a probe is kommit's own work (scheduling, containers, status, the
//! controllers' steps); the difference is the time spent waiting on readiness probes.
//!
//! `cargo bench -p kommit --bench rollout` (needs a Docker engine and etcdctl)
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::GitRepo;

const ROUNDS: usize = 3;

fn manifest(probe: bool, round: usize) -> String {
    let probe = if probe {
        "
        readinessProbe:
          httpGet: {path: /ready, port: 8080}
          periodSeconds: 1"
    } else {
        ""
    };
    format!(
        "apiVersion: v1
kind: Namespace
metadata: {{name: bench}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: bench}}
spec:
  replicas: 10
  strategy:
    rollingUpdate: {{maxSurge: 25%, maxUnavailable: 25%}}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: kommit.dev/demo:1
        args: [http, --port, \"8080\"]
        env: [{{name: ROUND, value: \"{round}\"}}]{probe}
"
    )
}

/// Stops `kommit up` and removes its containers.
struct Cluster {
    child: std::process::Child,
    node: String,
    etcd: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        support::remove_node_containers(&self.node);
    }
}

impl Cluster {
    fn etcd_values(&self, prefix: &str) -> Vec<serde_json::Value> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.etcd,
                "get",
                "--prefix",
                "--print-value-only",
                prefix,
            ])
            .output()
            .expect("etcdctl runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until the Deployment runs 10 available pods of `round` and nothing else.
    fn wait_converged(&self, round: usize) {
        let start = Instant::now();
        let round = round.to_string();
        loop {
            let pods = self.etcd_values("/registry/pods/bench/");
            let d = self.etcd_values("/registry/deployments/bench/web");
            let s = d.first().map(|d| d["status"].clone()).unwrap_or_default();
            let done = pods.len() == 10
                && pods.iter().all(|p| {
                    p["spec"]["containers"][0]["env"][0]["value"] == round.as_str()
                        && p["status"]["conditions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
                && s["updatedReplicas"] == 10
                && s["availableReplicas"] == 10
                && s["replicas"] == 10;
            if done {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "round {round} not converged: {s}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rounds(v: &[f64]) -> String {
    v.iter()
        .map(|t| format!("{t:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn run(probe: bool) -> Vec<f64> {
    let node = format!("bench-rollout-{}-{}", probe, std::process::id());
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    repo.write("app.yaml", &manifest(probe, 0));
    repo.commit("round 0");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let etcd = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_kommit"))
        .arg("up")
        .arg(repo.path())
        .args(["--data-dir", data.path().to_str().unwrap()])
        .args(["--runtime", "docker", "--node-name", &node])
        .args(["--etcd-listen", &etcd, "--poll-ms", "50"])
        .env("KOMMIT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kommit up starts");
    let cluster = Cluster { child, node, etcd };
    cluster.wait_converged(0);
    let mut times = Vec::new();
    for round in 1..=ROUNDS {
        repo.write("app.yaml", &manifest(probe, round));
        repo.commit(&format!("round {round}"));
        let t = Instant::now();
        cluster.wait_converged(round);
        times.push(t.elapsed().as_secs_f64());
    }
    times
}

fn main() {
    let docker = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !docker {
        println!("rollout: no Docker engine answers; nothing measured");
        return;
    }
    let with_probe = run(true);
    let without = run(false);
    let (w, wo) = (median(&with_probe), median(&without));
    println!("rollout of 10 replicas (maxSurge 25%), commit to converged, median of {ROUNDS}:");
    println!(
        "  with a readiness probe (period 1 s): {w:.2} s (rounds: {})",
        rounds(&with_probe)
    );
    println!(
        "  without a probe (kommit's own work): {wo:.2} s (rounds: {})",
        rounds(&without)
    );
    println!("  waiting on readiness probes:         {:.2} s", w - wo);
}
