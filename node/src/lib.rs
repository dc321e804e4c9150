//! The node agent ("kubelet"): runs the pods bound to its node through a container runtime.

pub mod agent;
pub mod backoff;
pub mod control;
pub mod demo;
pub mod events;
pub mod image;
pub mod labels;
pub mod node_info;
pub mod runtime;
pub mod spec;
mod status;
mod worker;

pub use agent::{Agent, AgentConfig, AgentError, container_logs};
pub use control::{ControlPlane, ControlPlaneError, MemoryControlPlane};
pub use status::qos_class;
