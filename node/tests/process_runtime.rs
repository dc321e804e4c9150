//! The process runtime's own behaviour: shim, logs, exec, start errors, limits, and
//! adoption by a new runtime instance (pid plus start time).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{demo_program, unique, wait_for};
use kommit_node::runtime::process::{ProcessConfig, ProcessRuntime};
use kommit_node::runtime::{
    ContainerConfig, ContainerState, ContainerStatus, ListFilter, LogOptions, PodRef, Resources,
    Runtime, SandboxConfig, SandboxStatus,
};

fn runtime(node: &str, dir: &std::path::Path) -> ProcessRuntime {
    ProcessRuntime::new(ProcessConfig {
        node_name: node.into(),
        data_dir: dir.to_path_buf(),
        demo: demo_program(),
        host_ip: "127.0.0.1".into(),
    })
    .unwrap()
}

async fn sandbox(rt: &ProcessRuntime) -> SandboxStatus {
    rt.run_sandbox(&SandboxConfig {
        pod: PodRef {
            namespace: "default".into(),
            name: "p".into(),
            uid: unique("uid"),
        },
        attempt: 0,
        hostname: "p".into(),
        ports: vec![],
        termination_grace: Duration::from_secs(1),
        dns: None,
    })
    .await
    .unwrap()
}

fn config(name: &str, image: &str, command: &[&str], args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        attempt: 0,
        image: image.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![("GREETING".into(), "hi".into())],
        working_dir: None,
        ports: vec![],
        resources: Resources::default(),
        spec_hash: "h".into(),
        termination_grace: Duration::from_secs(2),
        mounts: vec![],
    }
}

/// Where the process runtime keeps a container's state.
fn container_dir(data: &std::path::Path, node: &str, id: &str) -> std::path::PathBuf {
    data.join("process").join(node).join("containers").join(id)
}

async fn status(rt: &ProcessRuntime, id: &str) -> ContainerStatus {
    rt.list_containers(&ListFilter::all())
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == id)
        .unwrap()
}

async fn wait_exit(rt: &ProcessRuntime, id: &str) -> ContainerStatus {
    wait_for(Duration::from_secs(20), "exit", || async {
        Some(status(rt, id).await).filter(|s| s.state == ContainerState::Exited)
    })
    .await
}

#[tokio::test]
async fn runs_logs_execs_and_reports_exits() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(&unique("pr-run"), dir.path());
    let sb = sandbox(&rt).await;
    assert_eq!(sb.ip.as_deref(), Some("127.0.0.1"));

    // A host command: env and output captured; the demo image's workloads by args.
    let id = rt
        .create_container(
            &sb,
            &config(
                "echo",
                "busybox",
                &["sh", "-c"],
                &["echo $GREETING $HOSTNAME; echo two >&2; exit 4"],
            ),
        )
        .await
        .unwrap();
    assert_eq!(status(&rt, &id).await.state, ContainerState::Created);
    rt.start_container(&id).await.unwrap();
    let st = wait_exit(&rt, &id).await;
    assert_eq!(
        (st.exit_code, st.reason.as_deref()),
        (Some(4), Some("Error"))
    );
    assert!(st.started_at.is_some() && st.finished_at >= st.started_at);
    let log = String::from_utf8(rt.logs(&id, LogOptions::default()).await.unwrap()).unwrap();
    assert_eq!(log, "hi p\ntwo\n");
    let tail =
        String::from_utf8(rt.logs(&id, LogOptions { tail: Some(1) }).await.unwrap()).unwrap();
    assert_eq!(tail, "two\n");

    let id = rt
        .create_container(&sb, &config("demo", "kommit.dev/demo:x", &[], &["sleep"]))
        .await
        .unwrap();
    rt.start_container(&id).await.unwrap();
    assert_eq!(status(&rt, &id).await.state, ContainerState::Running);
    let r = rt
        .exec(
            &id,
            &["sh".into(), "-c".into(), "echo $GREETING; exit 2".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.exit_code, String::from_utf8_lossy(&r.stdout).as_ref()),
        (2, "hi\n")
    );
    let err = rt
        .exec(
            &id,
            &["sleep".into(), "5".into()],
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");

    // Stop: the demo workload exits 0 on SIGTERM.
    let t = std::time::Instant::now();
    rt.stop_container(&id, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(wait_exit(&rt, &id).await.exit_code, Some(0));

    // SIGTERM ignored: SIGKILL after the grace period (exit 137).
    let id = rt
        .create_container(
            &sb,
            &config(
                "stubborn",
                "busybox",
                &["sh", "-c"],
                &["trap '' TERM; while true; do sleep 0.1; done"],
            ),
        )
        .await
        .unwrap();
    rt.start_container(&id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    rt.stop_container(&id, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(wait_exit(&rt, &id).await.exit_code, Some(137));

    // A command that does not exist fails to start, with the reason.
    let id = rt
        .create_container(&sb, &config("bad", "busybox", &["/no/such/program"], &[]))
        .await
        .unwrap();
    let err = rt.start_container(&id).await.unwrap_err();
    assert!(err.to_string().contains("/no/such/program"), "{err}");
    let st = status(&rt, &id).await;
    assert_eq!(
        (st.state, st.reason.as_deref()),
        (ContainerState::Exited, Some("StartError"))
    );

    // Another image without a command cannot run from the host: a clear error.
    let err = rt
        .create_container(&sb, &config("nocmd", "nginx:1", &[], &[]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("give the container a command"),
        "{err}"
    );

    for c in rt.list_containers(&ListFilter::all()).await.unwrap() {
        rt.remove_container(&c.id).await.unwrap();
    }
    assert!(
        rt.list_containers(&ListFilter::all())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_new_runtime_instance_adopts_running_processes_and_ignores_reused_pids() {
    let dir = tempfile::tempdir().unwrap();
    let node = unique("pr-adopt");
    let rt = runtime(&node, dir.path());
    let sb = sandbox(&rt).await;
    let id = rt
        .create_container(&sb, &config("s", "kommit.dev/demo:x", &[], &["sleep"]))
        .await
        .unwrap();
    rt.start_container(&id).await.unwrap();
    drop(rt);

    // A new instance (a restarted agent) sees the same running container, then stops it.
    let rt = runtime(&node, dir.path());
    let st = status(&rt, &id).await;
    assert_eq!(st.state, ContainerState::Running);
    assert_eq!(st.name, "s");
    assert_eq!(
        rt.list_sandboxes(&ListFilter::pod(&sb.pod.uid))
            .await
            .unwrap()
            .len(),
        1
    );
    rt.stop_container(&id, Duration::from_secs(5))
        .await
        .unwrap();
    // SIGTERM ended it (0 once its handler is installed, 143 if it came earlier), not SIGKILL.
    let code = wait_exit(&rt, &id).await.exit_code;
    assert!(matches!(code, Some(0) | Some(143)), "{code:?}");

    // A pid file whose start time does not match (the pid was reused) is not "running".
    let id2 = rt
        .create_container(&sb, &config("t", "kommit.dev/demo:x", &[], &["sleep"]))
        .await
        .unwrap();
    let cdir = container_dir(dir.path(), &node, &id2);
    let me = std::process::id();
    std::fs::write(
        cdir.join("pid.json"),
        format!(r#"{{"pid": {me}, "start_ticks": 1, "started_at": "2020-01-01T00:00:00Z"}}"#),
    )
    .unwrap();
    let st = status(&rt, &id2).await;
    assert_eq!(st.state, ContainerState::Exited);
    assert_eq!(st.reason.as_deref(), Some("ContainerStatusUnknown"));
    rt.remove_container(&id2).await.unwrap();
    rt.remove_container(&id).await.unwrap();
}

/// Memory and CPU limits land in the container's cgroup when the host lets us make one
/// (root with a writable cgroup file system, as on CI).
#[tokio::test]
async fn limits_go_into_a_cgroup() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(&unique("pr-limits"), dir.path());
    let sb = sandbox(&rt).await;
    let mut cfg = config(
        "limited",
        "busybox",
        &["sh", "-c"],
        &["cat /proc/self/cgroup"],
    );
    cfg.resources.memory_limit_bytes = Some(64 * 1024 * 1024);
    cfg.resources.cpu_limit_millis = Some(500);
    let id = rt.create_container(&sb, &cfg).await.unwrap();
    rt.start_container(&id).await.unwrap();
    assert_eq!(wait_exit(&rt, &id).await.exit_code, Some(0));
    let log = String::from_utf8(rt.logs(&id, LogOptions::default()).await.unwrap()).unwrap();
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (mem_file, limit) = if v2 {
        (
            format!(
                "/sys/fs/cgroup/kommit/{}/{id}/memory.max",
                rt.config().node_name
            ),
            "67108864",
        )
    } else {
        (
            format!(
                "/sys/fs/cgroup/memory/kommit/{}/{id}/memory.limit_in_bytes",
                rt.config().node_name
            ),
            "67108864",
        )
    };
    let root = nix_is_root();
    if root {
        assert!(
            log.contains(&format!("kommit/{}/{id}", rt.config().node_name)),
            "in the container's cgroup: {log}"
        );
        assert_eq!(std::fs::read_to_string(&mem_file).unwrap().trim(), limit);
    }
    rt.remove_container(&id).await.unwrap();
    assert!(
        !std::path::Path::new(&mem_file).exists(),
        "the cgroup is removed with the container"
    );
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Whether a live process has `marker` in its command line.
fn process_with(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
    })
}

/// A restarted agent may find a container "created" (no pid yet) while the previous
/// agent's shim is starting it, and remove it: the process must not outlive that.
#[tokio::test]
async fn a_container_removed_while_its_shim_starts_it_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let node = unique("pr-race");
    let starter = std::sync::Arc::new(runtime(&node, dir.path()));
    let remover = runtime(&node, dir.path());
    let sb = sandbox(&starter).await;
    // The check below sees a started container's process.
    let marker = unique("kommit-race-marker");
    let script = format!("sleep 300; echo {marker}");
    let id = starter
        .create_container(&sb, &config("s", "host", &["/bin/sh", "-c", &script], &[]))
        .await
        .unwrap();
    starter.start_container(&id).await.unwrap();
    assert!(process_with(&marker));
    remover.remove_container(&id).await.unwrap();
    for round in 0..20 {
        let marker = unique("kommit-race-marker");
        // `sh` stays (a command follows sleep), so its command line keeps the marker.
        let script = format!("sleep 300; echo {marker}");
        let id = starter
            .create_container(&sb, &config("s", "host", &["/bin/sh", "-c", &script], &[]))
            .await
            .unwrap();
        let cdir = container_dir(dir.path(), &node, &id);
        let rt = starter.clone();
        let start_id = id.clone();
        let start = tokio::spawn(async move { rt.start_container(&start_id).await });
        // Remove as soon as the shim runs, before (or while) it records the pid.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cdir.join("shim.json").exists() {
            assert!(std::time::Instant::now() < deadline, "the shim never ran");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        remover.remove_container(&id).await.unwrap();
        let _ = start.await.unwrap();
        assert!(!cdir.exists(), "round {round}: the container is removed");
        wait_for(
            Duration::from_secs(5),
            "no process of the removed container",
            || async { (!process_with(&marker)).then_some(()) },
        )
        .await;
    }
}
