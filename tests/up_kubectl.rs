//! The real kubectl against the API that `kommit up` serves, on a real Git repository,
//! with the process runtime: reads, selectors, describe with events, logs (`-f`,
//! `--previous`), watch, status subresources, refused writes and refused strangers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
#[path = "up_support.rs"]
mod up_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::GitRepo;
use up_support::{DockerCleanup, ProcessCleanup, Up, node_name};

const T: Duration = Duration::from_secs(90);

fn manifests() -> String {
    "apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: kommit.dev/demo:1
        command: [sh, -c, 'echo web says hello; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done']
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: crash
  namespace: shop
  labels: {app: crash}
spec:
  restartPolicy: Always
  containers:
  - name: crash
    image: kommit.dev/demo:1
    command: [sh, -c, 'echo crash run $(date +%s%N); exit 1']
---
apiVersion: v1
kind: Pod
metadata:
  name: big
  namespace: shop
spec:
  containers:
  - name: big
    image: kommit.dev/demo:1
    args: [sleep]
    resources:
      requests:
        cpu: \"1000\"
"
    .to_string()
}

/// kubectl with the kubeconfig `kommit kubeconfig` printed.
struct Kubectl {
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("HOME", &self.home)
            .env("KUBECACHEDIR", self.home.join("cache"));
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("kubectl runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn err(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Starts a long-running kubectl (`-f`, `-w`); its stdout lines arrive on the channel.
    fn spawn(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let mut child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl starts");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        (child, rx)
    }
}

/// Waits for a line that satisfies `pred`; returns every line read so far.
fn wait_lines(
    rx: &mpsc::Receiver<String>,
    what: &str,
    mut pred: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let left = T.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = pred(&line);
                seen.push(line);
                if hit {
                    return seen;
                }
            }
            Err(_) => panic!(
                "{what}: not within {T:?}; kubectl printed:\n{}",
                seen.join("\n")
            ),
        }
    }
}

fn jq(input: &str, filter: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("jq")
        .args(["-r", filter])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("jq runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "jq {filter} failed on:\n{input}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn kubeconfig(data: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kommit"))
        .args(["kubeconfig", "--data-dir", data.to_str().unwrap()])
        .output()
        .expect("kommit kubeconfig runs");
    assert!(
        out.status.success(),
        "kommit kubeconfig failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The URL `kommit up` printed, and kubectl with the kubeconfig `kommit kubeconfig`
/// prints for it.
fn connect(up: &Up, data: &Path, home: &Path) -> (Kubectl, String) {
    let line = up.wait_line("Kubernetes API: https://127.0.0.1:", T);
    let url = up.output.lock().unwrap()[line]
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    let config = kubeconfig(data);
    assert!(config.contains(&format!("server: {url}\n")), "{config}");
    let kubeconfig_file = home.join("kubeconfig");
    std::fs::write(&kubeconfig_file, &config).unwrap();
    let k = Kubectl {
        kubeconfig: kubeconfig_file,
        home: home.to_path_buf(),
    };
    (k, url)
}

#[test]
fn kubectl_reads_the_cluster_kommit_up_runs() {
    let node = node_name("up-kubectl");
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    repo.write("app.yaml", &manifests());
    repo.commit("shop");
    let head = support::git_in(repo.path(), &["rev-parse", "HEAD"]);

    let _processes = ProcessCleanup(data.path().to_path_buf());
    let mut up = Up::start_with(
        repo.path(),
        data.path(),
        "process",
        &node,
        &["--api-listen", "127.0.0.1:0"],
    );
    let (k, url) = connect(&up, data.path(), home.path());

    up.wait_for("two web pods Running", T, || {
        let out = k.ok(&[
            "get",
            "pods",
            "-n",
            "shop",
            "-l",
            "app=web",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "name",
        ]);
        out.lines().count() == 2
    });
    let web_pods: Vec<String> = k
        .ok(&["get", "pods", "-n", "shop", "-l", "app=web", "-o", "name"])
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_string())
        .collect();
    assert_eq!(web_pods.len(), 2, "{web_pods:?}");
    let web = web_pods[0].as_str();

    // Nodes and pods everywhere.
    let out = k.ok(&["get", "nodes"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("{node} ")) && l.contains(" Ready ")),
        "{out}"
    );
    let out = k.ok(&["get", "pods", "-A", "-o", "wide"]);
    let header = out.lines().next().unwrap();
    for col in ["NAMESPACE", "NAME", "READY", "STATUS", "IP", "NODE"] {
        assert!(header.contains(col), "missing {col}: {out}");
    }
    let row = out
        .lines()
        .find(|l| l.contains(web))
        .expect("web pod listed");
    assert!(
        row.starts_with("shop ")
            && row.contains("1/1")
            && row.contains("Running")
            && row.contains("127.0.0.1")
            && row.contains(&node),
        "{row}"
    );

    // Several kinds; `all`.
    let out = k.ok(&["get", "deploy,rs,pods", "-n", "shop"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("deployment.apps/web ") && l.contains("2/2")),
        "{out}"
    );
    assert!(out.contains("replicaset.apps/web-"), "{out}");
    assert!(out.contains(&format!("pod/{web}")), "{out}");
    let out = k.ok(&["get", "all", "-n", "shop"]);
    assert!(
        out.contains("service/web")
            && out.contains("deployment.apps/web")
            && out.contains("pod/crash"),
        "{out}"
    );

    // The Deployment is its spec from Git at the applied commit plus observed status.
    let out = k.ok(&["get", "deploy", "web", "-n", "shop", "-o", "yaml"]);
    assert!(
        out.contains(&format!("kommit.dev/revision: {head}")),
        "{out}"
    );
    assert!(out.contains("kommit.dev/source: app.yaml"), "{out}");
    assert!(
        out.contains(&format!("kommit.dev/last-commit: {head}")),
        "{out}"
    );
    assert!(out.contains("readyReplicas: 2"), "{out}");
    let json = k.ok(&["get", "pods", "-n", "shop", "-o", "json"]);
    let mut names: Vec<String> = jq(&json, ".items[].metadata.name")
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    let mut want: Vec<String> = web_pods
        .iter()
        .cloned()
        .chain(["big".to_string(), "crash".to_string()])
        .collect();
    want.sort();
    assert_eq!(names, want);

    // Selectors.
    let out = k.ok(&["get", "pods", "-A", "-l", "app=web", "-o", "name"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let out = k.ok(&[
        "get",
        "pods",
        "-n",
        "shop",
        "--field-selector",
        "status.phase=Pending",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "pod/big");

    // Status subresources read; writes to them are refused like any write.
    let out = k.ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/shop/deployments/web/status",
    ]);
    assert_eq!(jq(&out, ".status.readyReplicas"), "2");
    let out = k.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/shop/pods/{web}/status"),
    ]);
    assert_eq!(jq(&out, ".status.phase"), "Running");
    let err = k.err(&[
        "patch",
        "deployment",
        "web",
        "-n",
        "shop",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":9}}"#,
    ]);
    assert!(err.contains("lives in Git"), "{err}");

    // describe shows the events the scheduler and the node recorded.
    let out = k.ok(&["describe", "pod", web, "-n", "shop"]);
    assert!(out.contains("Node:") && out.contains(&node), "{out}");
    assert!(out.contains("Controlled By:  ReplicaSet/web-"), "{out}");
    for reason in ["Scheduled", "Created", "Started"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with("Normal") && l.contains(reason)),
            "no {reason} event:\n{out}"
        );
    }
    let out = k.ok(&["describe", "pod", "big", "-n", "shop"]);
    assert!(
        out.lines()
            .any(|l| l.contains("Warning") && l.contains("FailedScheduling")),
        "{out}"
    );

    let out = k.ok(&["describe", "namespace", "shop"]);
    assert!(
        out.contains("Name:         shop") && out.contains("Status:       Active"),
        "{out}"
    );
    let out = k.ok(&["describe", "deployment", "web", "-n", "shop"]);
    assert!(
        out.lines()
            .any(|l| l.contains("ScalingReplicaSet") && l.contains("deployment-controller")),
        "{out}"
    );

    // Logs: whole, -c, --tail.
    let out = k.ok(&["logs", web, "-n", "shop"]);
    assert!(out.starts_with("web says hello\n"), "{out}");
    let out = k.ok(&["logs", web, "-n", "shop", "-c", "web", "--tail=1"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("tick "), "{out}");

    // kubectl picks the pods itself: through the Deployment, by label.
    let out = k.ok(&["logs", "deployment/web", "-n", "shop", "--tail=1"]);
    assert!(out.starts_with("tick "), "{out}");
    let out = k.ok(&["logs", "-l", "app=web", "-n", "shop", "--tail=1"]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("tick ")).count(),
        2,
        "{out}"
    );

    // logs -f keeps printing what the container writes after it started.
    let before: u64 = k
        .ok(&["logs", web, "-n", "shop", "--tail=1"])
        .trim()
        .trim_start_matches("tick ")
        .parse()
        .unwrap();
    let (mut follow, lines) = k.spawn(&["logs", "-f", web, "-n", "shop"]);
    wait_lines(&lines, "a newer tick through logs -f", |l| {
        l.strip_prefix("tick ")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > before + 1)
    });
    let _ = follow.kill();
    let _ = follow.wait();

    // The crashing pod: BackOff, and --previous shows the instance before.
    up.wait_for("crash restarted", T, || {
        let out = k.ok(&[
            "get",
            "pod",
            "crash",
            "-n",
            "shop",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ]);
        out.trim().parse::<u32>().is_ok_and(|n| n >= 1)
    });
    let previous = k.ok(&["logs", "crash", "-n", "shop", "--previous"]);
    let current = k.ok(&["logs", "crash", "-n", "shop"]);
    assert!(previous.starts_with("crash run "), "{previous}");
    assert!(current.starts_with("crash run "), "{current}");
    assert_ne!(previous, current);
    up.wait_for("a BackOff event in describe", T, || {
        k.ok(&["describe", "pod", "crash", "-n", "shop"])
            .lines()
            .any(|l| l.contains("Warning") && l.contains("BackOff"))
    });

    // get -w sees a pod a new commit adds.
    let (mut watch, lines) = k.spawn(&["get", "pods", "-n", "shop", "-w"]);
    wait_lines(&lines, "the first listing", |l| l.starts_with("crash "));
    repo.write(
        "late.yaml",
        "apiVersion: v1
kind: Pod
metadata:
  name: late
  namespace: shop
spec:
  containers:
  - name: late
    image: kommit.dev/demo:1
    args: [sleep]
",
    );
    repo.commit("a late pod");
    wait_lines(&lines, "the late pod in the watch", |l| {
        l.starts_with("late ")
    });
    let _ = watch.kill();
    let _ = watch.wait();

    // Removing it from Git stops it: the node's Killing event stays readable.
    up.wait_for("late Running", T, || {
        k.ok(&[
            "get",
            "pod",
            "late",
            "-n",
            "shop",
            "-o",
            "jsonpath={.status.phase}",
        ]) == "Running"
    });
    repo.remove("late.yaml");
    repo.commit("no late pod");
    up.wait_for("a Killing event for late", T, || {
        let out = k.ok(&[
            "get",
            "events",
            "-n",
            "shop",
            "--field-selector",
            "involvedObject.name=late,reason=Killing",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        out.contains("Stopping")
    });

    // Writes are refused with the Git message.
    let other = home.path().join("other.yaml");
    std::fs::write(
        &other,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n  namespace: shop\ndata:\n  a: b\n",
    )
    .unwrap();
    // (kubectl validates against the OpenAPI v2 document, which defines nothing: it
    // sends the request and shows the server's answer.)
    let err = k.err(&["apply", "-f", other.to_str().unwrap()]);
    assert!(
        err.contains("read-only") && err.contains("lives in Git") && err.contains("branch main"),
        "{err}"
    );
    let app = repo.path().join("app.yaml");
    let err = k.err(&["apply", "-f", app.to_str().unwrap()]);
    assert!(err.contains("is defined in app.yaml:"), "{err}");
    let err = k.err(&["delete", "pod", web, "-n", "shop"]);
    assert!(
        err.contains(&format!("cannot delete Pod shop/{web}")) && err.contains("lives in Git"),
        "{err}"
    );

    let err = k.err(&["scale", "deployment", "web", "-n", "shop", "--replicas=3"]);
    assert!(err.contains("lives in Git"), "{err}");

    // explain: the schemas and field descriptions of OpenAPI v3, as from kube-apiserver.
    let out = k.ok(&["explain", "pods"]);
    assert!(
        out.starts_with("KIND:       Pod\nVERSION:    v1\n"),
        "{out}"
    );
    assert!(
        out.contains("spec\t<PodSpec>")
            && out.contains("Specification of the desired behavior of the pod."),
        "{out}"
    );
    let out = k.ok(&["explain", "deployment.spec.replicas"]);
    assert!(
        out.contains("GROUP:      apps\nKIND:       Deployment\n")
            && out.contains("FIELD: replicas <integer>")
            && out.contains("Number of desired pods."),
        "{out}"
    );
    let out = k.ok(&["explain", "svc", "--recursive"]);
    assert!(
        out.contains("KIND:       Service")
            && out.contains("  spec\t<ServiceSpec>\n")
            && out.contains("    ports\t<[]ServicePort>\n")
            && out.contains("      targetPort\t<IntOrString>\n"),
        "{out}"
    );
    let out = k.ok(&["explain", "commits.status.state"]);
    assert!(
        out.contains("GROUP:      kommit.dev") && out.contains("Converged"),
        "{out}"
    );

    // Strangers: a wrong token (kubectl), no token at all (curl: kubectl would prompt
    // for a user name).
    let ca = data.path().join("api/pki/ca.crt");
    let out = Command::new("kubectl")
        .args(["--server", &url, "--token", "not-the-token"])
        .args(["--certificate-authority", ca.to_str().unwrap()])
        .args(["get", "pods", "-A"])
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("no-such-kubeconfig"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("You must be logged in to the server"),
        "{err}"
    );
    let out = Command::new("curl")
        .args(["-s", "--cacert", ca.to_str().unwrap()])
        .args(["-w", "\n%{http_code}", &format!("{url}/api/v1/pods")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code, "401", "{text}");
    assert_eq!(jq(body, ".kind + \" \" + .reason"), "Status Unauthorized");

    // Only the Namespace left in Git: every pod stops.
    repo.write(
        "app.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
    );
    repo.commit("close the shop");
    up.wait_for("no pods left", T, || {
        k.ok(&["get", "pods", "-n", "shop", "-o", "name"])
            .trim()
            .is_empty()
    });
    up.stop();
    assert!(up.text().contains("Kubernetes API"), "{}", up.text());
}

/// On Docker: the API on its default address (or the free port it falls back to), pod
/// IPs from the sandbox, logs through the engine (`--tail`, `-f`), the Pulled event.
#[test]
fn kubectl_logs_through_docker() {
    let node = node_name("up-kubectl-docker");
    let _cleanup = DockerCleanup(node.clone());
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    repo.write(
        "pod.yaml",
        "apiVersion: v1
kind: Pod
metadata:
  name: ticker
  namespace: default
spec:
  containers:
  - name: ticker
    image: kommit.dev/demo:1
    command: [sh, -c, 'echo ticker up; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done']
",
    );
    repo.commit("ticker");
    let mut up = Up::start(repo.path(), data.path(), "docker", &node);
    let (k, _) = connect(&up, data.path(), home.path());
    up.wait_for("ticker Running", T, || {
        k.ok(&["get", "pod", "ticker", "-o", "jsonpath={.status.phase}"]) == "Running"
    });
    let ip = k.ok(&["get", "pod", "ticker", "-o", "jsonpath={.status.podIP}"]);
    let out = k.ok(&["get", "pods", "-o", "wide"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("ticker ") && l.contains(&ip) && l.contains(&node)),
        "{out}"
    );
    assert_ne!(ip, "127.0.0.1", "a Docker pod has its own address");

    let out = k.ok(&["logs", "ticker"]);
    assert!(out.starts_with("ticker up\n"), "{out}");
    let last = k.ok(&["logs", "ticker", "--tail=1"]);
    assert_eq!(last.lines().count(), 1, "{last}");
    let before: u64 = last.trim().trim_start_matches("tick ").parse().unwrap();
    let (mut follow, lines) = k.spawn(&["logs", "-f", "ticker", "--tail=1"]);
    let seen = wait_lines(&lines, "a newer tick through logs -f", |l| {
        l.strip_prefix("tick ")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > before + 1)
    });
    assert!(
        seen[0].starts_with("tick "),
        "--tail=1 then new lines: {seen:?}"
    );
    let _ = follow.kill();
    let _ = follow.wait();

    let out = k.ok(&["describe", "pod", "ticker"]);
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with("Normal") && l.contains(reason)),
            "no {reason} event:\n{out}"
        );
    }
    up.stop();
}

/// `--api-listen` on an address in use is an error that names it.
#[test]
fn a_taken_api_address_is_a_clear_error() {
    let repo = GitRepo::init();
    repo.write(
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n",
    );
    repo.commit("ns");
    let data = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_kommit"))
        .arg("up")
        .arg(repo.path())
        .args(["--data-dir", data.path().to_str().unwrap()])
        .args([
            "--runtime",
            "process",
            "--node-name",
            &node_name("up-taken"),
        ])
        .args(["--etcd-listen", "127.0.0.1:0", "--api-listen", &addr])
        .env("KOMMIT_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "starting the Kubernetes API on {addr} (--api-listen)"
        )) && err.contains("in use"),
        "{err}"
    );
}
