//! The service proxy ("kube-proxy"): gives Services stable addresses, in iptables or
//! userspace mode.
//!
//! # Model
//! [`ProxyState`] holds the Services ([`Service`]: cluster IP, type, ports with node
//! ports) and their ready endpoints per port name. Build it from Kubernetes objects with
//! [`convert::service_from_k8s`], [`convert::endpoints_from_k8s`] (core/v1 Endpoints)
//! or [`convert::endpoints_from_slices`] (discovery.k8s.io/v1 EndpointSlices), or
//! directly.
//!
//! # iptables mode ([`iptables`])
//! ```no_run
//! # use kommit_proxy::{ProxyState, iptables::{IptablesProxier, IptablesConfig, SystemRunner}};
//! let mut proxier = IptablesProxier::new(SystemRunner::new(), IptablesConfig::default())?;
//! let state = ProxyState::new(); // filled from the API
//! let report = proxier.sync(&state)?; // call again on every change: only changed chains are written
//! kommit_proxy::iptables::cleanup(&SystemRunner::new(), kommit_proxy::iptables::IpFamily::V4)?;
//! # Ok::<(), kommit_proxy::iptables::SyncError>(())
//! ```
//! Chains are kube-proxy's with the prefix `KOMMIT-` (KOMMIT-SERVICES, KOMMIT-SVC-<hash>,
//! KOMMIT-SEP-<hash>, KOMMIT-EXT-<hash>, KOMMIT-NODEPORTS, KOMMIT-POSTROUTING,
//! KOMMIT-MARK-MASQ, ...), so they never collide with a real kube-proxy on the host.
//!
//! # Userspace mode ([`userspace`])
//! [`userspace::UserspaceProxy`] listens on a configured address, one port per Service
//! port, and relays TCP (and UDP) to a random ready endpoint, retrying a failed connect
//! on another one. It needs no privileges.

pub mod convert;
pub mod driver;
pub mod iptables;
pub mod model;
pub mod userspace;

pub use model::{
    Endpoint, Protocol, ProxyState, Service, ServiceEndpoints, ServiceName, ServicePort,
    ServicePortName, ServicePortView, ServiceType, ServiceView,
};
