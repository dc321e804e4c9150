//! The proxy's own view of Services and their ready endpoints.
//!
//! Independent of where it comes from: the conversions from Kubernetes objects live in
//! [`crate::convert`], and tests or the in-process wiring can build it directly.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

/// A Service's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl ServiceName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One port of one Service, named the way kube-proxy names it: `namespace/name:port`
/// (`namespace/name` when the port has no name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortName {
    pub service: ServiceName,
    /// The port's name; empty for the single unnamed port of a Service.
    pub port: String,
}

impl ServicePortName {
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        port: impl Into<String>,
    ) -> Self {
        Self {
            service: ServiceName::new(namespace, name),
            port: port.into(),
        }
    }
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}", self.service)
        } else {
            write!(f, "{}:{}", self.service, self.port)
        }
    }
}

/// The transport protocol of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The name iptables uses (`-p tcp`).
    pub fn iptables_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// The name Kubernetes uses (`TCP`).
    pub fn k8s_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.k8s_name())
    }
}

/// The Service types the proxy programs. ExternalName Services have nothing to proxy
/// (DNS answers them) and headless Services have no virtual IP, so neither appears here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceType {
    ClusterIp,
    NodePort,
    /// On a single machine a LoadBalancer behaves like a NodePort (as on k3s).
    LoadBalancer,
}

impl ServiceType {
    /// Whether the Service's node ports are opened.
    pub fn has_node_ports(self) -> bool {
        matches!(self, ServiceType::NodePort | ServiceType::LoadBalancer)
    }
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// Empty for the single unnamed port of a Service.
    pub name: String,
    pub protocol: Protocol,
    /// The port on the cluster IP.
    pub port: u16,
    /// The port opened on every node (NodePort and LoadBalancer Services).
    pub node_port: Option<u16>,
}

/// A Service as the proxy needs it. Session affinity is always "None": kommit's proxy
/// spreads every new connection at random.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    pub name: ServiceName,
    pub cluster_ip: IpAddr,
    pub service_type: ServiceType,
    pub ports: Vec<ServicePort>,
    /// Addresses outside the cluster's range that reach the Service's ports too, as its
    /// cluster IP does: `spec.externalIPs` and, for a LoadBalancer, the IPs of
    /// `status.loadBalancer.ingress` (on a single machine, the node's own addresses).
    pub external_ips: Vec<IpAddr>,
}

/// A ready endpoint of one Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

impl Endpoint {
    pub fn new(ip: IpAddr, port: u16) -> Self {
        Self { ip, port }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.socket_addr().fmt(f)
    }
}

/// The ready endpoints of one Service, per Service port name.
pub type ServiceEndpoints = BTreeMap<String, Vec<Endpoint>>;

/// Everything the proxy programs: the Services and their ready endpoints.
///
/// Endpoints are kept sorted and free of duplicates so that the same cluster state
/// always gives the same rules, whatever order the watch delivered it in. Every change
/// to a Service or its endpoints gives it a new version (unique in the process), which
/// lets the proxiers skip unchanged Services without comparing them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyState {
    entries: BTreeMap<ServiceName, Entry>,
}

#[derive(Clone, Debug, Default)]
struct Entry {
    service: Option<Service>,
    endpoints: ServiceEndpoints,
    version: u64,
}

/// Equal content is equal state, whatever the versions.
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.service == other.service && self.endpoints == other.endpoints
    }
}

impl Eq for Entry {}

fn next_version() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One Service port with everything needed to program it.
#[derive(Clone, Copy, Debug)]
pub struct ServicePortView<'a> {
    pub service: &'a Service,
    pub port: &'a ServicePort,
    /// Ready endpoints for this port, sorted; empty when there are none.
    pub endpoints: &'a [Endpoint],
}

impl ServicePortView<'_> {
    pub fn name(&self) -> ServicePortName {
        ServicePortName {
            service: self.service.name.clone(),
            port: self.port.name.clone(),
        }
    }
}

/// One Service with its endpoints and version.
#[derive(Clone, Copy, Debug)]
pub struct ServiceView<'a> {
    pub service: &'a Service,
    pub endpoints: &'a ServiceEndpoints,
    /// Changes whenever the Service or its endpoints change.
    pub version: u64,
}

impl<'a> ServiceView<'a> {
    /// The Service's ports with their endpoints.
    pub fn ports(&self) -> impl Iterator<Item = ServicePortView<'a>> + use<'a> {
        let (service, endpoints) = (self.service, self.endpoints);
        service.ports.iter().map(move |port| ServicePortView {
            service,
            port,
            endpoints: endpoints.get(&port.name).map(Vec::as_slice).unwrap_or(&[]),
        })
    }
}

impl ProxyState {
    pub fn new() -> Self {
        Self::default()
    }

    fn entry_mut(&mut self, name: ServiceName) -> &mut Entry {
        self.entries.entry(name).or_default()
    }

    fn tidy(&mut self, name: &ServiceName) {
        if self
            .entries
            .get(name)
            .is_some_and(|e| e.service.is_none() && e.endpoints.is_empty())
        {
            self.entries.remove(name);
        }
    }

    /// Adds or replaces a Service.
    pub fn upsert_service(&mut self, service: Service) {
        let entry = self.entry_mut(service.name.clone());
        if entry.service.as_ref() != Some(&service) {
            entry.service = Some(service);
            entry.version = next_version();
        }
    }

    /// Removes a Service (its endpoints stay until removed, as an Endpoints object may
    /// outlive its Service for a moment).
    pub fn remove_service(&mut self, name: &ServiceName) -> Option<Service> {
        let entry = self.entries.get_mut(name)?;
        let old = entry.service.take();
        entry.version = next_version();
        self.tidy(name);
        old
    }

    /// Replaces the ready endpoints of a Service.
    pub fn set_endpoints(&mut self, name: ServiceName, mut endpoints: ServiceEndpoints) {
        for list in endpoints.values_mut() {
            list.sort();
            list.dedup();
        }
        endpoints.retain(|_, list| !list.is_empty());
        let entry = self.entry_mut(name.clone());
        if entry.endpoints != endpoints {
            entry.endpoints = endpoints;
            entry.version = next_version();
        }
        self.tidy(&name);
    }

    /// Removes the endpoints of a Service.
    pub fn remove_endpoints(&mut self, name: &ServiceName) {
        self.set_endpoints(name.clone(), ServiceEndpoints::new());
    }

    pub fn service(&self, name: &ServiceName) -> Option<&Service> {
        self.entries.get(name).and_then(|e| e.service.as_ref())
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.entries.values().filter_map(|e| e.service.as_ref())
    }

    /// The number of endpoints over all Services and ports.
    pub fn endpoint_count(&self) -> usize {
        self.entries
            .values()
            .flat_map(|e| e.endpoints.values())
            .map(Vec::len)
            .sum()
    }

    /// The ready endpoints of a Service, per port name.
    pub fn endpoints(&self, name: &ServiceName) -> Option<&ServiceEndpoints> {
        self.entries
            .get(name)
            .map(|e| &e.endpoints)
            .filter(|e| !e.is_empty())
    }

    /// Every Service with its endpoints, in (namespace, name) order.
    pub fn service_views(&self) -> impl Iterator<Item = ServiceView<'_>> {
        self.entries.values().filter_map(|e| {
            e.service.as_ref().map(|service| ServiceView {
                service,
                endpoints: &e.endpoints,
                version: e.version,
            })
        })
    }

    /// Every Service port in a stable order (namespace, name, then the Service's port order).
    pub fn service_ports(&self) -> impl Iterator<Item = ServicePortView<'_>> {
        self.service_views().flat_map(|v| v.ports())
    }
}
