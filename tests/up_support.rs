//! Helpers for the `kommit up` end-to-end tests: start the real binary, read its output,
//! read cluster state through `etcdctl`, list containers by kommit's labels.
//!
//! A failing wait (and any panic while an [`Up`] is alive) prints what a person would
//! look at next: kommit's output, the logs of every container of the node (Docker
//! runtime) and kommit's iptables nat rules, so a CI failure says why.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `kommit up`, its output collected line by line.
pub struct Up {
    child: Mutex<Option<Child>>,
    pub output: Arc<Mutex<Vec<String>>>,
    pub etcd: String,
    /// The node whose containers' logs a failure shows (Docker runtime only).
    docker_node: Option<String>,
    /// Whether a failure already printed [`Up::diagnostics`].
    diagnosed: AtomicBool,
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
            child: Mutex::new(Some(child)),
            output,
            etcd,
            docker_node: (runtime == "docker").then(|| node.to_string()),
            diagnosed: AtomicBool::new(false),
        }
    }

    /// What to read when a test fails: the logs of the node's containers (Docker runtime)
    /// and kommit's iptables nat rules.
    pub fn diagnostics(&self) -> String {
        self.diagnosed.store(true, Ordering::Relaxed);
        let mut out = String::new();
        if let Some(node) = &self.docker_node {
            out.push_str(&container_logs(node));
        }
        out.push_str(&kommit_nat_rules());
        out
    }

    pub fn text(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// How `kommit up` ended, when it did (a wait need not run out its time then).
    fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Fails the test with kommit's output and the diagnostics.
    #[track_caller]
    fn fail(&self, what: String) -> ! {
        panic!(
            "{what}; kommit up said:\n{}\n{}",
            self.text(),
            self.diagnostics()
        )
    }

    /// Waits until a line contains `needle` (after skipping `after` lines).
    #[track_caller]
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
            if start.elapsed() >= timeout {
                self.fail(format!("no line with {needle:?} within {timeout:?}"));
            }
            if let Some(status) = self.exited() {
                // What it printed last may still be on its way.
                std::thread::sleep(Duration::from_millis(200));
                if !self.text().contains(needle) {
                    self.fail(format!(
                        "no line with {needle:?}: kommit up ended ({status})"
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `check` holds, failing with kommit's output and the diagnostics.
    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while !check() {
            if start.elapsed() >= timeout {
                self.fail(format!("{what}: not within {timeout:?}"));
            }
            if let Some(status) = self.exited() {
                self.fail(format!("{what}: kommit up ended ({status})"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM and wait.
    fn take_child(&mut self) -> Option<Child> {
        self.child
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.take_child() {
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

    /// Kills `kommit up` with SIGKILL (a crash: nothing of its own cleanup runs).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.take_child() {
            let _ = c.kill();
            let _ = c.wait();
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
    /// SIGTERM first, so kommit removes its proxy rules; SIGKILL after 10 s. When the test
    /// is failing, the diagnostics come first (while the containers and rules still exist).
    fn drop(&mut self) {
        if std::thread::panicking() && !self.diagnosed.load(Ordering::Relaxed) {
            eprintln!("kommit up said:\n{}\n{}", self.text(), self.diagnostics());
        }
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut c) = child {
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

/// Most lines of a container log a failure shows: its start and its end.
const LOG_HEAD: usize = 40;
const LOG_TAIL: usize = 80;

/// `docker logs` (stdout and stderr, with timestamps) of every container of a node,
/// exited ones included, under a header naming pod, container and state.
pub fn container_logs(node: &str) -> String {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label=kommit.dev/node={node}"),
            "--filter",
            "label=kommit.dev/kind=container",
            "--format",
            "{{.ID}}\t{{.Label \"kommit.dev/pod-name\"}}\t{{.Label \"kommit.dev/container-name\"}}\t{{.Status}}",
        ])
        .output();
    let list = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            return format!(
                "(docker ps failed: {})\n",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Err(e) => return format!("(cannot run docker: {e})\n"),
    };
    let mut text = String::new();
    let mut containers: Vec<Vec<&str>> = list.lines().map(|l| l.split('\t').collect()).collect();
    containers.sort_by(|a, b| a.get(1).cmp(&b.get(1)));
    if containers.is_empty() {
        text.push_str(&format!("(no containers of node {node})\n"));
    }
    for c in containers {
        let [id, pod, container, status] = c[..] else {
            continue;
        };
        text.push_str(&format!(
            "==== docker logs: pod {pod}, container {container} ({status})\n"
        ));
        match Command::new("docker")
            .args(["logs", "--timestamps", id])
            .output()
        {
            Ok(o) => {
                // Both streams, merged in time by their timestamps (RFC 3339, so
                // they sort as text; the sort is stable within a stream).
                let all = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                let mut lines: Vec<&str> = all.lines().collect();
                lines.sort_by_key(|l| l.split_once(' ').map_or(*l, |(t, _)| t));
                if lines.len() <= LOG_HEAD + LOG_TAIL {
                    text.push_str(&lines.join("\n"));
                } else {
                    text.push_str(&lines[..LOG_HEAD].join("\n"));
                    let skipped = lines.len() - LOG_HEAD - LOG_TAIL;
                    text.push_str(&format!("\n... {skipped} lines ...\n"));
                    text.push_str(&lines[lines.len() - LOG_TAIL..].join("\n"));
                }
                text.push('\n');
            }
            Err(e) => text.push_str(&format!("(cannot run docker logs: {e})\n")),
        }
    }
    text
}

/// kommit's proxy rules: the nat table's KOMMIT lines (`iptables-save -t nat`) and the
/// nftables table `ip kommit`.
pub fn kommit_nat_rules() -> String {
    let mut text = String::from("==== iptables -t nat, KOMMIT rules\n");
    match Command::new("iptables-save").args(["-t", "nat"]).output() {
        Ok(o) if o.status.success() => {
            let rules: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains("KOMMIT"))
                .map(str::to_owned)
                .collect();
            if rules.is_empty() {
                text.push_str("(none)\n");
            }
            for r in rules {
                text.push_str(&r);
                text.push('\n');
            }
        }
        Ok(o) => text.push_str(&format!(
            "(iptables-save failed: {})\n",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => text.push_str(&format!("(cannot run iptables-save: {e})\n")),
    }
    text.push_str("==== nft list table ip kommit\n");
    match Command::new("nft")
        .args(["list", "table", "ip", "kommit"])
        .output()
    {
        Ok(o) if o.status.success() => text.push_str(&String::from_utf8_lossy(&o.stdout)),
        Ok(_) => text.push_str("(none)\n"),
        Err(e) => text.push_str(&format!("(cannot run nft: {e})\n")),
    }
    text
}

/// Waits until no other kommit on this machine (another test run) owns the proxy rules,
/// so a test in `--proxy-mode iptables|nftables` is not refused.
pub fn wait_for_free_proxy_lock(timeout: Duration) {
    let start = Instant::now();
    while !Command::new("flock")
        .args(["-n", "/run/kommit-proxy.lock", "true"])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            start.elapsed() < timeout,
            "another kommit kept the proxy rules for {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
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
