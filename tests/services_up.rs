//! Services end to end through the real `kommit up`: cluster IPs and node ports
//! allocated, Endpoints from ready pods, the proxy programming the host (iptables mode,
//! Docker runtime) or proxying in-process (userspace mode, process runtime).
#![allow(clippy::unwrap_used)]

mod support;
#[path = "up_support.rs"]
mod up_support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use support::GitRepo;
use up_support::{DockerCleanup, Up, docker_containers, free_port, node_name};

const T: Duration = Duration::from_secs(120);

fn web(replicas: u32) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: svc
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: svc
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
        args: [http, --port, \"8080\"]
        ports:
        - {{name: http, containerPort: 8080}}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: svc
spec:
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: http
---
apiVersion: v1
kind: Service
metadata:
  name: web-np
  namespace: svc
spec:
  type: NodePort
  selector: {{app: web}}
  ports:
  - port: 8080
    nodePort: 31080
"
    )
}

const CLIENT: &str = "---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: svc
spec:
  containers:
  - name: client
    image: kommit.dev/demo:1
    args: [sleep]
";

/// `GET path` over plain HTTP/1.0; the body.
fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default())
}

/// The stored Service `svc/name`.
fn service(up: &Up, name: &str) -> serde_json::Value {
    up.etcd_values(&format!("/registry/services/specs/svc/{name}"))
        .into_iter()
        .find(|s| s["metadata"]["name"] == name)
        .unwrap_or(serde_json::Value::Null)
}

/// Ready endpoint addresses of `svc/name` (core/v1 Endpoints).
fn ready_endpoints(up: &Up, name: &str) -> Vec<(String, String)> {
    up.etcd_values(&format!("/registry/services/endpoints/svc/{name}"))
        .into_iter()
        .filter(|e| e["metadata"]["name"] == name)
        .flat_map(|e| e["subsets"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            (
                a["ip"].as_str().unwrap_or_default().to_string(),
                a["targetRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// A shell command printing the body of `GET /hostname` from `host:port` (busybox's
/// `nc`: the image's busybox `wget` crashes).
fn get(addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    format!("printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} {port} | tail -n 1")
}

/// Runs a shell command in the client pod's container; its output.
fn in_client(node: &str, script: &str) -> String {
    let id = docker_containers(node)
        .into_iter()
        .find(|(_, pod)| pod == "client")
        .map(|(id, _)| id)
        .expect("the client container runs");
    let out = Command::new("docker")
        .args(["exec", &id, "sh", "-c", script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kommit_chains() -> Vec<String> {
    let out = Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("KOMMIT-"))
        .map(str::to_string)
        .collect()
}

/// Makes sure no kommit rule survives a failed test.
struct ProxyCleanup;

impl Drop for ProxyCleanup {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_kommit"))
            .args(["proxy", "cleanup"])
            .output();
    }
}

#[test]
fn docker_pods_reach_services_by_cluster_ip_env_and_node_port() {
    let node = node_name("svc-docker");
    let _docker = DockerCleanup(node.clone());
    let _rules = ProxyCleanup;
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    repo.write("app.yaml", &web(3));
    repo.commit("web and its Services");

    let mut up = Up::start_with(
        repo.path(),
        data.path(),
        "docker",
        &node,
        &["--proxy-mode", "iptables"],
    );
    up.wait_line("proxy: iptables mode", T);
    up.wait_for("3 ready endpoints", T, || {
        ready_endpoints(&up, "web").len() == 3
    });
    let svc = service(&up, "web");
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(
        ip.starts_with("198.19."),
        "cluster IP {ip} in the default range"
    );
    let np = service(&up, "web-np");
    assert_eq!(np["spec"]["ports"][0]["nodePort"], 31080);

    // The client starts once the Service exists, so it gets the Service's variables.
    repo.write("app.yaml", &format!("{}{CLIENT}", web(3)));
    repo.commit("a client");
    up.wait_for("the client runs", T, || {
        docker_containers(&node).iter().any(|(_, p)| p == "client")
    });
    let env = in_client(&node, "echo $WEB_SERVICE_HOST:$WEB_SERVICE_PORT $WEB_PORT");
    assert_eq!(env.trim(), format!("{ip}:80 tcp://{ip}:80"));

    // By env var and by cluster IP, from the container: spread over all three pods.
    let names: BTreeSet<String> = ready_endpoints(&up, "web")
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    let mut seen = BTreeSet::new();
    up.wait_for("requests through the cluster IP reach every pod", T, || {
        let out = in_client(
            &node,
            &format!(
                "for i in $(seq 30); do {}; echo; done",
                get("$WEB_SERVICE_HOST:$WEB_SERVICE_PORT")
            ),
        );
        seen.extend(
            out.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from),
        );
        seen == names
    });
    let direct = in_client(&node, &get(&format!("{ip}:80")));
    assert!(
        names.contains(direct.trim()),
        "{direct:?} is one of {names:?}"
    );

    // From the host: the cluster IP, and the node port on loopback.
    let from_host = http_get(&format!("{ip}:80"), "/hostname").unwrap();
    assert!(
        names.contains(&from_host),
        "{from_host:?} is one of {names:?}"
    );
    let by_node_port = http_get("127.0.0.1:31080", "/hostname").unwrap();
    assert!(names.contains(&by_node_port), "{by_node_port:?}");

    // Scale down: the removed pods get no more requests.
    repo.write("app.yaml", &format!("{}{CLIENT}", web(1)));
    repo.commit("one replica");
    up.wait_for("1 ready endpoint", T, || {
        ready_endpoints(&up, "web").len() == 1
    });
    let (_, left) = ready_endpoints(&up, "web").remove(0);
    up.wait_for("every request reaches the remaining pod", T, || {
        let out = in_client(
            &node,
            &format!(
                "for i in $(seq 20); do {}; echo; done",
                get("$WEB_SERVICE_HOST:80")
            ),
        );
        let got: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        got.len() == 20 && got.iter().all(|n| *n == left)
    });

    // A clean stop removes every kommit rule.
    assert!(!kommit_chains().is_empty(), "rules while running");
    up.stop();
    assert!(up.text().contains("stopped"), "{}", up.text());
    assert_eq!(
        kommit_chains(),
        Vec::<String>::new(),
        "no kommit rules after the stop"
    );
}

#[test]
fn process_pods_are_reached_through_a_userspace_node_port() {
    let node = node_name("svc-process");
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    // A node port nobody uses on this host: free now, and in the node port range.
    let node_port = (31100..31900)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .unwrap();
    repo.write(
        "app.yaml",
        &format!(
            "apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 1
  selector:
    matchLabels: {{app: echo}}
  template:
    metadata:
      labels: {{app: echo}}
    spec:
      containers:
      - name: echo
        image: kommit.dev/demo:1
        args: [http, --port, \"{port}\"]
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  type: NodePort
  selector: {{app: echo}}
  ports:
  - port: 80
    targetPort: {port}
    nodePort: {node_port}
"
        ),
    );
    repo.commit("echo");
    let mut up = Up::start_with(
        repo.path(),
        data.path(),
        "process",
        &node,
        &["--proxy-mode", "userspace"],
    );
    up.wait_line("proxy: userspace mode", T);
    up.wait_for("a ready endpoint", T, || {
        !up.etcd_values("/registry/services/endpoints/default/echo")
            .into_iter()
            .flat_map(|e| e["subsets"].as_array().cloned().unwrap_or_default())
            .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
            .collect::<Vec<_>>()
            .is_empty()
    });
    let pod = up
        .running_pods("default")
        .into_iter()
        .find(|p| p["metadata"]["labels"]["app"] == "echo")
        .unwrap();
    let name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let mut got = String::new();
    up.wait_for("a request through the Service's node port", T, || {
        got = http_get(&format!("127.0.0.1:{node_port}"), "/hostname").unwrap_or_default();
        !got.is_empty()
    });
    assert_eq!(got, name);

    repo.write(
        "app.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: done\n",
    );
    repo.commit("remove echo");
    up.wait_for("the pod removed", T, || {
        up.etcd_values("/registry/pods/default/").is_empty()
    });
    up.stop();
}
