//! Services end to end through the real `kommit up`: cluster IPs and node ports
//! allocated, Endpoints from ready pods, the proxy programming the host (iptables and
//! nftables modes, Docker runtime) or proxying in-process (userspace mode, process
//! runtime).
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
use up_support::{
    DockerCleanup, ProcessCleanup, ProxyCleanup, Up, docker_containers, free_port, node_name,
    wait_for_free_proxy_lock,
};

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
---
apiVersion: v1
kind: Service
metadata:
  name: web-lb
  namespace: svc
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports:
  - port: 18080
    targetPort: http
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

/// kommit's rules on the host in `mode`: the nat table's KOMMIT- lines, or the lines
/// of the nftables table.
fn kommit_rules(mode: &str) -> Vec<String> {
    let out = match mode {
        "nftables" => Command::new("nft")
            .args(["list", "table", "ip", "kommit"])
            .output()
            .unwrap(),
        _ => Command::new("iptables-save")
            .args(["-t", "nat"])
            .output()
            .unwrap(),
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| mode == "nftables" || l.contains("KOMMIT-"))
        .map(str::to_string)
        .collect()
}

/// One kommit at a time owns the host's proxy rules: the two modes take turns.
static HOST_RULES: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn docker_pods_reach_services_by_cluster_ip_env_and_node_port() {
    let _turn = HOST_RULES.lock().unwrap_or_else(|e| e.into_inner());
    docker_pods_reach_services("iptables");
}

#[test]
fn docker_pods_reach_services_through_nftables() {
    let _turn = HOST_RULES.lock().unwrap_or_else(|e| e.into_inner());
    docker_pods_reach_services("nftables");
}

fn docker_pods_reach_services(mode: &str) {
    let node = node_name(&format!("svc-{mode}"));
    let _docker = DockerCleanup(node.clone());
    let _rules = ProxyCleanup;
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    repo.write("app.yaml", &web(3));
    repo.commit("web and its Services");

    // Another kommit on this machine (another test run) may own the chains for a while.
    wait_for_free_proxy_lock(T);
    let mut up = Up::start_with(
        repo.path(),
        data.path(),
        "docker",
        &node,
        &["--proxy-mode", mode],
    );
    up.wait_for("the proxy starts", T, || {
        let text = up.text();
        text.contains("proxy: ") || text.contains("error")
    });
    assert!(
        up.text().contains(&format!("proxy: {mode} mode")),
        "{}",
        up.text()
    );
    // One kommit owns the rules: a second one in either mode is refused, and so is a
    // cleanup that is not forced.
    let other = tempfile::tempdir().unwrap();
    let second = Command::new(env!("CARGO_BIN_EXE_kommit"))
        .arg("up")
        .arg(repo.path())
        .args(["--data-dir", other.path().to_str().unwrap()])
        .args(["--runtime", "process", "--etcd-listen", "127.0.0.1:0"])
        .args(["--proxy-mode", "iptables"])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another kommit owns the proxy rules"), "{err}");
    let cleanup = Command::new(env!("CARGO_BIN_EXE_kommit"))
        .args(["proxy", "cleanup"])
        .output()
        .unwrap();
    assert!(!cleanup.status.success());
    assert!(String::from_utf8_lossy(&cleanup.stderr).contains("another kommit"));
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
    // One request at a time may come back empty (a connection reset while Docker
    // edits its own rules); it is the answer that is checked, not a single try.
    let mut direct = String::new();
    up.wait_for("a request to the cluster IP answers", T, || {
        direct = in_client(&node, &get(&format!("{ip}:80")))
            .trim()
            .to_owned();
        !direct.is_empty()
    });
    assert!(names.contains(&direct), "{direct:?} is one of {names:?}");

    // From the host: the cluster IP, and the node port on loopback.
    let from_host = http_get(&format!("{ip}:80"), "/hostname").unwrap();
    assert!(
        names.contains(&from_host),
        "{from_host:?} is one of {names:?}"
    );
    let by_node_port = http_get("127.0.0.1:31080", "/hostname").unwrap();
    assert!(names.contains(&by_node_port), "{by_node_port:?}");
    // The LoadBalancer's ingress is the node's address, and answers at the Service port
    // there, as `kubectl get svc` shows it (EXTERNAL-IP:PORT).
    let lb = service(&up, "web-lb");
    let ingress = lb["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .unwrap_or_else(|| panic!("web-lb has an ingress IP: {lb}"))
        .to_owned();
    let by_lb = http_get(&format!("{ingress}:18080"), "/hostname").unwrap();
    assert!(names.contains(&by_lb), "{by_lb:?}");

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
    assert!(!kommit_rules(mode).is_empty(), "rules while running");
    up.stop();
    assert!(up.text().contains("stopped"), "{}", up.text());
    assert_eq!(
        kommit_rules(mode),
        Vec::<String>::new(),
        "no kommit rules after the stop"
    );
}

#[test]
fn process_pods_are_reached_through_a_userspace_node_port() {
    let node = node_name("svc-process");
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    let _processes = ProcessCleanup(data.path().to_path_buf());
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

    // A restart keeps the Service's addresses (they are kept in the cache).
    let stored = |up: &Up| {
        up.etcd_values("/registry/services/specs/default/echo")
            .into_iter()
            .find(|s| s["metadata"]["name"] == "echo")
            .map(|s| s["spec"].clone())
            .unwrap()
    };
    let before = stored(&up);
    assert!(before["clusterIP"].as_str().unwrap().starts_with("198.19."));
    up.stop();
    let mut up = Up::start_with(
        repo.path(),
        data.path(),
        "process",
        &node,
        &["--proxy-mode", "userspace"],
    );
    up.wait_line("resuming at applied commit", T);
    up.wait_for("the request answered again", T, || {
        http_get(&format!("127.0.0.1:{node_port}"), "/hostname").is_ok_and(|b| b == name)
    });
    let after = stored(&up);
    assert_eq!(after["clusterIP"], before["clusterIP"]);
    assert_eq!(after["ports"], before["ports"]);

    // kubectl sees the allocation and the ready endpoint through the read-only API.
    up.wait_line("Kubernetes API: https://127.0.0.1:", T);
    let home = tempfile::tempdir().unwrap();
    let config = Command::new(env!("CARGO_BIN_EXE_kommit"))
        .args(["kubeconfig", "--data-dir", data.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(config.status.success());
    let file = home.path().join("kubeconfig");
    std::fs::write(&file, &config.stdout).unwrap();
    let kubectl = |args: &[&str]| {
        let o = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&file)
            .args(args)
            .env("HOME", home.path())
            .env("KUBECACHEDIR", home.path().join("cache"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(
        kubectl(&[
            "get",
            "svc",
            "echo",
            "-o",
            "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}"
        ]),
        format!("{} {node_port}", before["clusterIP"].as_str().unwrap())
    );
    assert_eq!(
        kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=echo",
            "-o",
            "jsonpath={.items[*].endpoints[*].conditions.ready}"
        ]),
        "true"
    );

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

fn cluster_ip_service(name: &str, ip: &str) -> String {
    format!(
        "---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  clusterIP: {ip}
  ports:
  - port: 80
"
    )
}

#[test]
fn clashing_or_out_of_range_addresses_reject_the_commit_whole() {
    let repo = GitRepo::init();
    repo.write("a.yaml", &cluster_ip_service("a", "198.19.0.20"));
    repo.commit("a");
    let data = tempfile::tempdir().unwrap();
    let _processes = ProcessCleanup(data.path().to_path_buf());
    let node = node_name("svc-reject");
    let mut up = Up::start_with(
        repo.path(),
        data.path(),
        "process",
        &node,
        &["--proxy-mode", "none"],
    );
    up.wait_line("proxy: none", T);
    up.wait_for("a's address stored", T, || {
        up.etcd_values("/registry/services/specs/default/a")
            .iter()
            .any(|s| s["spec"]["clusterIP"] == "198.19.0.20")
    });

    // b claims a's address, c one outside the range: the commit is rejected whole.
    repo.write("b.yaml", &cluster_ip_service("b", "198.19.0.20"));
    repo.write("c.yaml", &cluster_ip_service("c", "10.1.2.3"));
    repo.commit("clash");
    up.wait_line("rejected", T);
    let text = up.text();
    for line in [
        "a.yaml:7:14: spec.clusterIP: clusterIP 198.19.0.20 is also claimed by Service default/b (b.yaml)",
        "b.yaml:7:14: spec.clusterIP: clusterIP 198.19.0.20 is also claimed by Service default/a (a.yaml)",
        "c.yaml:7:14: spec.clusterIP: clusterIP 10.1.2.3 is outside the service range 198.19.0.0/16",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    std::thread::sleep(Duration::from_secs(1));
    let names: BTreeSet<String> = up
        .etcd_values("/registry/services/specs/default/")
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["a".to_string()]),
        "nothing of the commit applied"
    );
    up.stop();

    // `kommit validate` says the same, and follows --service-cidr.
    let validate = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kommit"))
            .args(["validate", "--repo", repo.path().to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = validate(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("c.yaml:7:14: spec.clusterIP"));
    repo.remove("b.yaml");
    repo.commit("no clash");
    assert_eq!(
        validate(&[]).status.code(),
        Some(1),
        "10.1.2.3 is outside the default range"
    );
    let o = validate(&["--service-cidr", "10.0.0.0/8"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "198.19.0.20 is outside 10.0.0.0/8"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains(
        "a.yaml:7:14: spec.clusterIP: clusterIP 198.19.0.20 is outside the service range 10.0.0.0/8"
    ));
    repo.write("a.yaml", &cluster_ip_service("a", "10.0.0.20"));
    repo.commit("both in 10/8");
    assert_eq!(
        validate(&["--service-cidr", "10.0.0.0/8"]).status.code(),
        Some(0)
    );
    let o = validate(&["--service-cidr", "10.0.0.1/8"]);
    assert_eq!(o.status.code(), Some(2), "a bad range is a usage error");
}

/// A kommit killed while it owns the host's proxy rules leaves them behind;
/// `kommit proxy cleanup` removes them, in both rule modes, and finds nothing the
/// second time.
#[test]
fn proxy_cleanup_removes_what_a_killed_kommit_left() {
    let _turn = HOST_RULES.lock().unwrap_or_else(|e| e.into_inner());
    let _rules = ProxyCleanup;
    for (mode, removed) in [
        ("iptables", "deleted chain nat/KOMMIT-SERVICES"),
        ("nftables", "deleted nftables table ip kommit"),
    ] {
        let node = node_name(&format!("svc-kill-{mode}"));
        let repo = GitRepo::init();
        let data = tempfile::tempdir().unwrap();
        let _processes = ProcessCleanup(data.path().to_path_buf());
        repo.write("web.yaml", &cluster_ip_service("web", "198.19.0.10"));
        repo.commit("a Service");
        wait_for_free_proxy_lock(T);
        let mut up = Up::start_with(
            repo.path(),
            data.path(),
            "process",
            &node,
            &["--proxy-mode", mode],
        );
        up.wait_line(&format!("proxy: {mode} mode"), T);
        up.wait_for("the proxy's rules", T, || !kommit_rules(mode).is_empty());
        up.kill();
        assert!(
            !kommit_rules(mode).is_empty(),
            "{mode}: a killed kommit leaves its rules"
        );
        let cleanup = || {
            let out = Command::new(env!("CARGO_BIN_EXE_kommit"))
                .args(["proxy", "cleanup"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let first = cleanup();
        assert!(first.contains(removed), "{mode}: {first}");
        assert_eq!(kommit_rules(mode), Vec::<String>::new(), "{mode}");
        let second = cleanup();
        assert!(second.contains("no kommit rules (V4)"), "{mode}: {second}");
    }
}
