//! examples/dockercoins through the real `kommit up` (Docker runtime, iptables and
//! nftables proxy, cluster DNS): pods find each other by Service name, webui shows a
//! hashing rate, scaling worker raises it, and a hasher whose new pods never get ready
//! keeps serving.
#![allow(clippy::unwrap_used)]

mod support;
#[path = "up_support.rs"]
mod up_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::GitRepo;
use up_support::{
    DockerCleanup, ProxyCleanup, Up, docker_containers, node_name, wait_for_free_proxy_lock,
};

const T: Duration = Duration::from_secs(120);
const FILES: [&str; 5] = [
    "namespace.yaml",
    "rng.yaml",
    "hasher.yaml",
    "worker.yaml",
    "webui.yaml",
];

fn example(file: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/dockercoins");
    std::fs::read_to_string(dir.join(file)).unwrap()
}

/// A repository holding the example, as a user would copy it.
fn repo_with_example() -> GitRepo {
    let repo = GitRepo::init();
    for f in FILES {
        repo.write(f, &example(f));
    }
    repo.commit("dockercoins");
    repo
}

fn kommit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kommit"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_example_validates() {
    let repo = repo_with_example();
    let out = kommit(&["validate", "--repo", repo.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("is valid: 8 objects in 5 files"), "{text}");
}

/// `GET path` over plain HTTP/1.0; the body, or `None` when it fails.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// webui's `/json` through its node port on the host.
fn webui() -> Option<serde_json::Value> {
    serde_json::from_str(&http_get("127.0.0.1:30080", "/json")?).ok()
}

fn rate() -> f64 {
    webui().and_then(|v| v["rate"].as_f64()).unwrap_or(0.0)
}

/// Runs a command in the first container of a pod whose name starts with `prefix`.
fn exec_in(node: &str, prefix: &str, cmd: &[&str]) -> (bool, String) {
    let id = docker_containers(node)
        .into_iter()
        .find(|(_, pod)| pod.starts_with(prefix))
        .map(|(id, _)| id)
        .unwrap_or_else(|| panic!("a {prefix} container runs"));
    let out = Command::new("docker")
        .arg("exec")
        .arg(&id)
        .args(cmd)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn fetch(node: &str, from: &str, url: &str) -> (bool, String) {
    exec_in(node, from, &["/kommit", "demo", "fetch", url])
}

/// Pods of a Deployment in the cache: (name, ready).
fn pods(up: &Up, app: &str) -> Vec<(String, bool)> {
    up.etcd_values("/registry/pods/dockercoins/")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == app)
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                ready,
            )
        })
        .collect()
}

/// One kommit at a time owns the host's proxy rules: the two modes take turns.
static HOST_RULES: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn dockercoins_mines_scales_and_survives_a_bad_hasher() {
    let _turn = HOST_RULES.lock().unwrap_or_else(|e| e.into_inner());
    dockercoins("iptables");
}

#[test]
fn dockercoins_through_the_nftables_proxy() {
    let _turn = HOST_RULES.lock().unwrap_or_else(|e| e.into_inner());
    dockercoins("nftables");
}

fn dockercoins(mode: &str) {
    let node = node_name(&format!("coins-{mode}"));
    let _docker = DockerCleanup(node.clone());
    let _rules = ProxyCleanup;
    let repo = repo_with_example();
    let data = tempfile::tempdir().unwrap();
    // Another kommit on this machine (another test run) may own the chains for a while.
    wait_for_free_proxy_lock(T);
    let mut up = Up::start_with(
        repo.path(),
        data.path(),
        "docker",
        &node,
        &["--proxy-mode", mode, "--dns-upstream", "none"],
    );
    up.wait_line(&format!("proxy: {mode} mode"), T);
    up.wait_line("pods with dnsPolicy ClusterFirst use it", T);

    // The worker reaches webui by its short name, and a full name resolves too.
    up.wait_for("webui answers through its node port", T, || {
        webui().is_some()
    });
    up.wait_for("a pod fetches webui by name", T, || {
        fetch(&node, "worker", "http://webui/json")
            .1
            .contains("\"rate\"")
    });
    // hasher may not be ready yet (its Service then has no endpoint and refuses): the
    // full name must answer once it is.
    let mut text = String::new();
    up.wait_for("a pod fetches hasher by its full name", T, || {
        let (ok, t) = fetch(
            &node,
            "worker",
            "http://hasher.dockercoins.svc.cluster.local/",
        );
        text = t;
        ok && text.starts_with("HASHER running on hasher-")
    });
    assert!(text.starts_with("HASHER running on hasher-"), "{text}");
    let (ok, conf) = exec_in(&node, "worker", &["cat", "/etc/resolv.conf"]);
    assert!(ok);
    assert!(
        conf.contains("search dockercoins.svc.cluster.local svc.cluster.local cluster.local"),
        "{conf}"
    );
    let (ok, text) = fetch(&node, "worker", "http://nope/");
    assert!(!ok, "an unknown name does not resolve: {text}");

    // rng answers what the worker asks for, by the worker's name for it.
    up.wait_for("a pod fetches random bytes from rng by name", T, || {
        fetch(&node, "worker", "http://rng/32").0
    });

    // One worker mines: the rate becomes positive. The baseline is the highest rate seen
    // over a full window (10 s) of one worker.
    up.wait_for("a hashing rate > 0", T, || rate() > 0.0);
    let start = Instant::now();
    let mut baseline: f64 = 0.0;
    while start.elapsed() < Duration::from_secs(12) {
        baseline = baseline.max(rate());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(baseline > 0.0);

    // Three workers mine faster.
    repo.write(
        "worker.yaml",
        &example("worker.yaml").replace("replicas: 1", "replicas: 3"),
    );
    repo.commit("three workers");
    up.wait_for("three workers report", T, || {
        webui().is_some_and(|v| v["workers"] == 3)
    });
    let mut three = 0.0;
    up.wait_for("the rate rises well above one worker's", T, || {
        three = rate();
        three > baseline * 1.8
    });
    eprintln!("hashing rate: one worker {baseline:.1}/s, three workers {three:.1}/s");

    // A hasher whose new pods never get ready: the old pod keeps serving.
    let old: Vec<String> = pods(&up, "hasher").into_iter().map(|(n, _)| n).collect();
    assert_eq!(old.len(), 1);
    repo.write(
        "hasher.yaml",
        &example("hasher.yaml").replace("path: /healthz", "path: /nope"),
    );
    repo.commit("hasher: a readiness probe that fails");
    up.wait_for("a new hasher pod runs and is not ready", T, || {
        let now = pods(&up, "hasher");
        now.iter().any(|(n, ready)| !old.contains(n) && !ready)
            && now.iter().any(|(n, ready)| old.contains(n) && *ready)
    });
    let hashes = |v: Option<serde_json::Value>| v.and_then(|v| v["hashes"].as_u64()).unwrap_or(0);
    let before = hashes(webui());
    up.wait_for("mining goes on through the old hasher", T, || {
        hashes(webui()) > before + 20
    });
    let now = pods(&up, "hasher");
    assert!(
        now.iter().any(|(n, ready)| old.contains(n) && *ready),
        "the old hasher pod is still ready: {now:?}"
    );
    assert!(
        now.iter().all(|(n, ready)| old.contains(n) || !ready),
        "the new one never got ready: {now:?}"
    );
    up.stop();
}
