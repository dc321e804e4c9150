//! `kommit up` end to end on the process runtime, and a pod that fits no node.
#![allow(clippy::unwrap_used)]

mod support;
#[path = "up_support.rs"]
mod up_support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::GitRepo;
use up_support::{ProcessCleanup, Up, deployment, node_name};

const T: Duration = Duration::from_secs(60);

/// Container ids of the running pods (from their reported status).
fn container_ids(up: &Up) -> BTreeSet<String> {
    up.running_pods("hello")
        .iter()
        .flat_map(|p| {
            p["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c["containerID"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn process_deployment_lifecycle() {
    let node = node_name("up-proc");
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    let _processes = ProcessCleanup(data.path().to_path_buf());
    // The process runtime shares the host network: a workload without a fixed port.
    repo.write("app.yaml", &deployment(3, "[sleep]", "one"));
    repo.commit("three replicas");

    let mut up = Up::start(repo.path(), data.path(), "process", &node);
    up.wait_line("runtime: processes", T);
    up.wait_for("3 pods Running", T, || up.running_pods("hello").len() == 3);
    up.wait_line("converged at", T);

    repo.write("app.yaml", &deployment(5, "[sleep]", "one"));
    repo.commit("five replicas");
    up.wait_for("5 pods Running", T, || up.running_pods("hello").len() == 5);

    let before = container_ids(&up);
    repo.write("app.yaml", &deployment(5, "[sleep]", "two"));
    repo.commit("new env");
    up.wait_for("every pod replaced", T, || {
        let now = container_ids(&up);
        now.len() == 5
            && now.is_disjoint(&before)
            && up.etcd_values("/registry/pods/hello/").len() == 5
    });

    let stable = container_ids(&up);
    repo.write(
        "app.yaml",
        &deployment(5, "[sleep]", "x").replace("replicas: 5", "replicas: [5]"),
    );
    repo.commit("broken");
    up.wait_line("rejected", T);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(container_ids(&up), stable, "{}", up.text());

    up.stop();
    let mut up = Up::start(repo.path(), data.path(), "process", &node);
    up.wait_line("resuming at applied commit", T);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        container_ids(&up),
        stable,
        "restart must adopt:\n{}",
        up.text()
    );
    assert_eq!(up.etcd_values("/registry/pods/hello/").len(), 5);

    repo.write(
        "app.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: hello\n",
    );
    repo.commit("remove web");
    up.wait_for("pods removed", T, || {
        up.etcd_values("/registry/pods/hello/").is_empty()
    });
    up.stop();
}

#[test]
fn a_pod_that_fits_no_node_stays_pending_with_the_reason() {
    let node = node_name("up-pending");
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    let _processes = ProcessCleanup(data.path().to_path_buf());
    let manifest = deployment(1, "[sleep]", "one").replace(
        "        env:\n",
        "        resources:\n          requests:\n            cpu: \"1000\"\n        env:\n",
    );
    repo.write("app.yaml", &manifest);
    repo.commit("too big");
    let mut up = Up::start(repo.path(), data.path(), "process", &node);
    up.wait_for("a Pending pod with PodScheduled=False", T, || {
        up.etcd_values("/registry/pods/hello/").iter().any(|p| {
            p["status"]["phase"] == "Pending"
                && p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["type"] == "PodScheduled"
                            && c["status"] == "False"
                            && c["reason"] == "Unschedulable"
                    })
                })
        })
    });
    up.wait_for("a FailedScheduling event", T, || {
        up.etcd_values("/registry/events/hello/").iter().any(|e| {
            e["reason"] == "FailedScheduling"
                && e["message"].as_str().is_some_and(|m| m.contains("cpu"))
        })
    });
    up.wait_line("Pending", T);
    up.stop();
}
