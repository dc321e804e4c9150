//! The node agent on the process runtime: the same scenarios as on Docker.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::scenarios::{self, Harness};
use common::*;
use kommit_node::runtime::Runtime;
use kommit_node::runtime::process::{ProcessConfig, ProcessRuntime};

struct Processes {
    node: String,
    dir: tempfile::TempDir,
    rt: Arc<ProcessRuntime>,
}

impl Processes {
    fn new(prefix: &str) -> Self {
        let node = unique(prefix);
        let dir = tempfile::tempdir().unwrap();
        let rt = Arc::new(
            ProcessRuntime::new(ProcessConfig {
                node_name: node.clone(),
                data_dir: dir.path().to_path_buf(),
                demo: demo_program(),
                host_ip: "127.0.0.1".into(),
            })
            .unwrap(),
        );
        Processes { node, dir, rt }
    }

    fn state_dirs(&self, sub: &str) -> Vec<(PathBuf, serde_json::Value)> {
        let root = self.dir.path().join("process").join(&self.node).join(sub);
        let file = if sub == "sandboxes" {
            "sandbox.json"
        } else {
            "config.json"
        };
        let Ok(rd) = std::fs::read_dir(root) else {
            return vec![];
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| {
                let v = serde_json::from_slice(&std::fs::read(e.path().join(file)).ok()?).ok()?;
                Some((e.path(), v))
            })
            .collect()
    }
}

/// Kills every process the test's containers left (also on panic).
impl Drop for Processes {
    fn drop(&mut self) {
        for (dir, _) in self.state_dirs("containers") {
            if let Ok(data) = std::fs::read(dir.join("pid.json"))
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

impl Harness for Processes {
    fn node(&self) -> &str {
        &self.node
    }
    fn runtime(&self) -> Arc<dyn Runtime> {
        self.rt.clone()
    }
    fn remove_behind_back(&self, id: &str) {
        // What `docker rm -f` does: kill the process, forget the container.
        let dir = self
            .dir
            .path()
            .join("process")
            .join(&self.node)
            .join("containers")
            .join(id);
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("pid.json")).unwrap()).unwrap();
        let pid = v["pid"].as_i64().unwrap();
        let out = std::process::Command::new("kill")
            .args(["-9", "--", &format!("-{pid}")])
            .output()
            .unwrap();
        assert!(out.status.success());
        // The killed supervisor may still be writing its exit record while it dies:
        // retry until nothing writes into the folder any more.
        let mut attempts = 0;
        while let Err(e) = std::fs::remove_dir_all(&dir) {
            attempts += 1;
            assert!(attempts < 100, "cannot remove {}: {e}", dir.display());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    fn objects_of(&self, uid: &str) -> Vec<String> {
        self.state_dirs("sandboxes")
            .into_iter()
            .chain(self.state_dirs("containers"))
            .filter(|(_, v)| v["labels"]["kommit.dev/pod-uid"] == uid)
            .map(|(_, v)| v["id"].as_str().unwrap().to_string())
            .collect()
    }
    fn free_port(&self) -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
    fn workdir(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }
    fn wget(&self) -> &str {
        "/bin/busybox wget"
    }
}

#[tokio::test]
async fn two_containers_share_network_and_get_env_args_workdir() {
    scenarios::two_containers_share_network_and_get_env_args_workdir(&Processes::new("pa-net"))
        .await;
}

#[tokio::test]
async fn removed_container_is_restarted() {
    scenarios::removed_container_is_restarted(&Processes::new("pa-rm")).await;
}

#[tokio::test]
async fn restart_policies_and_exit_codes() {
    scenarios::restart_policies_and_exit_codes(&Processes::new("pa-policy")).await;
}

#[tokio::test]
async fn adoption_after_agent_restart() {
    scenarios::adoption_after_agent_restart(&Processes::new("pa-adopt")).await;
}

#[tokio::test]
async fn spec_change_and_graceful_deletion() {
    scenarios::spec_change_and_graceful_deletion(&Processes::new("pa-change")).await;
}

#[tokio::test]
async fn probes_and_pre_stop() {
    scenarios::probes_and_pre_stop(&Processes::new("pa-probes")).await;
}

#[tokio::test]
async fn pre_stop_exec_then_sigkill_after_grace() {
    scenarios::pre_stop_exec_then_sigkill_after_grace(&Processes::new("pa-prestop")).await;
}
