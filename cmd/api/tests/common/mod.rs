//! A cluster for tests: a cache with observed objects, a snapshot from a real Git
//! repository, the API on a loopback socket, a kubeconfig for kubectl.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use kommit_api::{
    ApiState, AppliedRevision, LogError, LogRequest, LogSource, LogStream, ServeConfig, Server,
};
use kommit_cache::{Cache, PutRequest};
use serde_json::json;

use crate::support::GitRepo;

pub const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: hello\n";
pub const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: hello
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: hello:1
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: hello
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
";
pub const SETTINGS: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: hello\ndata:\n  greeting: hi\n";

/// A LogSource with three fixed lines per container.
pub struct FakeLogs;

#[async_trait::async_trait]
impl LogSource for FakeLogs {
    async fn logs(&self, r: LogRequest) -> Result<LogStream, LogError> {
        if r.container != "web" {
            return Err(LogError::NotFound(format!("no container {}", r.container)));
        }
        let lines = ["hello 1\n", "hello 2\n", "hello 3\n"];
        let skip = match r.tail_lines {
            Some(n) if (n as usize) < lines.len() => lines.len() - n as usize,
            _ => 0,
        };
        let items: Vec<Result<bytes::Bytes, std::io::Error>> = lines[skip..]
            .iter()
            .map(|l| Ok(bytes::Bytes::from_static(l.as_bytes())))
            .collect();
        Ok(Box::pin(futures::stream::iter(items)))
    }
}

pub struct Cluster {
    pub repo: GitRepo,
    pub commit: String,
    pub cache: Cache,
    pub data: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub url: String,
    pub applied: tokio::sync::watch::Sender<Option<Arc<AppliedRevision>>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

pub fn now() -> String {
    jiff::Timestamp::now().to_string()
}

pub fn pod(ns: &str, name: &str, phase: &str, node: &str, app: &str) -> serde_json::Value {
    let running = phase == "Running";
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
                     "labels": {"app": app}, "creationTimestamp": now()},
        "spec": {"nodeName": node, "containers": [{"name": "web", "image": "hello:1"}]},
        "status": {
            "phase": phase,
            "podIP": if running { "10.244.0.5" } else { "" },
            "containerStatuses": [{
                "name": "web", "image": "hello:1", "imageID": "", "ready": running, "restartCount": 0,
                "state": if running { json!({"running": {"startedAt": now()}}) } else { json!({"waiting": {"reason": "ContainerCreating"}}) }
            }]
        }
    })
}

async fn put(cache: &Cache, key: &str, v: serde_json::Value) {
    cache
        .put(PutRequest::new(
            key.to_string(),
            serde_json::to_vec(&v).unwrap(),
        ))
        .await
        .unwrap();
}

impl Cluster {
    pub async fn start() -> Cluster {
        let repo = GitRepo::init();
        repo.write("namespace.yaml", NS);
        repo.write("apps/web.yaml", WEB);
        repo.write("config/settings.yaml", SETTINGS);
        let commit = repo.commit("hello");
        let git = kommit_desired::open_repository(repo.path()).unwrap();
        let snapshot =
            kommit_desired::Snapshot::load(&git, "main", &kommit_desired::LoadOptions::default())
                .unwrap();
        let applied = Arc::new(AppliedRevision {
            commit: commit.clone(),
            repository: repo.path().display().to_string(),
            branch: "main".into(),
            snapshot: Arc::new(snapshot),
        });

        let cache = Cache::in_memory();
        put(&cache, "/registry/minions/n1", json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "uid": "node-n1", "creationTimestamp": now(), "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                       "nodeInfo": {"kubeletVersion": "v1.33.0-kommit", "osImage": "Debian", "kernelVersion": "6.1", "containerRuntimeVersion": "docker://27",
                                    "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}}
        })).await;
        put(
            &cache,
            "/registry/namespaces/hello",
            json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "hello", "uid": "ns-hello", "creationTimestamp": now()},
                "status": {"phase": "Active"}
            }),
        )
        .await;
        put(&cache, "/registry/deployments/hello/web", json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "hello", "uid": "dep-web", "generation": 1, "creationTimestamp": now(),
                         "annotations": {"deployment.kubernetes.io/revision": "1"}},
            "status": {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1, "observedGeneration": 1}
        })).await;
        put(&cache, "/registry/replicasets/hello/web-5d8f", json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-5d8f", "namespace": "hello", "uid": "rs-web", "creationTimestamp": now(),
                         "labels": {"app": "web", "pod-template-hash": "5d8f"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "dep-web", "controller": true}]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d8f"}},
                     "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "5d8f"}}, "spec": {"containers": [{"name": "web", "image": "hello:1"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1, "availableReplicas": 1}
        })).await;
        put(
            &cache,
            "/registry/pods/hello/web-5d8f-abcde",
            pod("hello", "web-5d8f-abcde", "Running", "n1", "web"),
        )
        .await;
        put(
            &cache,
            "/registry/pods/hello/web-5d8f-fghij",
            pod("hello", "web-5d8f-fghij", "Pending", "n1", "web"),
        )
        .await;
        put(
            &cache,
            "/registry/pods/default/other",
            pod("default", "other", "Pending", "n1", "other"),
        )
        .await;
        put(&cache, "/registry/events/hello/web-5d8f-abcde.1", json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web-5d8f-abcde.1", "namespace": "hello", "creationTimestamp": now()},
            "involvedObject": {"kind": "Pod", "namespace": "hello", "name": "web-5d8f-abcde", "uid": "uid-web-5d8f-abcde", "apiVersion": "v1"},
            "reason": "Scheduled", "message": "Successfully assigned hello/web-5d8f-abcde to n1", "type": "Normal",
            "source": {"component": "default-scheduler"}, "firstTimestamp": now(), "lastTimestamp": now(), "count": 1
        })).await;

        let (applied_tx, applied_rx) = tokio::sync::watch::channel(Some(applied));
        let state = ApiState {
            cache: cache.clone(),
            applied: applied_rx,
            logs: Some(Arc::new(FakeLogs)),
        };
        let data = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::new(data.path().to_path_buf());
        config.listen = "127.0.0.1:0".parse().unwrap();
        let server = Server::bind(config, state).await.unwrap();
        let url = server.url().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        let kubeconfig = data.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            kommit_api::kubeconfig(data.path(), None).unwrap(),
        )
        .unwrap();
        Cluster {
            repo,
            commit,
            cache,
            data,
            kubeconfig,
            url,
            applied: applied_tx,
            _shutdown: tx,
        }
    }

    pub async fn put_pod(&self, ns: &str, name: &str, phase: &str, node: &str) {
        put(
            &self.cache,
            &format!("/registry/pods/{ns}/{name}"),
            pod(ns, name, phase, node, "late"),
        )
        .await;
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd.env("KUBECACHEDIR", self.data.path().join("kubecache"));
        cmd.env("HOME", self.data.path());
        cmd
    }

    fn run(&self, mut cmd: Command) -> std::process::Output {
        std::thread::scope(|_| cmd.output().expect("kubectl runs"))
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.run(self.kubectl_cmd(args));
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn kubectl_err(&self, args: &[&str]) -> String {
        let out = self.run(self.kubectl_cmd(args));
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// kubectl with a given token instead of the admin one.
    pub fn kubectl_err_with(&self, args: &[&str], token: Option<&str>) -> String {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        if let Some(t) = token {
            cmd.arg("--token").arg(t);
        }
        cmd.args(args).env("HOME", self.data.path());
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn sh_ok(&self, script: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("HOME", self.data.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn curl(&self, args: &[&str], token: Option<&str>) -> String {
        let ca = self.data.path().join("pki/ca.crt");
        let mut cmd = Command::new("curl");
        cmd.arg("--cacert").arg(ca);
        if let Some(t) = token {
            cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        let out = cmd.args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
