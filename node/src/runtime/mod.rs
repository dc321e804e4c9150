//! The container runtime interface of the node agent.
//!
//! [`Runtime`] is kommit's small version of Kubernetes' CRI: pod sandboxes (the shared
//! network namespace of a pod, Kubernetes' "pause" container), containers inside them,
//! images, exec and logs. Two implementations: [`docker::DockerRuntime`] (a real Docker
//! engine through bollard) and [`process::ProcessRuntime`] (host processes, for machines
//! without Docker).
//!
//! Every sandbox and container a runtime makes carries [labels](crate::labels) naming the
//! node, the pod (namespace, name, UID) and the container, so that a new agent process
//! finds ("adopts") what an earlier one started instead of starting duplicates.

pub mod docker;
pub mod process;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;

use crate::image::{ImageError, PullPolicy};

/// The pod a sandbox or container belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    /// `metadata.namespace` (`default` when the pod has none).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`: what ties containers to one incarnation of the pod.
    pub uid: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which implementation a [`Runtime`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Containers on a Docker engine.
    Docker,
    /// Host processes.
    Process,
}

impl RuntimeKind {
    /// The scheme used in `containerID` (`docker://...`, `process://...`).
    pub fn scheme(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Process => "process",
        }
    }
}

/// A port a pod exposes (from its containers' `ports`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// `containerPort`.
    pub container_port: u16,
    /// `hostPort`, when the port is published on the node.
    pub host_port: Option<u16>,
    /// `hostIP` to publish on (all addresses when unset).
    pub host_ip: Option<String>,
    /// `TCP`, `UDP` or `SCTP` (lower-cased for Docker).
    pub protocol: String,
}

/// What the runtime needs to make a pod sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The pod.
    pub pod: PodRef,
    /// 0 for the pod's first sandbox, +1 each time the sandbox had to be made again.
    pub attempt: u32,
    /// The pod's hostname (its name, as Kubernetes sets it).
    pub hostname: String,
    /// Ports of all the pod's containers (published on the sandbox, which owns the network).
    pub ports: Vec<PortMapping>,
    /// Grace period the agent uses when it stops this pod (kept so strays can be stopped).
    pub termination_grace: Duration,
    /// The pod's resolver settings (see [`crate::dns`]); `None`: the runtime's default.
    pub dns: Option<crate::dns::DnsConfig>,
}

/// The state of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    /// The network namespace exists and containers can join it.
    Ready,
    /// Stopped or broken: the pod needs a new sandbox.
    NotReady,
}

/// A sandbox as the runtime reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxStatus {
    /// Runtime id.
    pub id: String,
    /// Owner pod.
    pub pod: PodRef,
    /// Attempt number (see [`SandboxConfig::attempt`]).
    pub attempt: u32,
    /// Ready or not.
    pub state: SandboxState,
    /// The pod's IP address (the sandbox's address on Docker, the host's for processes).
    pub ip: Option<String>,
    /// When the sandbox was made.
    pub created_at: Option<Timestamp>,
    /// Grace period recorded at creation.
    pub termination_grace: Duration,
}

/// CPU and memory limits and requests, already parsed from Kubernetes quantities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// `limits.cpu` in millicores.
    pub cpu_limit_millis: Option<u64>,
    /// `requests.cpu` in millicores (a relative weight).
    pub cpu_request_millis: Option<u64>,
    /// `limits.memory` in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// `requests.memory` in bytes.
    pub memory_request_bytes: Option<u64>,
}

/// A container as the agent asks a runtime to create it: the pod spec's container with
/// env values resolved and `$(VAR)` references expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Container name in the pod.
    pub name: String,
    /// 0 for the first instance, +1 for every restart (the pod's `restartCount`).
    pub attempt: u32,
    /// Image reference as written in the pod.
    pub image: String,
    /// Kubernetes `command`: replaces the image's ENTRYPOINT when non-empty.
    pub command: Vec<String>,
    /// Kubernetes `args`: replaces the image's CMD when non-empty.
    pub args: Vec<String>,
    /// Environment, in order.
    pub env: Vec<(String, String)>,
    /// `workingDir`.
    pub working_dir: Option<String>,
    /// `ports` of this container.
    pub ports: Vec<PortMapping>,
    /// Limits and requests.
    pub resources: Resources,
    /// Hash of the container spec; a running container whose hash differs is replaced.
    pub spec_hash: String,
    /// Grace period the agent uses when it stops this container.
    pub termination_grace: Duration,
    /// The pod's volumes this container mounts (see [`crate::volumes`]).
    pub mounts: Vec<Mount>,
}

/// A volume (or a part of one, with `subPath`) mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    /// Where the files are on the node.
    pub host_path: std::path::PathBuf,
    /// `mountPath`: where the container sees them.
    pub container_path: String,
    /// Whether the container may not write.
    pub read_only: bool,
}

/// The life-cycle state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Made but not started.
    Created,
    /// Running.
    Running,
    /// Ran and exited (see exit code).
    Exited,
    /// The runtime cannot tell.
    Unknown,
}

/// A container as the runtime reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStatus {
    /// Runtime id.
    pub id: String,
    /// Owner pod.
    pub pod: PodRef,
    /// Container name in the pod.
    pub name: String,
    /// Attempt (restart count) of this instance.
    pub attempt: u32,
    /// Image as requested.
    pub image: String,
    /// Image id the runtime resolved it to.
    pub image_id: String,
    /// State.
    pub state: ContainerState,
    /// Creation time.
    pub created_at: Option<Timestamp>,
    /// Start time (running or exited).
    pub started_at: Option<Timestamp>,
    /// Finish time (exited).
    pub finished_at: Option<Timestamp>,
    /// Exit code (exited).
    pub exit_code: Option<i32>,
    /// Kubernetes-style reason for an exited container: `Completed`, `Error`, `OOMKilled`,
    /// `ContainerStatusUnknown`, `StartError`.
    pub reason: Option<String>,
    /// Detail from the runtime (for example why a start failed).
    pub message: Option<String>,
    /// [`ContainerConfig::spec_hash`] it was made from.
    pub spec_hash: String,
    /// Grace period recorded at creation.
    pub termination_grace: Duration,
}

/// Which containers or sandboxes to list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only those of this pod UID.
    pub pod_uid: Option<String>,
}

impl ListFilter {
    /// Everything of this node.
    pub fn all() -> Self {
        Self::default()
    }
    /// Only one pod's.
    pub fn pod(uid: &str) -> Self {
        Self {
            pod_uid: Some(uid.to_string()),
        }
    }
}

/// What an exec returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// Exit code of the command.
    pub exit_code: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

/// Which part of a container's log to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOptions {
    /// Only the last N lines.
    pub tail: Option<usize>,
}

/// Errors of a runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime itself cannot be reached or failed.
    #[error("container runtime unavailable: {0}")]
    Unavailable(String),
    /// No such sandbox or container.
    #[error("not found: {0}")]
    NotFound(String),
    /// The configuration cannot be run on this runtime (reported as CreateContainerError).
    #[error("{0}")]
    InvalidConfig(String),
    /// Creating failed (reported as CreateContainerError).
    #[error("{0}")]
    Create(String),
    /// Starting failed (reported as RunContainerError).
    #[error("{0}")]
    Start(String),
    /// An exec did not finish within its timeout.
    #[error("command timed out after {0:?}")]
    ExecTimeout(Duration),
    /// Anything else the runtime reported.
    #[error("{0}")]
    Other(String),
}

/// A container runtime: sandboxes, containers, images, exec and logs, scoped to one node.
///
/// Every call returns or fails within a bounded time (image pulls are bounded by the
/// runtime's pull timeout); nothing waits forever on a broken engine.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Which implementation this is.
    fn kind(&self) -> RuntimeKind;

    /// The node this runtime's objects are labelled with.
    fn node_name(&self) -> &str;

    /// Runtime name and version, as the Node reports it (`docker://20.10.24`).
    async fn version(&self) -> Result<String, RuntimeError>;

    /// The host's address as pods see it, where a node-local server (the cluster DNS)
    /// can listen for them: the Docker bridge's gateway. `None` when pods share the
    /// host's network (the process runtime).
    async fn pod_gateway(&self) -> Result<Option<std::net::IpAddr>, RuntimeError> {
        Ok(None)
    }

    /// Makes `image` available according to `policy`; returns the image id.
    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<String, ImageError>;

    /// Makes and starts a pod sandbox.
    async fn run_sandbox(&self, config: &SandboxConfig) -> Result<SandboxStatus, RuntimeError>;

    /// Stops a sandbox (its containers should be stopped first).
    async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError>;

    /// Removes a sandbox; a missing one is not an error.
    async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError>;

    /// Sandboxes of this node.
    async fn list_sandboxes(&self, filter: &ListFilter)
    -> Result<Vec<SandboxStatus>, RuntimeError>;

    /// Creates (does not start) a container in a sandbox; returns its id.
    async fn create_container(
        &self,
        sandbox: &SandboxStatus,
        config: &ContainerConfig,
    ) -> Result<String, RuntimeError>;

    /// Starts a created container.
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError>;

    /// Stops a container: SIGTERM, then SIGKILL after `grace`. A stopped or missing
    /// container is not an error.
    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;

    /// Removes a container (killing it if needed); a missing one is not an error.
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError>;

    /// Containers of this node (sandboxes excluded).
    async fn list_containers(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<ContainerStatus>, RuntimeError>;

    /// Runs a command in a running container and waits for it, at most `timeout`.
    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError>;

    /// A container's log (stdout and stderr interleaved).
    async fn logs(&self, id: &str, options: LogOptions) -> Result<Vec<u8>, RuntimeError>;
}

/// Labels (and the data they carry) as stored on runtime objects.
pub(crate) fn object_labels(
    node: &str,
    pod: &PodRef,
    container: Option<(&str, &str)>,
    attempt: u32,
    grace: Duration,
) -> BTreeMap<String, String> {
    use crate::labels::*;
    let mut l = BTreeMap::new();
    l.insert(NODE.to_string(), node.to_string());
    l.insert(POD_NAMESPACE.to_string(), pod.namespace.clone());
    l.insert(POD_NAME.to_string(), pod.name.clone());
    l.insert(POD_UID.to_string(), pod.uid.clone());
    l.insert(ATTEMPT.to_string(), attempt.to_string());
    l.insert(GRACE_SECONDS.to_string(), grace.as_secs().to_string());
    match container {
        Some((name, hash)) => {
            l.insert(KIND.to_string(), KIND_CONTAINER.to_string());
            l.insert(CONTAINER_NAME.to_string(), name.to_string());
            l.insert(SPEC_HASH.to_string(), hash.to_string());
        }
        None => {
            l.insert(KIND.to_string(), KIND_SANDBOX.to_string());
        }
    }
    l
}

/// Reads back what [`object_labels`] wrote.
pub(crate) struct ParsedLabels {
    pub pod: PodRef,
    pub is_sandbox: bool,
    pub container: String,
    pub spec_hash: String,
    pub attempt: u32,
    pub grace: Duration,
}

pub(crate) fn parse_labels<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<ParsedLabels> {
    use crate::labels::*;
    let pod = PodRef {
        namespace: get(POD_NAMESPACE)?.to_string(),
        name: get(POD_NAME)?.to_string(),
        uid: get(POD_UID)?.to_string(),
    };
    let is_sandbox = get(KIND)? == KIND_SANDBOX;
    Some(ParsedLabels {
        pod,
        is_sandbox,
        container: get(CONTAINER_NAME).unwrap_or_default().to_string(),
        spec_hash: get(SPEC_HASH).unwrap_or_default().to_string(),
        attempt: get(ATTEMPT).and_then(|a| a.parse().ok()).unwrap_or(0),
        grace: Duration::from_secs(
            get(GRACE_SECONDS)
                .and_then(|a| a.parse().ok())
                .unwrap_or(30),
        ),
    })
}

/// Kubernetes' rule for what a container runs, given the image's ENTRYPOINT and CMD:
/// `command` replaces ENTRYPOINT (and drops CMD), `args` replaces CMD.
pub fn effective_argv(
    command: &[String],
    args: &[String],
    image_entrypoint: &[String],
    image_cmd: &[String],
) -> Vec<String> {
    match (command.is_empty(), args.is_empty()) {
        (false, _) => command.iter().chain(args).cloned().collect(),
        (true, false) => image_entrypoint.iter().chain(args).cloned().collect(),
        (true, true) => image_entrypoint.iter().chain(image_cmd).cloned().collect(),
    }
}

/// Reason for an exited container, as Kubernetes names it.
pub(crate) fn exit_reason(exit_code: i32, oom_killed: bool) -> &'static str {
    if oom_killed {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn command_and_args_follow_kubernetes() {
        let ep = v(&["/kommit", "demo"]);
        let cmd = v(&["sleep"]);
        assert_eq!(
            effective_argv(&[], &[], &ep, &cmd),
            v(&["/kommit", "demo", "sleep"])
        );
        assert_eq!(
            effective_argv(&[], &v(&["http"]), &ep, &cmd),
            v(&["/kommit", "demo", "http"])
        );
        assert_eq!(
            effective_argv(&v(&["sh", "-c"]), &[], &ep, &cmd),
            v(&["sh", "-c"])
        );
        assert_eq!(
            effective_argv(&v(&["sh", "-c"]), &v(&["echo hi"]), &ep, &cmd),
            v(&["sh", "-c", "echo hi"])
        );
    }
}
