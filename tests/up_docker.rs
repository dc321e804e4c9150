//! `kommit up` end to end on the Docker runtime: a cluster repository made with the git
//! CLI, the real binary, state read with etcdctl, containers listed with `docker ps`.
#![allow(clippy::unwrap_used)]

mod support;
#[path = "up_support.rs"]
mod up_support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::GitRepo;
use up_support::{DockerCleanup, Up, deployment, docker_containers, node_name};

const T: Duration = Duration::from_secs(90);

fn ids(node: &str) -> BTreeSet<String> {
    docker_containers(node)
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

#[test]
fn docker_deployment_lifecycle() {
    let node = node_name("up-docker");
    let _cleanup = DockerCleanup(node.clone());
    let repo = GitRepo::init();
    let data = tempfile::tempdir().unwrap();
    repo.write(
        "app.yaml",
        &deployment(3, "[http, --port, \"8080\"]", "one"),
    );
    repo.commit("three replicas");

    let mut up = Up::start(repo.path(), data.path(), "docker", &node);
    up.wait_line("runtime: docker", T);
    up.wait_line("accepted", T);
    up.wait_for("3 containers running", T, || {
        docker_containers(&node).len() == 3
    });
    up.wait_for("3 pods Running in the cache", T, || {
        up.running_pods("hello").len() == 3
    });
    up.wait_line("converged at", T);

    // Scale to 5.
    repo.write(
        "app.yaml",
        &deployment(5, "[http, --port, \"8080\"]", "one"),
    );
    repo.commit("five replicas");
    up.wait_for("5 containers running", T, || {
        docker_containers(&node).len() == 5
    });

    // A new env: every pod replaced.
    let before = ids(&node);
    repo.write(
        "app.yaml",
        &deployment(5, "[http, --port, \"8080\"]", "two"),
    );
    repo.commit("new greeting");
    up.wait_for("every container replaced", T, || {
        let now = ids(&node);
        now.len() == 5 && now.is_disjoint(&before)
    });

    // A container removed by hand is replaced.
    let victim = docker_containers(&node)[0].0.clone();
    let o = std::process::Command::new("docker")
        .args(["rm", "-f", &victim])
        .output()
        .unwrap();
    assert!(o.status.success());
    up.wait_for("the removed container replaced", T, || {
        let now = ids(&node);
        now.len() == 5 && !now.contains(&victim)
    });
    up.wait_for("5 pods Running", T, || up.running_pods("hello").len() == 5);

    // An invalid commit is rejected; nothing changes.
    let stable = ids(&node);
    repo.write(
        "app.yaml",
        &deployment(5, "[http]", "three").replace("replicas: 5", "replicas: five"),
    );
    repo.commit("broken");
    up.wait_line("rejected", T);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        ids(&node),
        stable,
        "a rejected commit changed containers:\n{}",
        up.text()
    );
    assert!(
        up.text().contains("app.yaml:"),
        "the rejection names the file:\n{}",
        up.text()
    );

    // Restart with the same data dir: the same containers, no duplicates.
    repo.write(
        "app.yaml",
        &deployment(5, "[http, --port, \"8080\"]", "two"),
    );
    repo.commit("fixed");
    up.stop();
    assert!(up.text().contains("stopped"), "{}", up.text());
    assert_eq!(
        ids(&node),
        stable,
        "containers must keep running while kommit is stopped"
    );
    let mut up = Up::start(repo.path(), data.path(), "docker", &node);
    up.wait_line("resuming at applied commit", T);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        ids(&node),
        stable,
        "restart must adopt, not duplicate:\n{}",
        up.text()
    );

    // Delete the Deployment: its containers go away.
    repo.write(
        "app.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: hello\n",
    );
    repo.commit("remove web");
    up.wait_for("containers removed", T, || {
        docker_containers(&node).is_empty()
    });
    up.stop();
}
