//! Cluster DNS: Service names to addresses, as CoreDNS' kubernetes plugin answers them.
//!
//! - [`zone`]: the plain model ([`DnsService`]: namespace, name, ClusterIP / headless
//!   endpoints / ExternalName, ports) and what each name answers ([`ClusterZone::resolve`]).
//! - [`convert`]: Kubernetes Services and Endpoints to that model.
//! - [`server`]: a UDP and TCP server on one address ([`DnsServer`]) that answers from
//!   the latest zone published on a `watch` channel, and forwards every other name to an
//!   [`Upstream`] (the host's resolvers from `/etc/resolv.conf`, or none: then REFUSED).
//!
//! Names in the cluster domain (default `cluster.local`):
//!
//! | name | answer |
//! | --- | --- |
//! | `<svc>.<ns>.svc.<domain>` | A/AAAA: the ClusterIP; headless: the ready endpoints; ExternalName: CNAME (its target's addresses follow when asked for A/AAAA) |
//! | `<a-b-c-d>.<svc>.<ns>.svc.<domain>` | one endpoint of a headless Service |
//! | `_<port>._<proto>.<svc>.<ns>.svc.<domain>` | SRV for a named port (target: the Service, or each endpoint when headless) |
//! | `<a-b-c-d>.<ns>.pod.<domain>` | the address in the name |
//! | anything else there | NXDOMAIN, with the zone's SOA |
//!
//! `<svc>.<ns>.svc`, `<svc>.<ns>` and a bare `<svc>` also answer when that Service exists
//! (for clients that use no search list); otherwise they are forwarded. Every answer has a
//! TTL of 5 seconds. Answers over 512 bytes (or the client's EDNS size, at most 1232) are
//! truncated over UDP, so the client retries over TCP.

pub mod convert;
pub mod server;
pub mod upstream;
pub mod zone;

pub use server::DnsServer;
pub use upstream::Upstream;
pub use zone::{ClusterZone, DEFAULT_CLUSTER_DOMAIN, DnsPort, DnsService, DnsTarget, Resolution};
