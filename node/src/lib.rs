//! The node agent ("kubelet") of kommit: runs the pods bound to its node through a
//! container runtime and reports their status, the Node and its Lease.
//!
//! # Using it
//!
//! ```no_run
//! # async fn wire(control: std::sync::Arc<dyn kommit_node::ControlPlane>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use kommit_node::image::DemoProgram;
//! use kommit_node::runtime::docker::{DockerConfig, DockerRuntime};
//! use kommit_node::{Agent, AgentConfig};
//!
//! // The kommit binary runs the demo workloads as `kommit demo <workload>`.
//! let demo = DemoProgram::current(&["demo"])?;
//! let runtime = Arc::new(DockerRuntime::connect(DockerConfig::new("node-1", demo)).await?);
//! let agent = Agent::new(AgentConfig::new("node-1"), runtime, control);
//! agent.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! * [`Agent`] / [`AgentConfig`]: the agent loop (register Node, renew Lease, watch pods,
//!   one worker per pod, relist every second, remove strays, report PodStatus and Events).
//! * [`ControlPlane`]: everything the agent needs from the control plane; implement it over
//!   the cache or the API. [`MemoryControlPlane`] is an in-memory one (tests, demos).
//! * [`runtime::Runtime`]: sandboxes, containers, images, exec, logs.
//!   [`runtime::docker::DockerRuntime`] (bollard; pod containers share a sandbox
//!   container's network namespace) and [`runtime::process::ProcessRuntime`] (host
//!   processes under a shim; for machines without Docker). `Runtime::exec` is what exec
//!   probes use; [`container_logs`] finds a pod container's (or `--previous`) log.
//! * [`demo`]: the built-in workloads (`http`, `flip-health`, `exit`, `sleep`, `pause`);
//!   the binary must route `kommit demo <args>` to [`demo::main`] — the Docker sandbox and
//!   the process runtime's shim (`demo process-shim`) depend on it.
//! * [`image`]: pull policy, image errors (`ErrImagePull`, `ErrImageNeverPull`, ...) and the
//!   node's own demo image `kommit.dev/demo:<any tag>`.
//! * [`node_info`]: the Node object and status, the Lease body. [`backoff`]: CrashLoopBackOff.
//! * [`spec`]: from a pod's container to a runtime config (env, `$(VAR)`, quantities).
//! * [`labels`]: the labels on every runtime object (adoption after a restart).
//! * [`volumes`]: pod volumes (configMap, secret, downwardAPI, projected, emptyDir,
//!   hostPath) written with Kubernetes' atomic `..data` scheme, and each container's mounts.
//!
//! # Images without a registry
//!
//! No registry is reachable on kommit's machines. The node provides `kommit.dev/demo:<tag>`
//! (every tag is the same image) itself: on Docker it imports a root filesystem made of
//! its own binary (`std::env::current_exe()`), the shared libraries `ldd` lists (copied
//! at their paths) and Debian's `busybox-static` with a link per applet, with
//! `ENTRYPOINT ["/kommit", "demo"]`, so a pod's `args: ["http"]` picks the workload. The
//! image carries the SHA-256 of its contents and is imported again only when the binary
//! changed. The process runtime runs the same workloads by starting the binary itself, and
//! runs other images' commands from the host. Any other image follows `imagePullPolicy`:
//! a failed or timed-out pull is `ErrImagePull` then `ImagePullBackOff` with the daemon's
//! message; a missing image with `Never` is `ErrImageNeverPull`.
//!
//! # What the worker does (as the kubelet)
//!
//! restartPolicy Always/OnFailure/Never with CrashLoopBackOff (10 s doubling to 300 s,
//! reset after 10 minutes running); a container removed behind the agent's back is noticed
//! within a relist and restarted (`lastState` reason `ContainerStatusUnknown`); a running
//! container whose spec changed is replaced; init containers run in order; a pod with
//! `metadata.deletionTimestamp` is stopped with its grace period (SIGTERM, then SIGKILL)
//! and reported Succeeded/Failed; a pod no longer in the set has its containers removed.
//! Containers are stopped as the kubelet kills them: the preStop hook (exec or httpGet)
//! within the grace period, then SIGTERM, then SIGKILL when the grace has passed.
//! [`probe`]s: liveness, readiness and startup (exec through the runtime, TCP, HTTP GET,
//! gRPC health check),
//! one task per running container; readiness sets the container's `ready` and the pod's
//! Ready/ContainersReady conditions, a failed liveness or startup probe kills the
//! container (event `Killing`) and restartPolicy restarts it with the crash back-off.

pub mod agent;
pub mod backoff;
pub mod control;
pub mod demo;
pub mod dns;
pub mod events;
pub mod image;
pub mod labels;
pub mod node_info;
pub mod probe;
pub mod runtime;
pub mod spec;
mod status;
pub mod volumes;
mod worker;

pub use agent::{Agent, AgentConfig, AgentError, container_logs};
pub use control::{ControlPlane, ControlPlaneError, MemoryControlPlane};
pub use status::qos_class;
