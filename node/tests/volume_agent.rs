//! Pod volumes through the agent on both runtimes: a ConfigMap served from its mounted
//! file and updated in place without a restart, a Secret with its mode, a downwardAPI
//! file, a subPath mount, an emptyDir shared by two containers, and the pod's files
//! removed with the pod (and those of a pod that left while no agent ran).
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kommit_node::MemoryControlPlane;
use kommit_node::runtime::Runtime;
use kommit_node::runtime::docker::{DockerConfig, DockerRuntime};
use kommit_node::runtime::process::{ProcessConfig, ProcessRuntime};
use serde_json::json;

const IMAGE: &str = "kommit.dev/demo:test";
const LIMIT: Duration = Duration::from_secs(90);

fn config_map(index: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": "site", "namespace": "default"},
        "data": {"index": index},
    }))
    .unwrap()
}

async fn exec_out(rt: &dyn Runtime, id: &str, script: &str) -> Option<String> {
    let r = rt
        .exec(
            id,
            &["sh".to_string(), "-c".to_string(), script.to_string()],
            Duration::from_secs(10),
        )
        .await
        .ok()?;
    (r.exit_code == 0).then(|| String::from_utf8_lossy(&r.stdout).into_owned())
}

/// The scenario; `port` is where the server listens, `wget` how a container runs wget.
async fn volumes_scenario(node: &str, rt: Arc<dyn Runtime>, port: u16, wget: &str) {
    let control = MemoryControlPlane::new();
    control.put_config_map(config_map("v1"));
    control.put_secret(
        serde_json::from_value::<Secret>(json!({
            "metadata": {"name": "creds", "namespace": "default"},
            "data": {"password": "czNjcmV0"},
        }))
        .unwrap(),
    );
    // Files of a pod that left while no agent ran.
    let pods_dir = std::env::temp_dir()
        .join("kommit-node")
        .join(node)
        .join("pods");
    let ghost = pods_dir.join("ghost-uid");
    std::fs::create_dir_all(ghost.join("volumes/kubernetes.io~empty-dir/x")).unwrap();
    let agent = start_agent(node, rt.clone(), &control);
    // `${KOMMIT_ROOT}` is empty on Docker and the process runtime's mount view otherwise,
    // so the same script works on both.
    let p = pod(
        node,
        "vols",
        json!({
            "volumes": [
                {"name": "site", "configMap": {"name": "site"}},
                {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                {"name": "shared", "emptyDir": {}},
            ],
            "containers": [
                {"name": "server", "image": IMAGE,
                 "args": ["http", "--port", port.to_string(), "--payload-file", "/etc/site/index"],
                 "volumeMounts": [{"name": "site", "mountPath": "/etc/site"}]},
                {"name": "writer", "image": IMAGE, "command": ["sh", "-c"],
                 "args": ["echo \"`cat ${KOMMIT_ROOT}/etc/creds/password` `cat ${KOMMIT_ROOT}/etc/info/name` `cat ${KOMMIT_ROOT}/page`\" > ${KOMMIT_ROOT}/out/line; exec sleep 3600"],
                 "volumeMounts": [
                     {"name": "creds", "mountPath": "/etc/creds"},
                     {"name": "info", "mountPath": "/etc/info"},
                     {"name": "shared", "mountPath": "/out"},
                     {"name": "site", "mountPath": "/page", "subPath": "index"}]},
                {"name": "reader", "image": IMAGE, "command": ["sh", "-c", "exec sleep 3600"],
                 "volumeMounts": [{"name": "shared", "mountPath": "/in", "readOnly": true}]},
            ],
        }),
    );
    let id = uid(&p);
    control.put_pod(p);
    let st = wait_status(&control, &id, LIMIT, "three containers running", |s| {
        running(s, "server") && running(s, "writer") && running(s, "reader")
    })
    .await;
    wait_for(LIMIT, "the stray pod directory to be removed", || {
        let g = ghost.clone();
        async move { (!g.exists()).then_some(()) }
    })
    .await;
    let reader = container_id(&st, "reader");
    let server = container_id(&st, "server");

    // The emptyDir is shared: what the writer wrote (secret + downwardAPI) the reader sees.
    let line = wait_for(LIMIT, "the writer's line in the shared emptyDir", || {
        let rt = rt.clone();
        let reader = reader.clone();
        async move {
            exec_out(rt.as_ref(), &reader, "cat ${KOMMIT_ROOT}/in/line")
                .await
                .filter(|l| !l.is_empty())
        }
    })
    .await;
    assert_eq!(
        line, "s3cret vols v1\n",
        "secret, downwardAPI, subPath file"
    );

    // The server reads the ConfigMap's file.
    let url = format!("{wget} -qO- http://127.0.0.1:{port}/payload");
    let payload = wait_for(LIMIT, "the served ConfigMap file", || {
        let (rt, reader, url) = (rt.clone(), reader.clone(), url.clone());
        async move { exec_out(rt.as_ref(), &reader, &url).await }
    })
    .await;
    assert_eq!(payload, "v1");

    // The files on the node: Kubernetes' layout, modes.
    let vols = pods_dir.join(&id).join("volumes");
    let secret = vols.join("kubernetes.io~secret/creds/password");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o400
    );
    assert!(
        vols.join("kubernetes.io~configmap/site/..data")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // A changed ConfigMap reaches the running server's file; nothing restarts.
    control.put_config_map(config_map("v2"));
    wait_for(LIMIT, "the updated ConfigMap file served", || {
        let (rt, reader, url) = (rt.clone(), reader.clone(), url.clone());
        async move {
            exec_out(rt.as_ref(), &reader, &url)
                .await
                .filter(|p| p == "v2")
        }
    })
    .await;
    let st = control.pod_status(&id).unwrap();
    assert_eq!(restarts(&st, "server"), 0);
    assert_eq!(container_id(&st, "server"), server, "same container");

    // Deleting the pod removes its files.
    control.delete_pod(&id);
    let pod_dir: PathBuf = vols.parent().unwrap().to_path_buf();
    wait_for(LIMIT, "the pod's directory to be removed", || {
        let d = pod_dir.clone();
        async move { (!d.exists()).then_some(()) }
    })
    .await;
    agent.stop().await;
    let _ = std::fs::remove_dir_all(pods_dir.parent().unwrap());
}

#[tokio::test]
async fn volumes_on_docker() {
    let node = unique("dv");
    let _cleanup = DockerCleanup(node.clone());
    let rt = Arc::new(
        DockerRuntime::connect(DockerConfig::new(&node, demo_program()))
            .await
            .unwrap(),
    );
    volumes_scenario(&node, rt, 8080, "wget").await;
}

/// Kills the processes of the test's containers when dropped (also on panic).
struct KillAll(PathBuf);

impl Drop for KillAll {
    fn drop(&mut self) {
        let Ok(rd) = std::fs::read_dir(&self.0) else {
            return;
        };
        for e in rd.flatten() {
            if let Ok(data) = std::fs::read(e.path().join("pid.json"))
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data)
                && let Some(pid) = v["pid"].as_i64()
            {
                let _ = std::process::Command::new("kill")
                    .args(["-9", "--", &format!("-{pid}")])
                    .output();
            }
        }
    }
}

#[tokio::test]
async fn volumes_on_processes() {
    let node = unique("pv");
    let dir = tempfile::tempdir().unwrap();
    let _kill = KillAll(dir.path().join("process").join(&node).join("containers"));
    let rt = Arc::new(
        ProcessRuntime::new(ProcessConfig {
            node_name: node.clone(),
            data_dir: dir.path().to_path_buf(),
            demo: demo_program(),
            host_ip: "127.0.0.1".into(),
        })
        .unwrap(),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    volumes_scenario(&node, rt, port, "/bin/busybox wget").await;
}
