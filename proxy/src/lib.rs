//! The service proxy ("kube-proxy"): gives Services stable addresses, in iptables,
//! nftables or userspace mode.
//!
//! # Model ([`model`], [`convert`])
//! [`ProxyState`] holds the Services ([`Service`]: cluster IP, type, ports with node
//! ports) and their ready endpoints per port name ([`ServiceEndpoints`]). Build it from
//! Kubernetes objects with [`convert::service_from_k8s`] (`Ok(None)` for ExternalName,
//! headless and not-yet-allocated Services), [`convert::endpoints_from_k8s`] (core/v1
//! Endpoints) or [`convert::endpoints_from_slices`] (discovery.k8s.io/v1 EndpointSlices,
//! grouped by the `kubernetes.io/service-name` label), or directly. Bad objects give a
//! [`convert::ConvertError`] naming the object and the field. Every change gives the
//! Service a new version, so the proxiers skip unchanged Services cheaply.
//!
//! # iptables mode ([`iptables`])
//! ```no_run
//! # use kommit_proxy::{ProxyState, iptables::{IptablesProxier, IptablesConfig, SystemRunner}};
//! let config = IptablesConfig { cluster_cidr: Some("10.244.0.0/16".into()), ..Default::default() };
//! let mut proxier = IptablesProxier::new(SystemRunner::new(), config)?;
//! let state = ProxyState::new(); // filled from the API
//! let report = proxier.sync(&state)?; // call again on every change: only what changed is written
//! kommit_proxy::iptables::cleanup(&SystemRunner::new(), kommit_proxy::iptables::IpFamily::V4)?;
//! # Ok::<(), kommit_proxy::iptables::SyncError>(())
//! ```
//! Chains are kube-proxy's with the prefix `KOMMIT-` (`KOMMIT-SERVICES`,
//! `KOMMIT-SVC-<hash>`, `KOMMIT-SEP-<hash>`, `KOMMIT-EXT-<hash>`, `KOMMIT-NODEPORTS`,
//! `KOMMIT-POSTROUTING`, `KOMMIT-MARK-MASQ`, ...), so they never collide with a real
//! kube-proxy on the host.
//! Each sync is one `iptables-restore --noflush`; see the [`iptables`] module for the
//! consistency argument and full vs partial syncs. The [`iptables::Runner`] trait is
//! the seam for tests ([`iptables::SystemRunner`] runs the real binaries, optionally
//! in a network namespace or with the legacy/nft variant).
//!
//! # nftables mode ([`nftables`])
//! [`nftables::NftablesProxier`] keeps one table of its own (`ip kommit`): verdict maps
//! keyed by cluster IP, protocol and port (and by node port) send a Service port to the
//! chain of its endpoint count, which draws an index with `numgen` and DNATs through one
//! map of endpoints keyed by address, protocol, port and index. A Service is map
//! elements; each sync is one `nft -f` transaction: full (the table replaced) or partial
//! (only the changed elements). [`nftables::Nft`] is the seam for tests;
//! [`iptables::SystemRunner`] implements it.
//!
//! # Userspace mode ([`userspace`])
//! [`userspace::UserspaceProxy`] listens on a configured address, one port per Service
//! port (its node port, or one the system picks: [`userspace::UserspaceProxy::addr`]),
//! and relays TCP and UDP to a random ready endpoint, retrying a failed connect on
//! another one. It needs no privileges.
//!
//! # Cluster DNS ([`dns`])
//! [`dns::DnsServer`] answers Service names (`web.shop.svc.cluster.local`) from a
//! [`dns::ClusterZone`] and forwards other names to the host's resolvers.
//!
//! # Wiring ([`driver`])
//! [`driver::run_rules`] (iptables or nftables) and [`driver::run_userspace`] take a
//! `tokio::sync::watch::Receiver<Arc<ProxyState>>`: publish the whole state on every
//! change and the rules follow within `min_interval` (100 ms by default) plus the sync
//! time; failed syncs are retried.

pub mod convert;
pub mod dns;
pub mod driver;
pub mod iptables;
pub mod model;
pub mod nftables;
mod port_cache;
pub mod userspace;

pub use model::{
    Endpoint, Protocol, ProxyState, Service, ServiceEndpoints, ServiceName, ServicePort,
    ServicePortName, ServicePortView, ServiceType, ServiceView,
};
