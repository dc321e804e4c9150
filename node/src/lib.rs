//! The node agent ("kubelet"): runs the pods bound to its node through a container runtime.

pub mod demo;
pub mod image;
pub mod labels;
pub mod runtime;
