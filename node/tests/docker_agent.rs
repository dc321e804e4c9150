//! The node agent on a real Docker engine.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::scenarios::{self, Harness};
use common::*;
use kommit_node::MemoryControlPlane;
use kommit_node::runtime::Runtime;
use kommit_node::runtime::docker::{DockerConfig, DockerRuntime};
use serde_json::json;

struct Docker {
    node: String,
    rt: Arc<DockerRuntime>,
    _cleanup: DockerCleanup,
}

impl Docker {
    async fn new(prefix: &str) -> Self {
        let node = unique(prefix);
        let mut cfg = DockerConfig::new(&node, demo_program());
        cfg.pull_timeout = Duration::from_secs(20);
        let rt = Arc::new(DockerRuntime::connect(cfg).await.unwrap());
        Docker {
            _cleanup: DockerCleanup(node.clone()),
            node,
            rt,
        }
    }
}

impl Harness for Docker {
    fn node(&self) -> &str {
        &self.node
    }
    fn runtime(&self) -> Arc<dyn Runtime> {
        self.rt.clone()
    }
    fn remove_behind_back(&self, id: &str) {
        let out = std::process::Command::new("docker")
            .args(["rm", "-f", id])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker rm -f: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fn objects_of(&self, uid: &str) -> Vec<String> {
        docker_ids(&self.node, Some(&format!("label=kommit.dev/pod-uid={uid}")))
    }
    fn free_port(&self) -> u16 {
        8080
    }
    fn workdir(&self) -> String {
        "/tmp".into()
    }
    fn wget(&self) -> &str {
        "wget"
    }
}

#[tokio::test]
async fn two_containers_share_network_and_get_env_args_workdir() {
    scenarios::two_containers_share_network_and_get_env_args_workdir(&Docker::new("da-net").await)
        .await;
}

#[tokio::test]
async fn removed_container_is_restarted() {
    scenarios::removed_container_is_restarted(&Docker::new("da-rm").await).await;
}

#[tokio::test]
async fn restart_policies_and_exit_codes() {
    scenarios::restart_policies_and_exit_codes(&Docker::new("da-policy").await).await;
}

#[tokio::test]
async fn adoption_after_agent_restart() {
    scenarios::adoption_after_agent_restart(&Docker::new("da-adopt").await).await;
}

#[tokio::test]
async fn missing_image_with_pull_policy_never_is_err_image_never_pull() {
    let h = Docker::new("da-never").await;
    let control = MemoryControlPlane::new();
    let agent = start_agent(&h.node, h.runtime(), &control);
    let p = pod(
        &h.node,
        "never",
        json!({"containers": [{"name": "main", "image": "kommit.test/absent:1", "imagePullPolicy": "Never"}]}),
    );
    let id = uid(&p);
    control.put_pod(p);
    let st = wait_status(
        &control,
        &id,
        Duration::from_secs(60),
        "ErrImageNeverPull",
        |s| waiting_reason(s, "main").as_deref() == Some("ErrImageNeverPull"),
    )
    .await;
    assert_eq!(phase(&st), "Pending");
    let msg = cstatus(&st, "main")
        .unwrap()
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert_eq!(
        msg,
        "Container image \"kommit.test/absent:1\" is not present with pull policy of Never"
    );
    control.delete_pod(&id);
    agent.stop().await;
}

#[tokio::test]
async fn pull_without_a_registry_is_err_image_pull_then_image_pull_back_off() {
    let h = Docker::new("da-pull").await;
    let control = MemoryControlPlane::new();
    let agent = start_agent(&h.node, h.runtime(), &control);
    let p = pod(
        &h.node,
        "puller",
        json!({"containers": [{"name": "main", "image": "kommit.invalid/nothing:1"}]}),
    );
    let id = uid(&p);
    control.put_pod(p);
    let st = wait_status(
        &control,
        &id,
        Duration::from_secs(40),
        "ErrImagePull",
        |s| waiting_reason(s, "main").as_deref() == Some("ErrImagePull"),
    )
    .await;
    let msg = cstatus(&st, "main")
        .unwrap()
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(
        msg.starts_with("Failed to pull image \"kommit.invalid/nothing:1\": "),
        "{msg}"
    );
    let st = wait_status(
        &control,
        &id,
        Duration::from_secs(20),
        "ImagePullBackOff",
        |s| waiting_reason(s, "main").as_deref() == Some("ImagePullBackOff"),
    )
    .await;
    assert_eq!(phase(&st), "Pending");
    control.delete_pod(&id);
    agent.stop().await;
}

#[tokio::test]
async fn node_registers_and_renews_its_lease() {
    let h = Docker::new("da-node").await;
    let control = MemoryControlPlane::new();
    let agent = start_agent(&h.node, h.runtime(), &control);
    let node = wait_for(Duration::from_secs(30), "node registration", || async {
        control.node(&h.node)
    })
    .await;
    let status = node.status.unwrap();
    let info = status.node_info.unwrap();
    assert!(info.kubelet_version.starts_with("kommit/"));
    assert!(info.container_runtime_version.starts_with("docker://"));
    assert!(status.capacity.unwrap().contains_key("memory"));
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    let first = wait_for(Duration::from_secs(30), "a lease", || async {
        control.lease(&h.node)
    })
    .await;
    let t1 = first.spec.unwrap().renew_time.unwrap();
    wait_for(Duration::from_secs(30), "a renewed lease", || async {
        control
            .lease(&h.node)
            .and_then(|l| l.spec?.renew_time)
            .filter(|t| *t != t1)
    })
    .await;
    agent.stop().await;
}

#[tokio::test]
async fn spec_change_and_graceful_deletion() {
    scenarios::spec_change_and_graceful_deletion(&Docker::new("da-change").await).await;
}

#[tokio::test]
async fn probes_and_pre_stop() {
    scenarios::probes_and_pre_stop(&Docker::new("da-probes").await).await;
}

#[tokio::test]
async fn pre_stop_exec_then_sigkill_after_grace() {
    scenarios::pre_stop_exec_then_sigkill_after_grace(&Docker::new("da-prestop").await).await;
}
