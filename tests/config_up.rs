//! `kommit up` end to end on Docker: a ConfigMap mounted as a file and served by the demo
//! server, read over HTTP from the host; a commit changing the ConfigMap updates the file
//! in the running pod (no restart), and rolls the pods of a Deployment annotated
//! `kommit.dev/restart-on-config-change: "true"`.
#![allow(clippy::unwrap_used)]

mod support;
#[path = "up_support.rs"]
mod up_support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::GitRepo;
use up_support::{DockerCleanup, ProcessCleanup, Up, node_name};

const T: Duration = Duration::from_secs(90);

/// A Deployment of the demo server on `port`; with `host_port`, published on the host's
/// loopback (one pod at a time: the rollout stops the old pod before starting the new).
fn deployment(name: &str, restart_on_change: bool, port: u16, host_port: Option<u16>) -> String {
    let annotations = if restart_on_change {
        "  annotations:\n    kommit.dev/restart-on-config-change: \"true\"\n"
    } else {
        ""
    };
    let (strategy, ports) = match host_port {
        Some(hp) => (
            "  strategy:\n    rollingUpdate: {maxSurge: 0, maxUnavailable: 1}\n".to_string(),
            format!(
                "        ports:\n        - {{containerPort: {port}, hostPort: {hp}, hostIP: 127.0.0.1}}\n"
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: conf
{annotations}spec:
  replicas: 1
{strategy}  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: kommit.dev/demo:1
        args: [http, --port, \"{port}\", --payload-file, /etc/site/index]
{ports}        volumeMounts:
        - name: site
          mountPath: /etc/site
      volumes:
      - name: site
        configMap:
          name: site
          defaultMode: 0640
"
    )
}

fn manifests(index: &str, deployments: &str) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: conf
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: site
  namespace: conf
data:
  index: \"{index}\"
---
{deployments}"
    )
}

/// `GET http://<addr><path>` from the host; the body, or None.
fn http_get_at(addr: &str, path: &str) -> Option<String> {
    let ip = addr;
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_string())
}

/// The running pod of Deployment `app`: (name, pod IP, container id, restart count).
fn running_pod(up: &Up, app: &str) -> Option<(String, String, String, i64)> {
    let pods: Vec<_> = up
        .running_pods("conf")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == app)
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    let [p] = pods.as_slice() else {
        return None;
    };
    let c = &p["status"]["containerStatuses"][0];
    c["state"]["running"].as_object()?;
    Some((
        p["metadata"]["name"].as_str()?.to_string(),
        p["status"]["podIP"].as_str()?.to_string(),
        c["containerID"].as_str()?.to_string(),
        c["restartCount"].as_i64()?,
    ))
}

#[test]
fn config_map_files_update_in_place_or_roll_when_annotated() {
    let node = node_name("config-up");
    let _cleanup = DockerCleanup(node.clone());
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    let (plain_port, rolled_port) = (up_support::free_port(), up_support::free_port());
    let both = format!(
        "{}---\n{}",
        deployment("plain", false, 8080, Some(plain_port)),
        deployment("rolled", true, 8080, Some(rolled_port))
    );
    let plain_addr = format!("127.0.0.1:{plain_port}");
    let rolled_addr = format!("127.0.0.1:{rolled_port}");
    repo.write("app.yaml", &manifests("version one", &both));
    repo.commit("site v1");

    let mut up = Up::start(repo.path(), data.path(), "docker", &node);
    up.wait_line("accepted", T);
    let mut first = Vec::new();
    for (app, addr) in [("plain", &plain_addr), ("rolled", &rolled_addr)] {
        let mut pod = None;
        up.wait_for(&format!("{app} serves the mounted ConfigMap"), T, || {
            pod = running_pod(&up, app);
            pod.is_some() && http_get_at(addr, "/payload").as_deref() == Some("version one")
        });
        first.push(pod.unwrap());
    }
    let (plain, rolled) = (first[0].clone(), first[1].clone());

    repo.write("app.yaml", &manifests("version two", &both));
    repo.commit("site v2");

    // The plain Deployment: the same pod and container serve the new file.
    up.wait_for("plain serves the changed ConfigMap", T, || {
        http_get_at(&plain_addr, "/payload").as_deref() == Some("version two")
    });
    let now = running_pod(&up, "plain").unwrap();
    assert_eq!(now.0, plain.0, "same pod");
    assert_eq!(now.2, plain.2, "same container");
    assert_eq!(now.3, 0, "no restart");

    // The annotated Deployment: a new pod serves the new file.
    let mut next = None;
    up.wait_for("rolled is replaced by a pod serving the change", T, || {
        next = running_pod(&up, "rolled");
        next.as_ref().is_some_and(|p| {
            p.0 != rolled.0
                && http_get_at(&rolled_addr, "/payload").as_deref() == Some("version two")
        })
    });
    up.wait_for("the old rolled pod is gone", T, || {
        up.etcd_values("/registry/pods/conf/")
            .iter()
            .all(|p| p["metadata"]["name"] != rolled.0.as_str())
    });
    let next = next.unwrap();
    up.wait_for("the new rolled pod serves the change", T, || {
        running_pod(&up, "rolled").is_some_and(|p| p.0 == next.0)
            && http_get_at(&rolled_addr, "/payload").as_deref() == Some("version two")
    });
    // Rolling one Deployment left the other alone.
    assert_eq!(running_pod(&up, "plain").unwrap().2, plain.2);
    up.stop();
}

/// The process runtime has no mount namespace: the demo server's `--payload-file
/// /etc/site/index` is rewritten to the file on the node, which a commit updates in place.
#[test]
fn config_map_files_update_in_place_on_the_process_runtime() {
    let node = node_name("config-proc");
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    let _processes = ProcessCleanup(data.path().to_path_buf());
    let port = up_support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let plain = deployment("plain", false, port, None);
    repo.write("app.yaml", &manifests("version one", &plain));
    repo.commit("site v1");

    let mut up = Up::start(repo.path(), data.path(), "process", &node);
    up.wait_line("accepted", T);
    let mut first = None;
    up.wait_for("the pod serves the mounted ConfigMap", T, || {
        first = running_pod(&up, "plain");
        first.is_some() && http_get_at(&addr, "/payload").as_deref() == Some("version one")
    });
    let first = first.unwrap();
    // The file on the node, with `defaultMode: 0640` read as octal, as Kubernetes does.
    let uid = up.etcd_values("/registry/pods/conf/")[0]["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let file = data
        .path()
        .join("node/pods")
        .join(&uid)
        .join("volumes/kubernetes.io~configmap/site/index");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "{}", file.display());

    repo.write("app.yaml", &manifests("version two", &plain));
    repo.commit("site v2");
    up.wait_for("the pod serves the changed ConfigMap", T, || {
        http_get_at(&addr, "/payload").as_deref() == Some("version two")
    });
    let now = running_pod(&up, "plain").unwrap();
    assert_eq!(
        (&now.0, &now.2, now.3),
        (&first.0, &first.2, 0),
        "same pod, no restart"
    );

    // The Deployment goes: its process stops and the pod's files are removed.
    repo.write("app.yaml", &manifests("version two", ""));
    repo.commit("no deployment");
    let pods_dir = data.path().join("node").join("pods");
    up.wait_for("the pod and its files removed", T, || {
        up.etcd_values("/registry/pods/conf/").is_empty()
            && std::fs::read_dir(&pods_dir).is_ok_and(|mut d| d.next().is_none())
    });
    assert!(
        http_get_at(&addr, "/payload").is_none(),
        "the server stopped"
    );
    up.stop();
}
