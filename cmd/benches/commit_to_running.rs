//! Commit-to-running latency of `kommit up`: from the moment `git commit` of a changed
//! 3-replica Deployment returns to the moment kommit reports all 3 new pods ready
//! (and, second figure, converged: the old pods gone). Median of 10, Docker (when the
//! engine answers) and processes.
//!
//! `cargo bench -p kommit --bench commit_to_running`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::GitRepo;

const ROUNDS: usize = 10;

fn manifest(args: &str, value: usize) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata: {{name: bench}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: bench}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: kommit.dev/demo:1
        args: {args}
        env: [{{name: ROUND, value: \"{value}\"}}]
"
    )
}

type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

/// Stops `kommit up` and removes what it ran, also when a round times out.
struct Cluster {
    child: std::process::Child,
    runtime: &'static str,
    node: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        if self.runtime == "docker" {
            support::remove_node_containers(&self.node);
        }
    }
}

fn wait(lines: &Lines, from: usize, pred: impl Fn(&str) -> bool) -> (usize, Instant) {
    let start = Instant::now();
    loop {
        {
            let l = lines.lock().unwrap();
            if let Some((i, (t, _))) = l.iter().enumerate().skip(from).find(|(_, (_, s))| pred(s)) {
                return (i, *t);
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "timed out; kommit up said:\n{}",
                l.iter()
                    .map(|(_, s)| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(runtime: &'static str, args: &str) {
    let node = format!("bench-{runtime}-{}", std::process::id());
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    repo.write("app.yaml", &manifest(args, 0));
    repo.commit("round 0");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kommit"))
        .arg("up")
        .arg(repo.path())
        .args(["--data-dir", data.path().to_str().unwrap()])
        .args([
            "--runtime",
            runtime,
            "--node-name",
            &node,
            "--etcd-listen",
            "127.0.0.1:0",
        ])
        .env("KOMMIT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kommit up starts");
    let lines: Lines = Arc::default();
    let out = child.stdout.take().unwrap();
    let cluster = Cluster {
        child,
        runtime,
        node: node.clone(),
    };
    {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push((Instant::now(), l));
            }
        });
    }
    let (mut seen, _) = wait(&lines, 0, |l| l.starts_with("converged at"));
    let (mut ready, mut converged) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        repo.write("app.yaml", &manifest(args, round));
        let id = repo.commit(&format!("round {round}"));
        let t0 = Instant::now();
        let short = &id[..8];
        let (i, _) = wait(&lines, seen, |l| {
            l.starts_with(&format!("accepted {short}"))
        });
        let (_, t_ready) = wait(&lines, i, |l| {
            l.trim_start().starts_with("bench/web: 3/3 ready")
        });
        let (j, t_conv) = wait(&lines, i, |l| {
            l.starts_with(&format!("converged at {short}"))
        });
        seen = j;
        ready.push(t_ready.duration_since(t0).as_secs_f64() * 1000.0);
        converged.push(t_conv.duration_since(t0).as_secs_f64() * 1000.0);
    }
    // Remove the workload (processes and containers outlive kommit), then stop.
    repo.write(
        "app.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: bench}\n",
    );
    let id = repo.commit("remove");
    wait(&lines, seen, |l| {
        l.starts_with(&format!("converged at {}", &id[..8]))
    });
    drop(cluster);
    println!(
        "{runtime:>8}: commit -> 3 new pods ready: median {:.0} ms (min {:.0}, max {:.0}); -> converged (old pods gone): median {:.0} ms",
        median(ready.clone()),
        ready.iter().cloned().fold(f64::INFINITY, f64::min),
        ready.iter().cloned().fold(0.0, f64::max),
        median(converged)
    );
}

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "commit-to-running, median of {ROUNDS} (load average: {})",
        load.trim()
    );
    let docker = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if docker {
        bench("docker", "[http, --port, \"8080\"]");
    } else {
        println!("  docker: engine not reachable, skipped");
    }
    bench("process", "[sleep]");
}
