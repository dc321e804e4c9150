//! Rollout records through the real `kommit up` (process runtime) and `kommit status`:
//! a good commit converges, a bad one is rejected with its errors, one stuck mid-rollout
//! is superseded by the next, one past its progress deadline fails, one that crash-loops
//! fails; `kommit status` shows each, `--history` lists them and `-w` exits by the
//! rollout's end.
#![allow(clippy::unwrap_used)]

mod support;
#[path = "up_support.rs"]
mod up_support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::GitRepo;
use up_support::{ProcessCleanup, Up, node_name};

const T: Duration = Duration::from_secs(90);

/// A Deployment of `replicas` sleepers; `extra` is added to the pod spec.
fn manifest(replicas: u32, env: &str, extra: &str, deadline: Option<u32>) -> String {
    let deadline = deadline
        .map(|d| format!("  progressDeadlineSeconds: {d}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: rec
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: rec
spec:
  replicas: {replicas}
{deadline}  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
{extra}      containers:
      - name: web
        image: kommit.dev/demo:1
        args: [sleep]
        env:
        - {{name: STEP, value: \"{env}\"}}
"
    )
}

/// A pod spec line no node satisfies: its pods stay Pending.
const NOWHERE: &str = "      nodeSelector: {kommit.dev/test-pool: none}\n";

fn status(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kommit"))
        .arg("status")
        .args(["--data-dir", data.to_str().unwrap()])
        .args(args)
        .env("KOMMIT_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("kommit status runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// kubectl with the kubeconfig `kommit kubeconfig` prints; its stdout.
fn kubectl(data: &Path, home: &Path, args: &[&str]) -> String {
    let config = Command::new(env!("CARGO_BIN_EXE_kommit"))
        .args(["kubeconfig", "--data-dir", data.to_str().unwrap()])
        .output()
        .expect("kommit kubeconfig runs");
    assert!(config.status.success(), "{}", text(&config));
    let file = home.join("kubeconfig");
    std::fs::write(&file, &config.stdout).unwrap();
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&file)
        .args(args)
        .env("HOME", home)
        .env("KUBECACHEDIR", home.join("cache"))
        .output()
        .expect("kubectl runs");
    assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kommit status --history` as (short commit, state) rows.
fn history(data: &Path) -> Vec<(String, String)> {
    let out = status(data, &["--history"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| {
            let mut f = l.split_whitespace();
            (f.next().unwrap().to_owned(), f.next().unwrap().to_owned())
        })
        .collect()
}

fn record(up: &Up, sha: &str) -> Value {
    up.etcd_values(&format!("/registry/commits/{sha}"))
        .into_iter()
        .next()
        .unwrap_or(Value::Null)
}

fn wait_state(up: &Up, sha: &str, state: &str) -> Value {
    up.wait_for(&format!("record of {sha} {state}"), T, || {
        record(up, sha)["status"]["state"] == state
    });
    record(up, sha)
}

fn wait_applied(up: &Up, sha: &str) {
    up.wait_for(&format!("{sha} applied"), T, || {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &up.etcd,
                "get",
                "--print-value-only",
                "/kommit/applied-revision",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == sha
    });
}

#[test]
fn every_commit_gets_a_record_that_kommit_status_shows() {
    let node = node_name("records");
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    let _processes = ProcessCleanup(data.path().to_path_buf());
    repo.write("app.yaml", &manifest(2, "a", "", None));
    let good = repo.commit("web: two sleepers\n\nThe first rollout.");
    let mut up = Up::start(repo.path(), data.path(), "process", &node);
    wait_applied(&up, &good);

    // `kommit status -w` follows the rollout and exits 0 once it converged.
    let follow = status(data.path(), &["-w"]);
    assert!(follow.status.success(), "{}", text(&follow));
    assert!(
        text(&follow).contains(&format!("commit {} Converged", &good[..8])),
        "{}",
        text(&follow)
    );
    let r = wait_state(&up, &good, "Converged");
    assert_eq!(r["apiVersion"], "kommit.dev/v1");
    assert_eq!(r["spec"]["author"], "Test Author <author@example.invalid>");
    assert_eq!(
        r["spec"]["message"],
        "web: two sleepers\n\nThe first rollout."
    );
    assert!(r["status"]["endTime"].is_string(), "{r}");
    let changes = r["status"]["changes"].as_array().unwrap();
    assert!(
        changes.iter().any(|c| c["kind"] == "Deployment"
            && c["namespace"] == "rec"
            && c["name"] == "web"
            && c["action"] == "Added"),
        "{r}"
    );
    let web = &r["status"]["objects"][0];
    assert_eq!(
        (&web["kind"], &web["desired"], &web["ready"], &web["health"]),
        (
            &Value::from("Deployment"),
            &Value::from(2),
            &Value::from(2),
            &Value::from("Healthy")
        ),
        "{r}"
    );

    // A commit that does not validate: Rejected with its errors; the cluster stays.
    repo.write(
        "app.yaml",
        &manifest(2, "a", "", None).replace("replicas: 2", "replicas: [2]"),
    );
    let bad = repo.commit("web: broken replicas");
    let r = wait_state(&up, &bad, "Rejected");
    let errors = r["status"]["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap().contains("replicas")),
        "{r}"
    );
    let shown = status(data.path(), &["--commit", &bad[..10]]);
    assert!(shown.status.success(), "{}", text(&shown));
    let shown = text(&shown);
    assert!(
        shown.contains(&format!("commit {} Rejected", &bad[..8])),
        "{shown}"
    );
    assert!(
        shown.contains("errors:") && shown.contains("replicas"),
        "{shown}"
    );
    let current = text(&status(data.path(), &[]));
    assert!(
        current.contains(&format!("commit {} Converged", &good[..8]))
            && current.contains(&format!("newer commit {} was rejected", &bad[..8])),
        "{current}"
    );

    // A rollout that cannot finish (its pods fit no node), superseded by the next
    // commit; `kommit status -w` started during it follows into the new one.
    repo.write("app.yaml", &manifest(2, "stuck", NOWHERE, None));
    let stuck = repo.commit("web: pinned to a pool that does not exist");
    wait_applied(&up, &stuck);
    let r = wait_state(&up, &stuck, "Progressing");
    assert_eq!(r["status"]["objects"][0]["kind"], "Deployment", "{r}");
    let watcher = Command::new(env!("CARGO_BIN_EXE_kommit"))
        .arg("status")
        .args(["--data-dir", data.path().to_str().unwrap(), "--follow"])
        .env("KOMMIT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    repo.write("app.yaml", &manifest(1, "fixed", "", None));
    let fixed = repo.commit("web: back to any node");
    let r = wait_state(&up, &stuck, "Superseded");
    assert_eq!(r["status"]["supersededBy"], fixed.as_str(), "{r}");
    assert!(r["status"]["endTime"].is_string(), "{r}");
    wait_state(&up, &fixed, "Converged");
    let followed = watcher.wait_with_output().unwrap();
    assert!(followed.status.success(), "{}", text(&followed));
    let followed = text(&followed);
    assert!(
        followed.contains(&format!("commit {} Superseded", &stuck[..8]))
            && followed.contains(&format!("commit {} Converged", &fixed[..8])),
        "{followed}"
    );

    // No progress within progressDeadlineSeconds: Failed, and `-w` exits 1.
    repo.write("app.yaml", &manifest(1, "late", NOWHERE, Some(2)));
    let late = repo.commit("web: a deadline it cannot meet");
    wait_applied(&up, &late);
    let failed = status(data.path(), &["-w"]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    assert!(
        text(&failed).contains(&format!("commit {} Failed", &late[..8])),
        "{}",
        text(&failed)
    );
    let r = wait_state(&up, &late, "Failed");
    assert_eq!(r["status"]["reason"], "ProgressDeadlineExceeded", "{r}");
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("has timed out progressing"),
        "{r}"
    );

    // The history, newest first.
    let rows = history(data.path());
    let expect: Vec<(String, String)> = [
        (&late, "Failed"),
        (&fixed, "Converged"),
        (&stuck, "Superseded"),
        (&bad, "Rejected"),
        (&good, "Converged"),
    ]
    .iter()
    .map(|(sha, st)| (sha[..8].to_owned(), (*st).to_owned()))
    .collect();
    assert_eq!(rows, expect);
    up.wait_line(
        &format!("rollout of {} superseded by {}", &stuck[..8], &fixed[..8]),
        T,
    );
    up.wait_line(
        &format!("rollout of {} failed: ProgressDeadlineExceeded", &late[..8]),
        T,
    );

    // The same records through the Kubernetes API kommit up serves, with real kubectl.
    up.wait_line("Kubernetes API: https://", T);
    let home = tempfile::tempdir().unwrap();
    let out = kubectl(data.path(), home.path(), &["get", "commits"]);
    assert!(
        out.lines()
            .next()
            .is_some_and(|h| h.starts_with("COMMIT") && h.contains("STATE")),
        "{out}"
    );
    for (sha, state) in [
        (&good, "Converged"),
        (&bad, "Rejected"),
        (&stuck, "Superseded"),
        (&fixed, "Converged"),
        (&late, "Failed"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(sha.as_str()) && l.contains(state)),
            "{sha} {state}:\n{out}"
        );
    }
    let out = kubectl(data.path(), home.path(), &["describe", "kc", &late[..8]]);
    assert!(out.contains("ProgressDeadlineExceeded"), "{out}");

    // A restart keeps every record (and writes its new etcd address for kommit status).
    up.stop();
    let mut up = Up::start(repo.path(), data.path(), "process", &node);
    up.wait_line("resuming at applied commit", T);
    assert_eq!(history(data.path()), expect);
    remove_workloads(&repo, &up);
    up.stop();
}

/// Commits a manifest without workloads and waits until their pods are gone (pods
/// outlive `kommit up` by design).
fn remove_workloads(repo: &GitRepo, up: &Up) {
    repo.write(
        "app.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: rec\n",
    );
    repo.commit("remove web");
    up.wait_for("pods removed", T, || {
        up.etcd_values("/registry/pods/rec/").is_empty()
    });
}

#[test]
fn a_crash_looping_rollout_fails_and_names_the_pod() {
    let node = node_name("records-crash");
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    let _processes = ProcessCleanup(data.path().to_path_buf());
    repo.write(
        "app.yaml",
        &manifest(1, "a", "", None).replace("args: [sleep]", "args: [exit, --code, \"3\"]"),
    );
    let crash = repo.commit("web: exits at once");
    let mut up = Up::start(repo.path(), data.path(), "process", &node);
    wait_applied(&up, &crash);
    // It starts, counts as ready for a moment, exits, and is restarted with back-off
    // until it has crash-looped 3 times (about 35 s).
    let failed = status(data.path(), &["--follow"]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    let r = wait_state(&up, &crash, "Failed");
    assert_eq!(r["status"]["reason"], "CrashLoopBackOff", "{r}");
    let message = r["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Deployment rec/web: pod web-") && message.contains("crash-looping"),
        "{r}"
    );
    assert_eq!(r["status"]["objects"][0]["health"], "Failed", "{r}");
    // The crash back-off of a real run has grown past its first step (10 s), and the
    // pod reports its restarts and the last exit.
    let pods = up.etcd_values("/registry/pods/rec/");
    let c = &pods
        .first()
        .unwrap_or_else(|| panic!("the crash-looping pod is in the cache"))["status"]["containerStatuses"]
        [0];
    assert!(c["restartCount"].as_u64().unwrap_or(0) >= 3, "{c}");
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 3, "{c}");
    let waiting = c["state"]["waiting"]["message"].as_str().unwrap_or("");
    let step: u64 = waiting
        .strip_prefix("back-off ")
        .and_then(|m| m.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a back-off message: {c}"));
    assert!(step >= 20, "the back-off grew from 10 s: {c}");
    assert!(
        text(&failed).contains(&format!("commit {} Failed", &crash[..8])),
        "{}",
        text(&failed)
    );
    remove_workloads(&repo, &up);
    up.stop();
}
