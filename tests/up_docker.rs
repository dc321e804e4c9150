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

/// `kommit up examples/hello` in a checkout: the folder's repository, its current branch,
/// the folder as manifest path, a data directory outside the work tree.
#[test]
fn a_folder_inside_a_work_tree_is_that_repository_and_path() {
    let node = node_name("up-folder");
    let _cleanup = DockerCleanup(node.clone());
    let repo = GitRepo::init();
    let state = tempfile::tempdir().unwrap();
    // Files outside the folder are not manifests kommit should read.
    repo.write("Cargo.toml", "[workspace]\n");
    repo.write("docs/broken.yaml", "kind: [not a manifest\n");
    repo.write(
        "examples/hello/web.yaml",
        &deployment(2, "[http, --port, \"8080\"]", "hi"),
    );
    repo.commit("example");
    let port = up_support::free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_kommit"))
        .current_dir(repo.path())
        .args([
            "up",
            "examples/hello",
            "--runtime",
            "docker",
            "--node-name",
            &node,
        ])
        .args(["--etcd-listen", &format!("127.0.0.1:{port}")])
        .env("XDG_STATE_HOME", state.path())
        .env("KOMMIT_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while docker_containers(&node).len() < 2 {
        assert!(start.elapsed() < T, "the example did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("branch main folder examples/hello"), "{text}");
    assert!(
        text.contains(&format!(
            "data directory: {}",
            state.path().join("kommit/repo-examples-hello").display()
        )),
        "{text}"
    );
    assert!(!repo.path().join(".kommit").exists());
    assert_eq!(
        repo.git(&["status", "--porcelain"]),
        "",
        "kommit wrote into the work tree"
    );
}
