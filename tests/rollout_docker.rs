//! Rollouts gated by readiness probes, and a liveness restart, on the real Docker engine
//! with the real `kommit` binary. A sampler thread reads the pods through etcdctl during
//! the whole rollout and checks what maxSurge 1 / maxUnavailable 0 promise: never fewer
//! than 4 ready pods, never more than 5 pods.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
#[path = "up_support.rs"]
mod up_support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::GitRepo;
use up_support::{DockerCleanup, Up, node_name};

const T: Duration = Duration::from_secs(120);

/// The cluster: `web` (4 replicas, readiness probe on /ready) and `flaky` (its /healthz
/// fails 3 s after start; a liveness probe restarts it).
fn manifests(version: &str, extra_args: &str) -> String {
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
  replicas: 4
  progressDeadlineSeconds: 10
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: kommit.dev/demo:1
        args: [http, --port, \"8080\", --payload, \"{version}\"{extra_args}]
        ports:
        - {{name: http, containerPort: 8080}}
        readinessProbe:
          httpGet: {{path: /ready, port: http}}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: flaky
  namespace: hello
spec:
  replicas: 1
  selector:
    matchLabels: {{app: flaky}}
  template:
    metadata:
      labels: {{app: flaky}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: flaky
        image: kommit.dev/demo:1
        args: [flip-health, --port, \"8080\", --after, \"3\"]
        livenessProbe:
          httpGet: {{path: /healthz, port: 8080}}
          periodSeconds: 1
          failureThreshold: 2
"
    )
}

fn pods(up: &Up, app: &str) -> Vec<serde_json::Value> {
    up.etcd_values("/registry/pods/hello/")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == app)
        .collect()
}

fn is_ready(p: &serde_json::Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn payload_arg(p: &serde_json::Value) -> String {
    let args = p["spec"]["containers"][0]["args"].as_array().unwrap();
    let i = args.iter().position(|a| a == "--payload").unwrap();
    args[i + 1].as_str().unwrap().to_string()
}

/// Ready pods by the version they run.
fn ready_versions(up: &Up) -> Vec<String> {
    let mut v: Vec<String> = pods(up, "web")
        .iter()
        .filter(|p| is_ready(p))
        .map(payload_arg)
        .collect();
    v.sort();
    v
}

fn deployment(up: &Up, name: &str) -> serde_json::Value {
    up.etcd_values(&format!("/registry/deployments/hello/{name}"))
        .into_iter()
        .next()
        .unwrap_or_default()
}

fn condition(d: &serde_json::Value, type_: &str) -> serde_json::Value {
    d["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or_default()
}

/// GET http://ip:8080/payload.
fn get_payload(ip: &str) -> String {
    let mut s = std::net::TcpStream::connect((ip, 8080)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /payload HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
}

/// What the sampler saw.
#[derive(Debug, Default)]
struct Seen {
    samples: usize,
    min_ready: Option<(usize, String)>,
    max_total: Option<(usize, String)>,
}

#[test]
fn rolling_update_is_gated_by_readiness_and_liveness_restarts() {
    let node = node_name("rollout-docker");
    let _cleanup = DockerCleanup(node.clone());
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    repo.write("app.yaml", &manifests("v1", ""));
    repo.commit("v1");
    let up = Up::start(repo.path(), data.path(), "docker", &node);
    up.wait_line("accepted", T);
    up.wait_for("4 ready v1 pods", T, || ready_versions(&up) == ["v1"; 4]);

    // A sampler reads the pods through etcdctl from now on.
    let up = Arc::new(up);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sampler = {
        let (up, stop, seen) = (up.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let all = pods(&up, "web");
                let ready = all.iter().filter(|p| is_ready(p)).count();
                let what = || {
                    all.iter()
                        .map(|p| {
                            format!(
                                "{} {} ready={}",
                                p["metadata"]["name"].as_str().unwrap_or(""),
                                payload_arg(p),
                                is_ready(p)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut s = seen.lock().unwrap();
                s.samples += 1;
                if s.min_ready.as_ref().is_none_or(|(m, _)| ready < *m) {
                    s.min_ready = Some((ready, what()));
                }
                if s.max_total.as_ref().is_none_or(|(m, _)| all.len() > *m) {
                    s.max_total = Some((all.len(), what()));
                }
                drop(s);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // v2 rolls out pod by pod.
    repo.write("app.yaml", &manifests("v2", ""));
    repo.commit("v2");
    up.wait_for("4 ready v2 pods, nothing else", T, || {
        pods(&up, "web").len() == 4 && ready_versions(&up) == ["v2"; 4]
    });
    let d = deployment(&up, "web");
    assert_eq!(d["status"]["availableReplicas"], 4, "{d}");
    assert_eq!(d["status"]["readyReplicas"], 4, "{d}");

    // v3 never gets ready: the rollout stops at one surge pod and times out; v2 serves on.
    repo.write("app.yaml", &manifests("v3", ", --never-ready"));
    repo.commit("v3 never ready");
    up.wait_for("Progressing False with ProgressDeadlineExceeded", T, || {
        let c = condition(&deployment(&up, "web"), "Progressing");
        c["status"] == "False" && c["reason"] == "ProgressDeadlineExceeded"
    });
    let all = pods(&up, "web");
    let versions: BTreeSet<String> = all.iter().map(payload_arg).collect();
    assert_eq!(all.len(), 5, "4 old pods and one surge pod: {all:?}");
    assert_eq!(ready_versions(&up), ["v2"; 4]);
    assert!(versions.contains("v3"), "{versions:?}");
    for p in all.iter().filter(|p| is_ready(p)) {
        let ip = p["status"]["podIP"].as_str().unwrap();
        assert_eq!(get_payload(ip), "v2", "old pod {ip} still serves");
    }
    let v3 = all.iter().find(|p| payload_arg(p) == "v3").unwrap();
    let cs = &v3["status"]["containerStatuses"][0];
    assert_eq!(cs["ready"], false, "{cs}");
    assert!(cs["state"]["running"].is_object(), "it runs, unready: {cs}");

    // A good commit recovers.
    repo.write("app.yaml", &manifests("v4", ""));
    repo.commit("v4");
    up.wait_for("4 ready v4 pods, nothing else", T, || {
        pods(&up, "web").len() == 4 && ready_versions(&up) == ["v4"; 4]
    });
    up.wait_for("Progressing True again", T, || {
        condition(&deployment(&up, "web"), "Progressing")["status"] == "True"
    });

    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.samples > 20, "the sampler ran: {seen:?}");
    let (min_ready, at) = seen.min_ready.clone().unwrap();
    assert!(min_ready >= 4, "{min_ready} ready pods at one point: {at}");
    let (max_total, at) = seen.max_total.clone().unwrap();
    assert!(max_total <= 5, "{max_total} pods at one point: {at}");
    assert_eq!(max_total, 5, "the rollout used its surge pod");

    // Meanwhile `flaky` failed its liveness probe and was restarted.
    up.wait_for("flaky restarted after a liveness failure", T, || {
        pods(&up, "flaky").iter().any(|p| {
            let cs = &p["status"]["containerStatuses"][0];
            cs["restartCount"].as_i64().unwrap_or(0) >= 1
                && cs["lastState"]["terminated"].is_object()
        })
    });
    // Killed again and again, it backs off: CrashLoopBackOff, as with any crash.
    up.wait_for("flaky in CrashLoopBackOff", T, || {
        pods(&up, "flaky").iter().any(|p| {
            let cs = &p["status"]["containerStatuses"][0];
            cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && cs["restartCount"].as_i64().unwrap_or(0) >= 2
                && cs["lastState"]["terminated"].is_object()
        })
    });
    let events = up.etcd_values("/registry/events/hello/");
    let messages: Vec<String> = events
        .iter()
        .filter(|e| {
            e["involvedObject"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("flaky-")
        })
        .map(|e| {
            format!(
                "{}: {}",
                e["reason"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        messages.iter().any(|m| m.starts_with(
            "Unhealthy: Liveness probe failed: HTTP probe failed with statuscode: 500"
        )),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m == "Killing: Container flaky failed liveness probe, will be restarted"),
        "{messages:#?}"
    );
}
