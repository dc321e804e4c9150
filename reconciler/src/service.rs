//! Services: cluster IP and node port allocation, and the endpoints controller.
//!
//! # Allocation ([`reconcile_services`])
//! Every Service from Git gets an observed copy under `/registry/services/specs/<ns>/<name>`:
//! the spec from Git with what the cluster allocated filled in (`spec.clusterIP`,
//! `spec.clusterIPs`, `spec.ports[].nodePort`, `spec.type` and `spec.sessionAffinity`
//! defaulted) and the status (`status.loadBalancer.ingress` for LoadBalancer Services).
//! That copy is what the proxy, the node agent (service environment variables) and the
//! API read, and it is the allocation's memory: a restart, or a commit that keeps the
//! Service, keeps its addresses.
//!
//! - A cluster IP set in Git (`spec.clusterIP`) is used as it is (validation has
//!   checked it is in the range and unique). `None` makes a headless Service.
//! - Otherwise the copy's address is kept while it is still in the range and nobody in
//!   Git claims it; a new one is picked starting at a hash of `namespace/name` in the
//!   upper half of the range (Kubernetes likewise allocates dynamically from the upper
//!   band first, leaving the lower one to static addresses), probing upward.
//! - Node ports (NodePort and LoadBalancer Services) follow the same rules in
//!   [`ServiceConfig::node_ports`] (30000-32767 by default); a port keeps its node port
//!   while its name and protocol stay.
//! - A LoadBalancer Service acts as a NodePort one and reports the nodes' InternalIP
//!   addresses as `status.loadBalancer.ingress`, as k3s' service load balancer does.
//! - ExternalName Services get a copy without a cluster IP. Copies of Services Git no
//!   longer declares are deleted; the next Service of that name gets new addresses.
//!
//! # Endpoints ([`reconcile_endpoints`])
//! For every Service with a selector (not ExternalName), the pods of its namespace the
//! selector matches that have an IP and are neither terminal nor terminating become its
//! core/v1 Endpoints (ready pods in `addresses`, the others in `notReadyAddresses`, or
//! all in `addresses` with `publishNotReadyAddresses`) and its discovery.k8s.io/v1
//! EndpointSlices (one per distinct port mapping, named `<service>-<hash>`, with
//! `conditions.ready/serving/terminating`). A pod is ready when its Ready condition is
//! True. `targetPort` may be a number (the Service port when unset) or the name of a
//! container port: a pod without that port is left out of that port's endpoints, as
//! Kubernetes does. Endpoints and slices of Services that are gone or lost their
//! selector are deleted (only slices this controller manages).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::str::FromStr;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, LoadBalancerIngress,
    LoadBalancerStatus, ObjectReference, Pod, Service, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint as SliceEndpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::action::{Action, Reconciled};
use crate::context::Context;
use crate::hash::{fnv1a32, safe_encode};
use crate::meta;
use crate::object::{meta_key, mod_revision};
use crate::podutil;
use crate::state::{Desired, Observed};

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpoints.kommit.dev";

/// An IPv4 range in CIDR notation (`198.19.0.0/16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Range {
    /// The network address.
    pub base: Ipv4Addr,
    /// The prefix length (0-30: at least two usable addresses).
    pub prefix: u8,
}

/// A range that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RangeError(pub String);

impl FromStr for Ipv4Range {
    type Err = RangeError;
    fn from_str(s: &str) -> Result<Self, RangeError> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| RangeError(format!("{s:?} is not a CIDR range like 198.19.0.0/16")))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| RangeError(format!("{a:?} is not an IPv4 address")))?;
        let prefix: u8 = l
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| RangeError(format!("prefix length {l:?} must be 8-30")))?;
        let mask = u32::MAX << (32 - prefix);
        if u32::from(addr) & !mask != 0 {
            return Err(RangeError(format!(
                "{s} has host bits set (the network is {}/{prefix})",
                Ipv4Addr::from(u32::from(addr) & mask)
            )));
        }
        Ok(Ipv4Range { base: addr, prefix })
    }
}

impl std::fmt::Display for Ipv4Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl Ipv4Range {
    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    /// Whether `ip` is a usable address of the range (not the network or broadcast address).
    pub fn contains_usable(&self, ip: Ipv4Addr) -> bool {
        let (b, i) = (u32::from(self.base), u32::from(ip));
        i > b && i - b < self.size() - 1
    }

    /// Whether `ip` is in the range at all.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let (b, i) = (u32::from(self.base), u32::from(ip));
        i >= b && i - b < self.size()
    }
}

/// Where Services' addresses come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Cluster IPs (default 198.19.0.0/16).
    pub cluster_ips: Ipv4Range,
    /// Node ports, inclusive (default 30000-32767).
    pub node_ports: (u16, u16),
}

/// The default service range: 198.19.0.0/16, the upper half of 198.18.0.0/15 (RFC 2544,
/// reserved for benchmarking and never routed on the internet), so it collides neither
/// with private networks (10/8, 172.16/12, 192.168/16, where Docker's bridges and most
/// LANs and VPNs live) nor with public addresses.
pub const DEFAULT_SERVICE_RANGE: Ipv4Range = Ipv4Range {
    base: Ipv4Addr::new(198, 19, 0, 0),
    prefix: 16,
};

/// Kubernetes' default node port range.
pub const DEFAULT_NODE_PORTS: (u16, u16) = (30000, 32767);

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            cluster_ips: DEFAULT_SERVICE_RANGE,
            node_ports: DEFAULT_NODE_PORTS,
        }
    }
}

fn service_type(s: &Service) -> &str {
    s.spec
        .as_ref()
        .and_then(|x| x.type_.as_deref())
        .unwrap_or("ClusterIP")
}

fn has_node_ports(s: &Service) -> bool {
    matches!(service_type(s), "NodePort" | "LoadBalancer")
}

fn ident(m: &ObjectMeta) -> (String, String) {
    (meta::namespace(m).to_string(), meta::name(m).to_string())
}

fn start_offset(seed: &str, span: u32) -> u32 {
    if span == 0 {
        return 0;
    }
    fnv1a32(&[seed.as_bytes()]) % span
}

/// Picks a free address: from a hash of `seed` in the upper half, probing upward (wrapping).
fn pick_ip(range: &Ipv4Range, used: &HashSet<Ipv4Addr>, seed: &str) -> Option<Ipv4Addr> {
    let usable = range.size() - 2;
    let lower = usable / 2;
    let upper = usable - lower;
    let start = lower + start_offset(seed, upper);
    (0..usable)
        .map(|k| (start + k) % usable)
        .map(|off| Ipv4Addr::from(u32::from(range.base) + 1 + off))
        .find(|ip| !used.contains(ip))
}

fn pick_port(range: (u16, u16), used: &HashSet<u16>, seed: &str) -> Option<u16> {
    let (lo, hi) = range;
    let span = u32::from(hi.saturating_sub(lo)) + 1;
    let start = start_offset(seed, span);
    (0..span)
        .map(|k| lo as u32 + (start + k) % span)
        .map(|p| p as u16)
        .find(|p| !used.contains(p))
}

fn explicit_ip(s: &Service) -> Option<&str> {
    s.spec
        .as_ref()
        .and_then(|x| x.cluster_ip.as_deref())
        .filter(|v| !v.is_empty())
}

/// The observed copies of Services, by (namespace, name).
fn copies(observed: &Observed) -> HashMap<(String, String), &Service> {
    observed
        .services
        .iter()
        .map(|s| (ident(&s.metadata), s))
        .collect()
}

/// The Services of the revision with their allocations, as they should be stored.
pub fn allocate(desired: &Desired, observed: &Observed, config: &ServiceConfig) -> Vec<Service> {
    let copies = copies(observed);
    let mut order: Vec<&Service> = desired.services.iter().collect();
    order.sort_by_key(|s| ident(&s.metadata));

    // Cluster IPs: Git's first, then kept ones, then new ones.
    let mut used_ips: HashSet<Ipv4Addr> = HashSet::new();
    let mut ips: HashMap<(String, String), String> = HashMap::new();
    for s in &order {
        if service_type(s) == "ExternalName" {
            continue;
        }
        if let Some(ip) = explicit_ip(s) {
            if let Ok(a) = ip.parse::<Ipv4Addr>() {
                used_ips.insert(a);
            }
            ips.insert(ident(&s.metadata), ip.to_string());
        }
    }
    let mut pending = Vec::new();
    for s in &order {
        let id = ident(&s.metadata);
        if service_type(s) == "ExternalName" || ips.contains_key(&id) {
            continue;
        }
        let kept = copies
            .get(&id)
            .and_then(|c| explicit_ip(c))
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(|ip| config.cluster_ips.contains_usable(*ip) && !used_ips.contains(ip));
        match kept {
            Some(ip) => {
                used_ips.insert(ip);
                ips.insert(id, ip.to_string());
            }
            None => pending.push(id),
        }
    }
    for id in pending {
        let seed = format!("{}/{}", id.0, id.1);
        if let Some(ip) = pick_ip(&config.cluster_ips, &used_ips, &seed) {
            used_ips.insert(ip);
            ips.insert(id, ip.to_string());
        } else {
            tracing::warn!(service = %seed, range = %config.cluster_ips, "the service range is full");
        }
    }

    // Node ports, likewise.
    let mut used_ports: HashSet<u16> = HashSet::new();
    for s in order.iter().filter(|s| has_node_ports(s)) {
        for p in s.spec.iter().flat_map(|x| x.ports.iter().flatten()) {
            if let Some(np) = p.node_port.filter(|n| *n > 0) {
                used_ports.insert(np as u16);
            }
        }
    }
    let mut node_ports: HashMap<(String, String, usize), i32> = HashMap::new();
    let mut pending = Vec::new();
    for s in order.iter().filter(|s| has_node_ports(s)) {
        let id = ident(&s.metadata);
        let copy_ports: Vec<_> = copies
            .get(&id)
            .and_then(|c| c.spec.as_ref())
            .map(|x| x.ports.clone().unwrap_or_default())
            .unwrap_or_default();
        for (i, p) in s
            .spec
            .iter()
            .flat_map(|x| x.ports.iter().flatten())
            .enumerate()
        {
            if p.node_port.is_some_and(|n| n > 0) {
                continue;
            }
            let kept = copy_ports
                .iter()
                .find(|c| c.name == p.name && c.protocol == p.protocol)
                .and_then(|c| c.node_port)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| {
                    (config.node_ports.0..=config.node_ports.1).contains(n)
                        && !used_ports.contains(n)
                });
            match kept {
                Some(n) => {
                    used_ports.insert(n);
                    node_ports.insert((id.0.clone(), id.1.clone(), i), i32::from(n));
                }
                None => pending.push((id.0.clone(), id.1.clone(), i)),
            }
        }
    }
    for key in pending {
        let seed = format!("{}/{}:{}", key.0, key.1, key.2);
        if let Some(n) = pick_port(config.node_ports, &used_ports, &seed) {
            used_ports.insert(n);
            node_ports.insert(key, i32::from(n));
        } else {
            tracing::warn!(service = %seed, "the node port range is full");
        }
    }

    let ingress: Vec<LoadBalancerIngress> = node_addresses(observed)
        .into_iter()
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip),
            ip_mode: Some("VIP".into()),
            ..Default::default()
        })
        .collect();

    order
        .into_iter()
        .map(|s| {
            let id = ident(&s.metadata);
            let mut out = s.clone();
            out.metadata = ObjectMeta {
                name: s.metadata.name.clone(),
                namespace: Some(id.0.clone()),
                labels: s.metadata.labels.clone(),
                annotations: s.metadata.annotations.clone(),
                uid: Some(meta::desired_uid("Service", &s.metadata)),
                ..Default::default()
            };
            let type_ = service_type(s).to_string();
            let spec = out.spec.get_or_insert_with(Default::default);
            spec.type_ = Some(type_.clone());
            if type_ != "ExternalName" {
                spec.session_affinity
                    .get_or_insert_with(|| "None".to_string());
                if let Some(ip) = ips.get(&id) {
                    spec.cluster_ip = Some(ip.clone());
                    spec.cluster_ips = Some(vec![ip.clone()]);
                    if ip != "None" {
                        spec.ip_families = Some(vec!["IPv4".into()]);
                        spec.ip_family_policy = Some("SingleStack".into());
                    }
                }
            }
            for (i, p) in spec.ports.iter_mut().flatten().enumerate() {
                p.protocol.get_or_insert_with(|| "TCP".to_string());
                if p.target_port.is_none() {
                    p.target_port = Some(IntOrString::Int(p.port));
                }
                if let Some(n) = node_ports.get(&(id.0.clone(), id.1.clone(), i)) {
                    p.node_port = Some(*n);
                }
            }
            out.status = Some(if type_ == "LoadBalancer" && !ingress.is_empty() {
                ServiceStatus {
                    load_balancer: Some(LoadBalancerStatus {
                        ingress: Some(ingress.clone()),
                    }),
                    ..Default::default()
                }
            } else {
                ServiceStatus {
                    load_balancer: Some(LoadBalancerStatus::default()),
                    ..Default::default()
                }
            });
            out
        })
        .collect()
}

/// InternalIP addresses of the nodes, sorted.
fn node_addresses(observed: &Observed) -> Vec<String> {
    let set: BTreeSet<String> = observed
        .nodes
        .iter()
        .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
        .collect();
    set.into_iter().collect()
}

/// Equal apart from what the store sets (resourceVersion, creationTimestamp).
fn same<T: Clone + PartialEq>(a: &T, b: &T, meta_of: impl Fn(&mut T) -> &mut ObjectMeta) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    for x in [&mut a, &mut b] {
        let m = meta_of(x);
        m.resource_version = None;
        m.creation_timestamp = None;
    }
    a == b
}

/// Writes `want` (create, or update of `have`) unless they already agree.
fn write<T: Clone + PartialEq + Into<crate::object::Object>>(
    ctx: &Context,
    mut want: T,
    have: Option<&T>,
    meta_of: impl Fn(&mut T) -> &mut ObjectMeta,
    out: &mut Reconciled,
) {
    match have {
        Some(h) => {
            if !same(&want, h, &meta_of) {
                let mut h = h.clone();
                let hm = meta_of(&mut h);
                let (rv, created) = (hm.resource_version.clone(), hm.creation_timestamp.clone());
                let m = meta_of(&mut want);
                m.resource_version = rv;
                m.creation_timestamp = created;
                out.actions.push(Action::Update(want.into()));
            }
        }
        None => {
            meta_of(&mut want).creation_timestamp = Some(ctx.now_time());
            out.actions.push(Action::Create(want.into()));
        }
    }
}

/// Writes every Service's copy with its allocations; deletes copies Git no longer has.
pub fn reconcile_services(
    ctx: &Context,
    desired: &Desired,
    observed: &Observed,
    config: &ServiceConfig,
) -> Reconciled {
    let mut out = Reconciled::none();
    let copies = copies(observed);
    let wanted = allocate(desired, observed, config);
    let keep: HashSet<(String, String)> = wanted.iter().map(|s| ident(&s.metadata)).collect();
    for c in &observed.services {
        if !keep.contains(&ident(&c.metadata))
            && let Ok(key) = meta_key("Service", &c.metadata)
        {
            out.actions.push(Action::Delete {
                key,
                mod_revision: mod_revision(&c.metadata),
            });
        }
    }
    for s in wanted {
        let have = copies.get(&ident(&s.metadata)).copied();
        write(ctx, s, have, |x: &mut Service| &mut x.metadata, &mut out);
    }
    out
}

/// One pod as an endpoint of a Service.
struct PodEndpoint<'a> {
    pod: &'a Pod,
    ip: String,
    ready: bool,
    /// (port name, number, protocol) per Service port the pod serves.
    ports: Vec<(String, i32, String)>,
}

fn target_port(pod: &Pod, target: Option<&IntOrString>, port: i32, protocol: &str) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(n)) => Some(*n).filter(|n| *n > 0),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

fn pod_endpoints<'a>(service: &Service, observed: &'a Observed) -> Vec<PodEndpoint<'a>> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return Vec::new();
    };
    let ns = meta::namespace(&service.metadata);
    let publish_all = spec.publish_not_ready_addresses == Some(true);
    let mut out: Vec<PodEndpoint<'a>> = observed
        .pods
        .iter()
        .filter(|p| meta::namespace(&p.metadata) == ns)
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            selector
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .filter(|p| !podutil::is_terminal(p) && !podutil::is_terminating(p))
        .filter_map(|p| {
            let ip = p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty())?;
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|sp| {
                    let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
                    let n = target_port(p, sp.target_port.as_ref(), sp.port, &protocol)?;
                    Some((sp.name.clone().unwrap_or_default(), n, protocol))
                })
                .collect();
            Some(PodEndpoint {
                pod: p,
                ip,
                ready: publish_all || podutil::is_ready(p),
                ports,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (&a.ip, meta::name(&a.pod.metadata)).cmp(&(&b.ip, meta::name(&b.pod.metadata)))
    });
    out
}

fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: Some(meta::namespace(&pod.metadata).to_string()),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The Endpoints and EndpointSlices a Service should have.
pub fn endpoints_for(service: &Service, observed: &Observed) -> (Endpoints, Vec<EndpointSlice>) {
    let (ns, name) = ident(&service.metadata);
    let uid = meta::desired_uid("Service", &service.metadata);
    let pods = pod_endpoints(service, observed);

    // Group pods by their port mapping: one subset / slice per mapping.
    let mut groups: BTreeMap<Vec<(String, i32, String)>, Vec<&PodEndpoint<'_>>> = BTreeMap::new();
    for p in &pods {
        if !p.ports.is_empty() {
            groups.entry(p.ports.clone()).or_default().push(p);
        }
    }
    let address = |p: &PodEndpoint<'_>| EndpointAddress {
        ip: p.ip.clone(),
        node_name: podutil::node_name(p.pod).map(str::to_string),
        target_ref: Some(target_ref(p.pod)),
        ..Default::default()
    };
    let subsets: Vec<EndpointSubset> = groups
        .iter()
        .map(|(ports, members)| {
            let ready: Vec<EndpointAddress> = members
                .iter()
                .filter(|p| p.ready)
                .map(|p| address(p))
                .collect();
            let not_ready: Vec<EndpointAddress> = members
                .iter()
                .filter(|p| !p.ready)
                .map(|p| address(p))
                .collect();
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, port, proto)| EndpointPort {
                            name: (!n.is_empty()).then(|| n.clone()),
                            port: *port,
                            protocol: Some(proto.clone()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    let owner = meta::controller_ref("v1", "Service", &name, &uid);
    let endpoints = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: service.metadata.labels.clone(),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    };
    let slices = groups
        .iter()
        .map(|(ports, members)| {
            let key: Vec<String> = ports
                .iter()
                .map(|(n, p, proto)| format!("{n}/{p}/{proto}"))
                .collect();
            let suffix = safe_encode(&fnv1a32(&[key.join(",").as_bytes()]).to_string());
            let mut labels = service.metadata.labels.clone().unwrap_or_default();
            labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
            labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
            EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-{suffix}")),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints: members
                    .iter()
                    .map(|p| SliceEndpoint {
                        addresses: vec![p.ip.clone()],
                        conditions: Some(EndpointConditions {
                            ready: Some(p.ready),
                            serving: Some(p.ready),
                            terminating: Some(false),
                        }),
                        node_name: podutil::node_name(p.pod).map(str::to_string),
                        target_ref: Some(target_ref(p.pod)),
                        ..Default::default()
                    })
                    .collect(),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, port, proto)| SlicePort {
                            name: Some(n.clone()),
                            port: Some(*port),
                            protocol: Some(proto.clone()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    (endpoints, slices)
}

fn selects(s: &Service) -> bool {
    service_type(s) != "ExternalName"
        && s.spec
            .as_ref()
            .and_then(|x| x.selector.as_ref())
            .is_some_and(|sel| !sel.is_empty())
}

/// Writes the Endpoints and EndpointSlices of every Service with a selector; deletes
/// those of Services that are gone or have no selector any more.
pub fn reconcile_endpoints(ctx: &Context, desired: &Desired, observed: &Observed) -> Reconciled {
    let mut out = Reconciled::none();
    let have_eps: HashMap<(String, String), &Endpoints> = observed
        .endpoints
        .iter()
        .map(|e| (ident(&e.metadata), e))
        .collect();
    let have_slices: HashMap<(String, String), &EndpointSlice> = observed
        .endpoint_slices
        .iter()
        .map(|e| (ident(&e.metadata), e))
        .collect();
    let mut keep_eps = HashSet::new();
    let mut keep_slices = HashSet::new();
    for s in desired.services.iter().filter(|s| selects(s)) {
        let (eps, slices) = endpoints_for(s, observed);
        let id = ident(&eps.metadata);
        keep_eps.insert(id.clone());
        write(
            ctx,
            eps,
            have_eps.get(&id).copied(),
            |x: &mut Endpoints| &mut x.metadata,
            &mut out,
        );
        for slice in slices {
            let id = ident(&slice.metadata);
            keep_slices.insert(id.clone());
            write(
                ctx,
                slice,
                have_slices.get(&id).copied(),
                |x: &mut EndpointSlice| &mut x.metadata,
                &mut out,
            );
        }
    }
    for e in &observed.endpoints {
        if !keep_eps.contains(&ident(&e.metadata))
            && let Ok(key) = meta_key("Endpoints", &e.metadata)
        {
            out.actions.push(Action::Delete {
                key,
                mod_revision: mod_revision(&e.metadata),
            });
        }
    }
    for e in &observed.endpoint_slices {
        let ours = e
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .is_some_and(|v| v == MANAGED_BY);
        if ours
            && !keep_slices.contains(&ident(&e.metadata))
            && let Ok(key) = meta_key("EndpointSlice", &e.metadata)
        {
            out.actions.push(Action::Delete {
                key,
                mod_revision: mod_revision(&e.metadata),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_contain() {
        let r: Ipv4Range = "198.19.0.0/16".parse().unwrap();
        assert_eq!(r, DEFAULT_SERVICE_RANGE);
        assert!(r.contains_usable("198.19.0.1".parse().unwrap()));
        assert!(!r.contains_usable("198.19.0.0".parse().unwrap()));
        assert!(!r.contains_usable("198.19.255.255".parse().unwrap()));
        assert!(!r.contains("198.20.0.1".parse().unwrap()));
        assert!("198.19.0.1/16".parse::<Ipv4Range>().is_err());
        assert!("198.19.0.0".parse::<Ipv4Range>().is_err());
        assert!("198.19.0.0/31".parse::<Ipv4Range>().is_err());
        assert!("nonsense/16".parse::<Ipv4Range>().is_err());
    }

    #[test]
    fn picking_skips_used_and_wraps() {
        let r: Ipv4Range = "10.0.0.0/30".parse().unwrap();
        let mut used = HashSet::new();
        let a = pick_ip(&r, &used, "x").unwrap();
        used.insert(a);
        let b = pick_ip(&r, &used, "x").unwrap();
        assert_ne!(a, b);
        used.insert(b);
        assert_eq!(pick_ip(&r, &used, "x"), None);
        let mut ports = HashSet::new();
        for _ in 0..3 {
            let p = pick_port((100, 102), &ports, "s").unwrap();
            assert!((100..=102).contains(&p));
            assert!(ports.insert(p));
        }
        assert_eq!(pick_port((100, 102), &ports, "s"), None);
    }
}
