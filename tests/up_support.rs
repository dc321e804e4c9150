//! Helpers for the `kommit up` end-to-end tests: start the real binary, read its output,
//! read cluster state through `etcdctl`, list containers by kommit's labels.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `kommit up`, its output collected line by line.
pub struct Up {
    child: Option<Child>,
    pub output: Arc<Mutex<Vec<String>>>,
    pub etcd: String,
}

static PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    PORT.store(p, std::sync::atomic::Ordering::Relaxed);
    p
}

impl Up {
    pub fn start(repo: &Path, data_dir: &Path, runtime: &str, node: &str) -> Up {
        Up::start_with(repo, data_dir, runtime, node, &[])
    }

    /// As [`Up::start`], with more command-line arguments for `kommit up`.
    pub fn start_with(
        repo: &Path,
        data_dir: &Path,
        runtime: &str,
        node: &str,
        extra_args: &[&str],
    ) -> Up {
        let port = free_port();
        let etcd = format!("127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kommit"))
            .arg("up")
            .arg(repo)
            .args(["--data-dir", data_dir.to_str().unwrap()])
            .args([
                "--runtime",
                runtime,
                "--node-name",
                node,
                "--etcd-listen",
                &etcd,
            ])
            .args(["--poll-ms", "200"])
            .args(extra_args)
            .env("KOMMIT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kommit up starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    out.lock().unwrap().push(line);
                }
            });
        }
        Up {
            child: Some(child),
            output,
            etcd,
        }
    }

    pub fn text(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Waits until a line contains `needle` (after skipping `after` lines).
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> usize {
        let start = Instant::now();
        loop {
            if let Some(i) = self
                .output
                .lock()
                .unwrap()
                .iter()
                .position(|l| l.contains(needle))
            {
                return i;
            }
            assert!(
                start.elapsed() < timeout,
                "no line with {needle:?} within {timeout:?}; kommit up said:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `check` holds, failing with kommit's output.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while !check() {
            assert!(
                start.elapsed() < timeout,
                "{what}: not within {timeout:?}; kommit up said:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if start.elapsed() > Duration::from_secs(20) {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("kommit up did not stop on SIGTERM:\n{}", self.text());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Values under a prefix, through the real etcdctl.
    pub fn etcd_values(&self, prefix: &str) -> Vec<serde_json::Value> {
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
        assert!(
            out.status.success(),
            "etcdctl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Running pods (phase Running, Ready) in `namespace`, by name.
    pub fn running_pods(&self, namespace: &str) -> Vec<serde_json::Value> {
        self.etcd_values(&format!("/registry/pods/{namespace}/"))
            .into_iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .collect()
    }
}

impl Drop for Up {
    /// SIGTERM first, so kommit removes its proxy rules; SIGKILL after 10 s.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Docker containers of a kommit node (`kommit.dev/kind=container`), as (id, pod name, env).
pub fn docker_containers(node: &str) -> Vec<(String, String)> {
    let out = Command::new("docker")
        .args([
            "ps",
            "--no-trunc",
            "--filter",
            &format!("label=kommit.dev/node={node}"),
            "--filter",
            "label=kommit.dev/kind=container",
            "--format",
            "{{.ID}} {{.Label \"kommit.dev/pod-name\"}}",
        ])
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
}

/// Removes every container of a node (sandboxes included) when dropped.
pub struct DockerCleanup(pub String);

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        crate::support::remove_node_containers(&self.0);
    }
}

/// Runs `kommit proxy cleanup` when dropped, so no kommit rule survives a failed test
/// (refused, and so harmless, while another kommit owns the chains).
pub struct ProxyCleanup;

impl Drop for ProxyCleanup {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_kommit"))
            .args(["proxy", "cleanup"])
            .output();
    }
}

/// Kills what the process runtime still runs for a data directory (shims and their
/// children) when the test ends: pods of the process runtime outlive `kommit up` by
/// design, and a test must not leave them running. Declare it after the data directory
/// (so it runs before the directory is removed) and before `Up`.
pub struct ProcessCleanup(pub PathBuf);

impl Drop for ProcessCleanup {
    fn drop(&mut self) {
        let needle = self.0.to_string_lossy().into_owned();
        let mut procs = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(0);
            procs.push((
                pid,
                ppid,
                String::from_utf8_lossy(&cmdline).contains(&needle),
            ));
        }
        let mut doomed: Vec<u32> = procs.iter().filter(|p| p.2).map(|p| p.0).collect();
        loop {
            let more: Vec<u32> = procs
                .iter()
                .filter(|p| doomed.contains(&p.1) && !doomed.contains(&p.0))
                .map(|p| p.0)
                .collect();
            if more.is_empty() {
                break;
            }
            doomed.extend(more);
        }
        for pid in doomed {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// A unique node name for a test.
pub fn node_name(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// A deployment manifest.
pub fn deployment(replicas: u32, args: &str, env: &str) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: hello
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: hello
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: kommit.dev/demo:1
        args: {args}
        env:
        - name: GREETING
          value: \"{env}\"
"
    )
}

pub fn path_str(p: &Path) -> PathBuf {
    p.to_path_buf()
}
