//! The Docker runtime against the real engine: demo image, sandbox, shared network
//! namespace, env/args/workingDir, exec, logs, image policies.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{DockerCleanup, demo_program, unique, wait_for};
use kommit_node::image::{ImageError, PullPolicy};
use kommit_node::runtime::docker::{DockerConfig, DockerRuntime};
use kommit_node::runtime::{
    ContainerConfig, ContainerState, ListFilter, LogOptions, PodRef, Runtime, SandboxConfig,
    SandboxState,
};

async fn runtime(node: &str) -> DockerRuntime {
    let mut cfg = DockerConfig::new(node, demo_program());
    cfg.pull_timeout = Duration::from_secs(20);
    DockerRuntime::connect(cfg).await.unwrap()
}

fn pod(name: &str) -> PodRef {
    PodRef {
        namespace: "default".into(),
        name: name.into(),
        uid: unique("uid"),
    }
}

fn container(name: &str, image: &str, command: &[&str], args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        attempt: 0,
        image: image.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        working_dir: None,
        ports: vec![],
        resources: Default::default(),
        spec_hash: "h".into(),
        termination_grace: Duration::from_secs(2),
        mounts: vec![],
    }
}

async fn wait_exited(rt: &DockerRuntime, id: &str) -> kommit_node::runtime::ContainerStatus {
    wait_for(Duration::from_secs(30), "container to exit", || async {
        rt.list_containers(&ListFilter::all())
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.id == id && c.state == ContainerState::Exited)
    })
    .await
}

#[tokio::test]
async fn pod_containers_share_the_sandbox_network_and_honour_env_args_workdir() {
    let node = unique("dock-net");
    let _cleanup = DockerCleanup(node.clone());
    let rt = runtime(&node).await;
    let image = "kommit.dev/demo:test-net";
    rt.ensure_image(image, PullPolicy::IfNotPresent)
        .await
        .unwrap();

    let p = pod("web-0");
    let sandbox = rt
        .run_sandbox(&SandboxConfig {
            pod: p.clone(),
            attempt: 0,
            hostname: p.name.clone(),
            ports: vec![],
            termination_grace: Duration::from_secs(2),
            dns: Some(kommit_node::dns::DnsConfig {
                nameservers: vec!["192.0.2.53".into()],
                searches: vec!["default.svc.cluster.local".into(), "cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
        })
        .await
        .unwrap();
    assert_eq!(sandbox.state, SandboxState::Ready);
    assert!(sandbox.ip.is_some(), "the sandbox has the pod IP");

    // The server: the demo image's entrypoint with args picking the workload.
    let mut server = container("server", image, &[], &["http", "--port", "8080"]);
    server.env = vec![("PAYLOAD".into(), "from-env".into())];
    let server_id = rt.create_container(&sandbox, &server).await.unwrap();
    rt.start_container(&server_id).await.unwrap();

    // The client reaches the server on localhost: same network namespace.
    let client = container(
        "client",
        image,
        &["sh", "-c"],
        &[
            "for i in $(seq 50); do wget -qO- http://localhost:8080/ && exit 0; sleep 0.1; done; exit 7",
        ],
    );
    let client_id = rt.create_container(&sandbox, &client).await.unwrap();
    rt.start_container(&client_id).await.unwrap();
    let done = wait_exited(&rt, &client_id).await;
    let log = String::from_utf8(rt.logs(&client_id, LogOptions::default()).await.unwrap()).unwrap();
    assert_eq!(done.exit_code, Some(0), "client log: {log}");
    assert!(
        log.contains("pod: web-0"),
        "answer names the pod (hostname): {log}"
    );
    assert!(log.contains("payload: from-env"), "payload from env: {log}");

    // env, command/args expansion already done by the agent, and workingDir.
    let mut envy = container("envy", image, &["sh", "-c"], &["echo \"$GREETING\"; pwd"]);
    envy.env = vec![("GREETING".into(), "hello there".into())];
    envy.working_dir = Some("/tmp".into());
    let envy_id = rt.create_container(&sandbox, &envy).await.unwrap();
    rt.start_container(&envy_id).await.unwrap();
    let st = wait_exited(&rt, &envy_id).await;
    assert_eq!(st.exit_code, Some(0));
    assert_eq!(st.reason.as_deref(), Some("Completed"));
    let log = String::from_utf8(rt.logs(&envy_id, LogOptions::default()).await.unwrap()).unwrap();
    assert_eq!(log, "hello there\n/tmp\n");

    // exec in the running server.
    let r = rt
        .exec(
            &server_id,
            &["sh".into(), "-c".into(), "echo $PAYLOAD; exit 3".into()],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&r.stdout), "from-env\n");

    // The sandbox's resolver settings reach the pod's containers.
    let r = rt
        .exec(
            &server_id,
            &["cat".into(), "/etc/resolv.conf".into()],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let conf = String::from_utf8_lossy(&r.stdout);
    let lines: Vec<&str> = conf.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(lines.contains(&"nameserver 192.0.2.53"), "{conf}");
    assert!(
        lines.contains(&"search default.svc.cluster.local cluster.local"),
        "{conf}"
    );
    assert!(lines.contains(&"options ndots:5"), "{conf}");
    let gateway = rt.pod_gateway().await.unwrap();
    assert!(
        matches!(gateway, Some(std::net::IpAddr::V4(_))),
        "the bridge has a gateway: {gateway:?}"
    );

    // Labels tie containers to the pod; listing by pod sees all three.
    let mine = rt.list_containers(&ListFilter::pod(&p.uid)).await.unwrap();
    let mut names: Vec<_> = mine.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["client", "envy", "server"]);
    assert!(mine.iter().all(|c| c.pod == p));

    // Stop with grace: the demo server exits on SIGTERM (exit 0), long before SIGKILL.
    let t = std::time::Instant::now();
    rt.stop_container(&server_id, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(15), "stopped on SIGTERM");
    let st = wait_exited(&rt, &server_id).await;
    assert_eq!(st.exit_code, Some(0));
    for c in mine {
        rt.remove_container(&c.id).await.unwrap();
    }
    rt.stop_sandbox(&sandbox.id).await.unwrap();
    rt.remove_sandbox(&sandbox.id).await.unwrap();
    assert!(
        rt.list_sandboxes(&ListFilter::pod(&p.uid))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn exit_codes_and_start_errors_are_reported() {
    let node = unique("dock-exit");
    let _cleanup = DockerCleanup(node.clone());
    let rt = runtime(&node).await;
    let image = "kommit.dev/demo:test-exit";
    rt.ensure_image(image, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    let p = pod("exiter");
    let sandbox = rt
        .run_sandbox(&SandboxConfig {
            pod: p.clone(),
            attempt: 0,
            hostname: p.name.clone(),
            ports: vec![],
            termination_grace: Duration::from_secs(1),
            dns: None,
        })
        .await
        .unwrap();
    let c = container("exit", image, &[], &["exit", "--code", "42"]);
    let id = rt.create_container(&sandbox, &c).await.unwrap();
    rt.start_container(&id).await.unwrap();
    let st = wait_exited(&rt, &id).await;
    assert_eq!(st.exit_code, Some(42));
    assert_eq!(st.reason.as_deref(), Some("Error"));
    assert!(st.started_at.is_some() && st.finished_at.is_some());
    assert!(st.finished_at >= st.started_at);

    let bad = container("bad", image, &["/no/such/binary"], &[]);
    let id = rt.create_container(&sandbox, &bad).await.unwrap();
    let err = rt.start_container(&id).await.unwrap_err();
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
}

#[tokio::test]
async fn missing_image_with_never_is_err_image_never_pull() {
    let node = unique("dock-never");
    let rt = runtime(&node).await;
    let t = std::time::Instant::now();
    let err = rt
        .ensure_image("kommit.test/absent:1", PullPolicy::Never)
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, ImageError::NeverPull { .. }), "{err:?}");
    assert_eq!(err.reason(), "ErrImageNeverPull");
    assert!(err.to_string().contains("kommit.test/absent:1"));
}

#[tokio::test]
async fn pull_without_a_registry_fails_with_the_daemons_message() {
    let node = unique("dock-pull");
    let rt = runtime(&node).await;
    let t = std::time::Instant::now();
    // No registry is reachable: the pull fails (or hits the pull timeout), never hangs.
    let err = rt
        .ensure_image("kommit.invalid/nothing:1", PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(err.reason(), "ErrImagePull", "{err:?}");
    match err {
        ImageError::Pull { message, .. } => assert!(!message.is_empty()),
        other => panic!("expected a pull error, got {other:?}"),
    }
}

#[tokio::test]
async fn demo_image_is_reused_while_the_binary_is_unchanged() {
    let node = unique("dock-img");
    let rt = runtime(&node).await;
    let a = rt
        .ensure_image("kommit.dev/demo:reuse-a", PullPolicy::Always)
        .await
        .unwrap();
    let b = rt
        .ensure_image("kommit.dev/demo:reuse-b", PullPolicy::Never)
        .await
        .unwrap();
    assert_eq!(a, b, "every tag is the same image");
    let again = rt.ensure_demo_image("reuse-a").await.unwrap();
    assert_eq!(a, again);
}

/// Limits reach Docker (`docker inspect` shows them) and mounts are binds, read-only where
/// asked: the container reads the node's file and cannot write through a read-only mount.
#[tokio::test]
async fn limits_and_bind_mounts_reach_the_container() {
    let node = unique("dock-lim");
    let _cleanup = DockerCleanup(node.clone());
    let rt = runtime(&node).await;
    let image = "kommit.dev/demo:test-lim";
    rt.ensure_image(image, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("hello"), "from the node").unwrap();
    let p = pod("lim-0");
    let sandbox = rt
        .run_sandbox(&SandboxConfig {
            pod: p.clone(),
            attempt: 0,
            hostname: p.name.clone(),
            ports: vec![],
            termination_grace: Duration::from_secs(2),
            dns: None,
        })
        .await
        .unwrap();
    let mut c = container(
        "lim",
        image,
        &["sh", "-c"],
        &["cat /ro/hello; echo; echo x > /ro/new && echo wrote; echo y > /rw/new && cat /rw/new"],
    );
    c.resources.memory_limit_bytes = Some(64 * 1024 * 1024);
    c.resources.cpu_limit_millis = Some(500);
    c.resources.cpu_request_millis = Some(250);
    c.mounts = vec![
        kommit_node::runtime::Mount {
            host_path: files.path().to_path_buf(),
            container_path: "/ro".into(),
            read_only: true,
        },
        kommit_node::runtime::Mount {
            host_path: files.path().to_path_buf(),
            container_path: "/rw".into(),
            read_only: false,
        },
    ];
    let id = rt.create_container(&sandbox, &c).await.unwrap();
    let out = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{json .HostConfig}}", &id])
        .output()
        .unwrap();
    let hc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hc["Memory"], 64 * 1024 * 1024);
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["CpuShares"], 256);
    rt.start_container(&id).await.unwrap();
    let st = wait_exited(&rt, &id).await;
    let log = String::from_utf8(rt.logs(&id, LogOptions::default()).await.unwrap()).unwrap();
    assert_eq!(st.exit_code, Some(0), "{log}");
    // stdout and stderr (the refused write) may interleave in any order.
    assert!(log.lines().any(|l| l == "from the node"), "{log}");
    assert!(
        !log.contains("wrote"),
        "a read-only mount was written: {log}"
    );
    assert!(log.lines().any(|l| l == "y"), "{log}");
    assert_eq!(
        std::fs::read_to_string(files.path().join("new")).unwrap(),
        "y\n"
    );
}
