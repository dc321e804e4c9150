//! What kommit writes into its nftables table: the fixed part (sets, maps, hook chains)
//! and what each Service port adds (a chain and map or set elements).
//!
//! ```text
//! nat-prerouting, nat-output ─► services
//!   services: mark cluster-IP traffic for masquerading (from outside the cluster CIDR)
//!             ip daddr . l4proto . dport  vmap @service-ips       ─► svc-<hash>-<port name>
//!             (external and load balancer IPs: marked) vmap @service-external-ips ─► svc-...
//!             (local address) l4proto . dport  vmap @service-nodeports ─► svc-... (marked)
//!   svc-<hash>-ns/name/proto/port: endpoint i of n with `numgen random mod (n-i) 0`,
//!             the last one unconditionally: dnat to endpoint
//! nat-postrouting: masquerade what was marked, and a pod reaching itself (@hairpin)
//! filter-input, filter-output, filter-forward: reject new connections to Service
//!             ports without endpoints (@no-endpoint-services, @no-endpoint-nodeports);
//!             drop martian traffic to 127/8 (localhost node ports only)
//! ```
//!
//! Unlike the iptables layout there is no chain per endpoint and no rule per Service in
//! a shared chain: lookups go through maps, so adding a Service adds one chain and one
//! map element. No rule uses an anonymous set or map: the kernel binds each one by
//! walking the whole transaction, which makes a large batch quadratic (thousands of
//! anonymous sets turned a 10,000-Service load from seconds into minutes).

use std::fmt::Write as _;
use std::net::IpAddr;

use super::NftablesConfig;
use crate::iptables::IpFamily;
use crate::model::{Endpoint, ServicePortView};

/// The table kommit owns, in the `ip` (IPv4) or `ip6` family. Nothing else may use it.
pub const TABLE: &str = "kommit";

/// Cluster IP, protocol and port to the Service port's chain.
pub const SERVICE_IPS: &str = "service-ips";
/// External and load balancer IP, protocol and port to the Service port's chain.
pub const SERVICE_EXTERNAL_IPS: &str = "service-external-ips";
/// Protocol and node port to the Service port's chain.
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Cluster or external IP, protocol and port of Service ports without endpoints.
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Protocol and node port of Service ports without endpoints.
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// `endpoint . endpoint` of every endpoint: a pod that reached itself through a
/// Service is masqueraded so its replies come back through the node.
pub const HAIRPIN: &str = "hairpin";

/// Prefix of the per-Service-port chains.
pub const SERVICE_CHAIN_PREFIX: &str = "svc-";

/// `ip` or `ip6`: the table family, also the keyword of address matches.
pub fn family_name(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

fn addr_type(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ipv4_addr",
        IpFamily::V6 => "ipv6_addr",
    }
}

fn loopback(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "127.0.0.0/8",
        IpFamily::V6 => "::1",
    }
}

/// An element of one of kommit's sets or maps.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element {
    pub set: &'static str,
    pub key: String,
    /// The verdict of a map element (`goto svc-...`); `None` in a set.
    pub value: Option<String>,
}

impl Element {
    /// The element as `add element` writes it.
    pub fn text(&self) -> String {
        match &self.value {
            Some(v) => format!("{} : {v}", self.key),
            None => self.key.clone(),
        }
    }
}

/// A chain and its rules (without the `add rule ... CHAIN` prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftChain {
    pub name: String,
    pub rules: Vec<String>,
}

/// Everything one Service port contributes to the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortObjects {
    /// Its chain, when it has endpoints.
    pub chain: Option<NftChain>,
    pub elements: Vec<Element>,
    /// Its endpoints' addresses (for the hairpin set, which counts references).
    pub endpoint_ips: Vec<IpAddr>,
}

/// `svc-<hash>-namespace/name/protocol/port`: readable in `nft list`, unique by the
/// hash (the same one the iptables chains use).
pub fn service_chain_name(view: &ServicePortView<'_>) -> String {
    let spn = view.name();
    let proto = view.port.protocol;
    let hash = crate::iptables::service_chain(&spn, proto);
    let hash = hash
        .strip_prefix("KOMMIT-SVC-")
        .unwrap_or(&hash)
        .get(..8)
        .unwrap_or_default()
        .to_owned();
    let port = if view.port.name.is_empty() {
        view.port.port.to_string()
    } else {
        view.port.name.clone()
    };
    format!(
        "{SERVICE_CHAIN_PREFIX}{hash}-{}/{}/{}/{port}",
        spn.service.namespace,
        spn.service.name,
        proto.iptables_name()
    )
}

fn dnat_target(ep: &Endpoint) -> String {
    match ep.ip {
        IpAddr::V4(v4) => format!("{v4}:{}", ep.port),
        IpAddr::V6(v6) => format!("[{v6}]:{}", ep.port),
    }
}

/// Generates one Service port's objects. Ports of the other address family give
/// nothing (the other family's table is another proxier's business).
pub fn port_objects(view: &ServicePortView<'_>, config: &NftablesConfig) -> PortObjects {
    let mut out = PortObjects::default();
    if !config.family.matches(view.service.cluster_ip) {
        return out;
    }
    let p = view.port.protocol.iptables_name();
    let key = format!("{} . {p} . {}", view.service.cluster_ip, view.port.port);
    let node_key = view
        .port
        .node_port
        .filter(|_| view.service.service_type.has_node_ports())
        .map(|np| format!("{p} . {np}"));
    let endpoints: Vec<&Endpoint> = view
        .endpoints
        .iter()
        .filter(|e| config.family.matches(e.ip))
        .collect();
    let external_keys: Vec<String> = view
        .service
        .external_ips
        .iter()
        .filter(|ip| config.family.matches(**ip))
        .map(|ip| format!("{ip} . {p} . {}", view.port.port))
        .collect();

    if endpoints.is_empty() {
        for k in std::iter::once(key).chain(external_keys) {
            out.elements.push(Element {
                set: NO_ENDPOINT_SERVICES,
                key: k,
                value: None,
            });
        }
        if let Some(nk) = node_key {
            out.elements.push(Element {
                set: NO_ENDPOINT_NODEPORTS,
                key: nk,
                value: None,
            });
        }
        return out;
    }

    let name = service_chain_name(view);
    let n = endpoints.len();
    let rules = endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            let mut r = format!("meta l4proto {p}");
            if i + 1 < n {
                let _ = write!(r, " numgen random mod {} 0", n - i);
            }
            let _ = write!(r, " dnat to {}", dnat_target(ep));
            r
        })
        .collect();
    let verdict = format!("goto {name}");
    out.elements.push(Element {
        set: SERVICE_IPS,
        key,
        value: Some(verdict.clone()),
    });
    for k in external_keys {
        out.elements.push(Element {
            set: SERVICE_EXTERNAL_IPS,
            key: k,
            value: Some(verdict.clone()),
        });
    }
    if let Some(nk) = node_key {
        out.elements.push(Element {
            set: SERVICE_NODEPORTS,
            key: nk,
            value: Some(verdict),
        });
    }
    out.endpoint_ips = endpoints.iter().map(|e| e.ip).collect();
    out.chain = Some(NftChain { name, rules });
    out
}

/// The hairpin element of an endpoint address.
pub fn hairpin_element(ip: IpAddr) -> Element {
    Element {
        set: HAIRPIN,
        key: format!("{ip} . {ip}"),
        value: None,
    }
}

/// The table's fixed part as an `nft -f` block: sets, maps and the chains that do not
/// depend on any Service. Every rule ends its line (nft 1.0.6 wants a newline or `;`
/// before a closing brace).
pub fn static_block(config: &NftablesConfig) -> String {
    let fam = family_name(config.family);
    let addr = addr_type(config.family);
    let mark = config.masquerade_mark();
    let lo = loopback(config.family);
    let mut s = String::new();
    let _ = writeln!(s, "table {fam} {TABLE} {{");
    let _ = writeln!(
        s,
        "\tcomment \"kommit service proxy; rewritten by kommit, removed by `kommit proxy cleanup`\""
    );
    for (name, ty) in [
        (
            SERVICE_IPS,
            format!("{addr} . inet_proto . inet_service : verdict"),
        ),
        (
            SERVICE_EXTERNAL_IPS,
            format!("{addr} . inet_proto . inet_service : verdict"),
        ),
        (
            SERVICE_NODEPORTS,
            "inet_proto . inet_service : verdict".to_owned(),
        ),
    ] {
        let _ = writeln!(s, "\tmap {name} {{\n\t\ttype {ty}\n\t}}");
    }
    for (name, ty) in [
        (
            NO_ENDPOINT_SERVICES,
            format!("{addr} . inet_proto . inet_service"),
        ),
        (
            NO_ENDPOINT_NODEPORTS,
            "inet_proto . inet_service".to_owned(),
        ),
        (HAIRPIN, format!("{addr} . {addr}")),
    ] {
        let _ = writeln!(s, "\tset {name} {{\n\t\ttype {ty}\n\t}}");
    }
    let masq_source = match &config.cluster_cidr {
        Some(cidr) => format!("{fam} saddr != {cidr} "),
        None => String::new(),
    };
    let local_only = if config.localhost_node_ports() {
        String::new()
    } else {
        format!("{fam} daddr != {lo} ")
    };
    let chain = |s: &mut String, name: &str, hook: Option<&str>, rules: &[String]| {
        let _ = writeln!(s, "\tchain {name} {{");
        if let Some(hook) = hook {
            let _ = writeln!(s, "\t\t{hook}; policy accept;");
        }
        for r in rules {
            let _ = writeln!(s, "\t\t{r}");
        }
        let _ = writeln!(s, "\t}}");
    };
    chain(
        &mut s,
        "services",
        None,
        &[
            format!(
                "{masq_source}{fam} daddr . meta l4proto . th dport @{SERVICE_IPS} meta mark set meta mark | {mark} comment \"cluster IP traffic requiring SNAT\""
            ),
            format!("{fam} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
            format!(
                "{fam} daddr . meta l4proto . th dport @{SERVICE_EXTERNAL_IPS} meta mark set meta mark | {mark} comment \"external IP traffic requiring SNAT\""
            ),
            format!("{fam} daddr . meta l4proto . th dport vmap @{SERVICE_EXTERNAL_IPS}"),
            format!(
                "fib daddr type local {local_only}meta l4proto . th dport @{SERVICE_NODEPORTS} meta mark set meta mark | {mark} comment \"node port traffic requiring SNAT\""
            ),
            format!(
                "fib daddr type local {local_only}meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"
            ),
        ],
    );
    chain(
        &mut s,
        "nat-prerouting",
        Some("type nat hook prerouting priority dstnat"),
        &["jump services".into()],
    );
    chain(
        &mut s,
        "nat-output",
        Some("type nat hook output priority -100"),
        &["jump services".into()],
    );
    chain(
        &mut s,
        "nat-postrouting",
        Some("type nat hook postrouting priority srcnat"),
        &[
            format!(
                "meta mark & {mark} == {mark} meta mark set meta mark ^ {mark} masquerade fully-random comment \"kommit service traffic requiring SNAT\""
            ),
            format!(
                "ct status dnat {fam} saddr . {fam} daddr @{HAIRPIN} masquerade fully-random comment \"a pod reaching itself through a Service\""
            ),
        ],
    );
    let reject_services = format!(
        "ct state new {fam} daddr . meta l4proto . th dport @{NO_ENDPOINT_SERVICES} reject comment \"Service without endpoints\""
    );
    let reject_nodeports = format!(
        "ct state new fib daddr type local {local_only}meta l4proto . th dport @{NO_ENDPOINT_NODEPORTS} reject comment \"node port without endpoints\""
    );
    let mut input = vec![reject_nodeports.clone()];
    if config.localhost_node_ports() {
        input.push(format!(
            "{fam} daddr {lo} {fam} saddr != {lo} ct state != {{ established, related }} ct status != dnat drop comment \"block incoming localnet connections\""
        ));
    }
    chain(
        &mut s,
        "filter-input",
        Some("type filter hook input priority filter"),
        &input,
    );
    chain(
        &mut s,
        "filter-forward",
        Some("type filter hook forward priority filter"),
        std::slice::from_ref(&reject_services),
    );
    chain(
        &mut s,
        "filter-output",
        Some("type filter hook output priority filter"),
        &[reject_services, reject_nodeports],
    );
    s
}

/// A chain inside the table block of a full sync.
pub fn chain_block(chain: &NftChain, out: &mut String) {
    let _ = writeln!(out, "\tchain {} {{", chain.name);
    for r in &chain.rules {
        let _ = writeln!(out, "\t\t{r}");
    }
    out.push_str("\t}\n");
}
