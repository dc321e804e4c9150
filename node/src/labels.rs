//! Labels kommit puts on every sandbox and container it starts.
//!
//! They tie a runtime object to its node and pod so that an agent that restarts adopts
//! what it finds instead of starting duplicates (Kubernetes' kubelet does the same with
//! its `io.kubernetes.*` labels). `docker ps --filter label=kommit.dev/node=NAME` shows
//! a node's containers.

/// Node name the object belongs to.
pub const NODE: &str = "kommit.dev/node";
/// `sandbox` or `container`.
pub const KIND: &str = "kommit.dev/kind";
/// Value of [`KIND`] for a pod sandbox.
pub const KIND_SANDBOX: &str = "sandbox";
/// Value of [`KIND`] for a pod container.
pub const KIND_CONTAINER: &str = "container";
/// Pod namespace.
pub const POD_NAMESPACE: &str = "kommit.dev/pod-namespace";
/// Pod name.
pub const POD_NAME: &str = "kommit.dev/pod-name";
/// Pod UID.
pub const POD_UID: &str = "kommit.dev/pod-uid";
/// Container name within the pod (containers only).
pub const CONTAINER_NAME: &str = "kommit.dev/container-name";
/// Hash of the container spec the container was made from.
pub const SPEC_HASH: &str = "kommit.dev/spec-hash";
/// Attempt number: the restart count of a container, the generation of a sandbox.
pub const ATTEMPT: &str = "kommit.dev/attempt";
/// Termination grace period (seconds) to use when stopping it.
pub const GRACE_SECONDS: &str = "kommit.dev/termination-grace-seconds";
/// On the demo image: SHA-256 of its contents (binary, libraries, busybox).
pub const DEMO_CONTENT_HASH: &str = "kommit.dev/demo-content-sha256";
