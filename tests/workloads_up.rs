//! Jobs and DaemonSets through the real `kommit up` on the process runtime.
#![allow(clippy::unwrap_used)]

mod support;
#[path = "up_support.rs"]
mod up_support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use support::GitRepo;
use up_support::{ProcessCleanup, Up, node_name};

const T: Duration = Duration::from_secs(120);

fn job(name: &str, extra: &str, args: &str) -> String {
    format!(
        "---
apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  namespace: batch
spec:
{extra}  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: kommit.dev/demo:1
        args: {args}
"
    )
}

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: batch\n";

/// The pods a Job owns, from etcd.
fn pods_of(up: &Up, ns: &str, job: &str) -> Vec<serde_json::Value> {
    up.etcd_values(&format!("/registry/pods/{ns}/"))
        .into_iter()
        .filter(|p| {
            p["metadata"]["labels"]["batch.kubernetes.io/job-name"] == job
                && p["metadata"]["ownerReferences"][0]["kind"] == "Job"
        })
        .collect()
}

fn job_status(up: &Up, ns: &str, name: &str) -> serde_json::Value {
    up.etcd_values(&format!("/registry/jobs/{ns}/{name}"))
        .into_iter()
        .next()
        .map(|j| j["status"].clone())
        .unwrap_or(serde_json::Value::Null)
}

fn has_condition(status: &serde_json::Value, type_: &str) -> Option<serde_json::Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .cloned()
}

#[test]
fn jobs_complete_within_parallelism_and_fail_at_the_backoff_limit() {
    let node = node_name("wl-jobs");
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    let _processes = ProcessCleanup(data.path().to_path_buf());
    let manifest = format!(
        "{NAMESPACE}{}{}",
        job(
            "three",
            "  completions: 3\n  parallelism: 2\n",
            "[exit, --code, \"0\", --after, \"1\"]"
        ),
        job("broken", "  backoffLimit: 1\n", "[exit, --code, \"1\"]"),
    );
    repo.write("jobs.yaml", &manifest);
    repo.commit("two jobs");
    let mut up = Up::start(repo.path(), data.path(), "process", &node);
    up.wait_line("runtime: processes", T);

    let mut max_active = 0;
    up.wait_for("Job three Complete with 3 succeeded", T, || {
        let active = pods_of(&up, "batch", "three")
            .iter()
            .filter(|p| {
                !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                    && p["metadata"]["deletionTimestamp"].is_null()
            })
            .count();
        max_active = max_active.max(active);
        let st = job_status(&up, "batch", "three");
        st["succeeded"] == 3 && has_condition(&st, "Complete").is_some()
    });
    assert!(
        max_active <= 2,
        "at most parallelism (2) pods at once, saw {max_active}"
    );
    let pods = pods_of(&up, "batch", "three");
    assert_eq!(pods.len(), 3, "one pod per completion: {pods:?}");
    assert!(pods.iter().all(|p| p["status"]["phase"] == "Succeeded"));

    up.wait_for("Job broken Failed at its backoff limit", T, || {
        let st = job_status(&up, "batch", "broken");
        has_condition(&st, "Failed").is_some_and(|c| c["reason"] == "BackoffLimitExceeded")
    });
    let st = job_status(&up, "batch", "broken");
    assert_eq!(st["failed"], 2, "backoffLimit 1: two failed pods: {st}");
    assert_eq!(pods_of(&up, "batch", "broken").len(), 2);
    let events = up.etcd_values("/registry/events/batch/");
    for reason in ["SuccessfulCreate", "Completed", "BackoffLimitExceeded"] {
        assert!(
            events.iter().any(|e| e["reason"] == reason),
            "no {reason} event: {events:?}"
        );
    }
    up.wait_line("converged at", T);

    // The Jobs leave Git: their pods and status records go.
    repo.write("jobs.yaml", NAMESPACE);
    repo.commit("no jobs");
    up.wait_for("job pods and records removed", T, || {
        up.etcd_values("/registry/pods/batch/").is_empty()
            && up.etcd_values("/registry/jobs/batch/").is_empty()
    });
    up.stop();
}

const DAEMON: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: sys
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  namespace: sys
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: kommit.dev/demo:1
        args: [sleep]
";

fn etcdctl_put(up: &Up, key: &str, value: &serde_json::Value) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &up.etcd, "put", key, &value.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcdctl put: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Registers (or heartbeats) a node that has no kubelet: its Node and its Lease, as a
/// node agent writes them.
fn simulated_node(up: &Up, name: &str) {
    let now = Timestamp::now();
    let secs = Timestamp::from_second(now.as_second()).unwrap();
    let node = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name},
            "creationTimestamp": secs.to_string(),
        },
        "status": {
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": secs.to_string(),
                "lastTransitionTime": secs.to_string(),
            }],
        },
    });
    etcdctl_put(up, &format!("/registry/minions/{name}"), &node);
    let lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": 40,
            "renewTime": format!("{}", now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")),
        },
    });
    etcdctl_put(
        up,
        &format!("/registry/leases/kube-node-lease/{name}"),
        &lease,
    );
}

fn daemon_pods(up: &Up) -> Vec<serde_json::Value> {
    up.etcd_values("/registry/pods/sys/")
        .into_iter()
        .filter(|p| p["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet")
        .collect()
}

fn ds_status(up: &Up) -> serde_json::Value {
    up.etcd_values("/registry/daemonsets/sys/agent")
        .into_iter()
        .next()
        .map(|d| d["status"].clone())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_daemonset_runs_one_pod_per_node() {
    let node = node_name("wl-ds");
    let other = format!("{node}-sim");
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    let _processes = ProcessCleanup(data.path().to_path_buf());
    repo.write("ds.yaml", DAEMON);
    repo.commit("daemon");
    let mut up = Up::start(repo.path(), data.path(), "process", &node);
    up.wait_line("runtime: processes", T);
    up.wait_for("the daemon pod runs on the node", T, || {
        let pods = daemon_pods(&up);
        pods.len() == 1
            && pods[0]["spec"]["nodeName"] == node.as_str()
            && pods[0]["status"]["phase"] == "Running"
    });
    up.wait_for("status: 1 desired, 1 ready", T, || {
        let st = ds_status(&up);
        st["desiredNumberScheduled"] == 1
            && st["currentNumberScheduled"] == 1
            && st["numberReady"] == 1
            && st["updatedNumberScheduled"] == 1
            && st["numberAvailable"] == 1
    });
    up.wait_line("converged at", T);

    // A second node (registered and heartbeating, no kubelet behind it): it gets its own
    // pod, bound to it; the first node keeps exactly one.
    up.wait_for("one daemon pod per node", T, || {
        simulated_node(&up, &other);
        let pods = daemon_pods(&up);
        let mut nodes: Vec<String> = pods
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
            .collect();
        nodes.sort();
        let mut want = vec![node.clone(), other.clone()];
        want.sort();
        pods.len() == 2 && nodes == want
    });
    let st = ds_status(&up);
    assert_eq!(st["desiredNumberScheduled"], 2, "{st}");
    let on_other = daemon_pods(&up)
        .into_iter()
        .find(|p| p["spec"]["nodeName"] == other.as_str())
        .unwrap();
    assert_eq!(
        on_other["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0],
        other.as_str(),
        "daemon pods are placed by node affinity"
    );

    // The DaemonSet leaves Git: its pods (and their processes) and its record go.
    repo.write(
        "ds.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: sys\n",
    );
    repo.commit("no daemon");
    up.wait_for("daemon pods and record removed", T, || {
        daemon_pods(&up).is_empty() && up.etcd_values("/registry/daemonsets/sys/").is_empty()
    });
    up.wait_for("the daemon's process stopped", T, || {
        !process_running(&node)
    });
    up.stop();
}

/// Whether a container process of `node` still runs (the process runtime's shims carry
/// the node's folder in their command line).
fn process_running(node: &str) -> bool {
    let out = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.contains("process-shim") && l.contains(&format!("/{node}/")))
}

const CRON: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: cron
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: minutely
  namespace: cron
spec:
  schedule: \"* * * * *\"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: tick
            image: kommit.dev/demo:1
            args: [exit, --code, \"0\"]
";

/// One real minute: the executor wakes at the schedule time (nothing else changes), the
/// Job lands in the cache and the Job controller runs it to completion.
#[test]
fn a_cronjob_starts_a_job_at_the_next_minute() {
    let node = node_name("wl-cron");
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    let _processes = ProcessCleanup(data.path().to_path_buf());
    repo.write("cron.yaml", CRON);
    repo.commit("minutely");
    let mut up = Up::start(repo.path(), data.path(), "process", &node);
    up.wait_line("runtime: processes", T);
    up.wait_for(
        "a Job made by the CronJob completes",
        Duration::from_secs(150),
        || {
            up.etcd_values("/registry/jobs/cron/").iter().any(|j| {
                j["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
                    && j["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("minutely-"))
                    && has_condition(&j["status"], "Complete").is_some()
            })
        },
    );
    let job = up
        .etcd_values("/registry/jobs/cron/")
        .into_iter()
        .find(|j| has_condition(&j["status"], "Complete").is_some())
        .unwrap();
    let scheduled =
        job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .as_str()
            .unwrap()
            .to_owned();
    assert!(scheduled.ends_with(":00Z"), "on a minute: {scheduled}");
    let name = job["metadata"]["name"].as_str().unwrap();
    assert!(
        pods_of(&up, "cron", name)
            .iter()
            .all(|p| p["status"]["phase"] == "Succeeded"),
        "the Job's pod ran to success"
    );
    up.wait_for("the CronJob status records the run", T, || {
        let st = up
            .etcd_values("/registry/cronjobs/cron/minutely")
            .into_iter()
            .next()
            .map(|c| c["status"].clone())
            .unwrap_or_default();
        st["lastScheduleTime"]
            .as_str()
            .is_some_and(|t| t >= scheduled.as_str())
            && !st["lastSuccessfulTime"].is_null()
    });
    up.stop();
}
