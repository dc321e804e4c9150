//! What kommit writes into its nftables table: the fixed part (sets, maps, hook chains)
//! and what each Service port adds (map and set elements only).
//!
//! ```text
//! nat-prerouting, nat-output ─► services
//!   services: mark cluster-IP traffic for masquerading (from outside the cluster CIDR)
//!             ip daddr . l4proto . dport  vmap @service-ips          ─► endpoints-<n>
//!             (external and load balancer IPs: marked) vmap @service-external-ips ─► endpoints-<n>
//!             (local address, marked) l4proto . dport vmap @service-nodeports ─► nodeport-endpoints-<n>
//!   endpoints-<n>: dnat to ip daddr . l4proto . dport . (numgen random mod n) map @endpoints
//!   nodeport-endpoints-<n>: dnat to l4proto . dport . (numgen random mod n) map @nodeport-endpoints
//! nat-postrouting: masquerade what was marked, and a pod reaching itself (@hairpin)
//! filter-input, filter-output, filter-forward: reject new connections to Service
//!             ports without endpoints (@no-endpoint-services, @no-endpoint-nodeports);
//!             drop martian traffic to 127/8 (localhost node ports only)
//! ```
//!
//! A Service port with n endpoints goes to the chain of its endpoint count, which draws
//! an index 0..n uniformly and looks up the endpoint under (address, protocol, port,
//! index). So there is no chain per Service or per endpoint, only a few per endpoint
//! count: a Service is a handful of map elements, and a pod replaced behind a Service
//! changes elements only. That matters twice for the kernel: it validates the table from
//! every base chain whenever a rule or a verdict-map element naming a chain is added
//! (with a chain per Service, 10,000 chains walked twice per change), and `nft` lists every
//! chain for its cache before each change. No rule uses an anonymous set or map either:
//! the kernel binds each one by walking the whole transaction, which makes a large batch
//! quadratic.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::NftablesConfig;
use crate::iptables::IpFamily;
use crate::model::{Endpoint, ServicePortView};

/// The table kommit owns, in the `ip` (IPv4) or `ip6` family. Nothing else may use it.
pub const TABLE: &str = "kommit";

/// Cluster IP, protocol and port to the chain of the port's endpoint count.
pub const SERVICE_IPS: &str = "service-ips";
/// External and load balancer IP, protocol and port to the chain of the endpoint count.
pub const SERVICE_EXTERNAL_IPS: &str = "service-external-ips";
/// Protocol and node port to the node port chain of the endpoint count.
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Address, protocol, port and index to endpoint address and port.
pub const ENDPOINTS: &str = "endpoints";
/// Protocol, node port and index to endpoint address and port.
pub const NODEPORT_ENDPOINTS: &str = "nodeport-endpoints";
/// Cluster or external IP, protocol and port of Service ports without endpoints.
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Protocol and node port of Service ports without endpoints.
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// `endpoint . endpoint` of every endpoint: a pod that reached itself through a
/// Service is masqueraded so its replies come back through the node.
pub const HAIRPIN: &str = "hairpin";

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
    pub elements: Vec<Element>,
    /// Its endpoints' addresses (for the hairpin set, which counts references).
    pub endpoint_ips: Vec<IpAddr>,
    /// Its endpoint count, when it has endpoints: the group chains it goes to.
    pub group: Option<usize>,
}

/// The chain a Service port with `n` endpoints goes to from its cluster or external IP.
pub fn group_chain(n: usize) -> String {
    format!("endpoints-{n}")
}

/// The chain a Service port with `n` endpoints goes to from its node port.
pub fn nodeport_group_chain(n: usize) -> String {
    format!("nodeport-endpoints-{n}")
}

/// The two chains of endpoint count `n`: draw an index uniformly, DNAT to the endpoint
/// stored under it.
pub fn group_chains(n: usize, family: IpFamily) -> [NftChain; 2] {
    let fam = family_name(family);
    [
        NftChain {
            name: group_chain(n),
            rules: vec![format!(
                "dnat {fam} to {fam} daddr . meta l4proto . th dport . numgen random mod {n} map @{ENDPOINTS}"
            )],
        },
        NftChain {
            name: nodeport_group_chain(n),
            rules: vec![format!(
                "dnat {fam} to meta l4proto . th dport . numgen random mod {n} map @{NODEPORT_ENDPOINTS}"
            )],
        },
    ]
}

fn endpoint_value(ep: &Endpoint) -> String {
    format!("{} . {}", ep.ip, ep.port)
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

    let n = endpoints.len();
    let to_group = Some(format!("goto {}", group_chain(n)));
    for (set, k) in std::iter::once((SERVICE_IPS, key))
        .chain(external_keys.into_iter().map(|k| (SERVICE_EXTERNAL_IPS, k)))
    {
        for (i, ep) in endpoints.iter().enumerate() {
            out.elements.push(Element {
                set: ENDPOINTS,
                key: format!("{k} . {i}"),
                value: Some(endpoint_value(ep)),
            });
        }
        out.elements.push(Element {
            set,
            key: k,
            value: to_group.clone(),
        });
    }
    if let Some(nk) = node_key {
        for (i, ep) in endpoints.iter().enumerate() {
            out.elements.push(Element {
                set: NODEPORT_ENDPOINTS,
                key: format!("{nk} . {i}"),
                value: Some(endpoint_value(ep)),
            });
        }
        out.elements.push(Element {
            set: SERVICE_NODEPORTS,
            key: nk,
            value: Some(format!("goto {}", nodeport_group_chain(n))),
        });
    }
    out.endpoint_ips = endpoints.iter().map(|e| e.ip).collect();
    out.group = Some(n);
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
    // The modulus in the declarations only gives the key's type (a 32-bit number); each
    // group chain draws with its own.
    for (name, ty) in [
        (
            ENDPOINTS,
            format!(
                "typeof {fam} daddr . meta l4proto . th dport . numgen random mod 1 : {fam} daddr . th dport"
            ),
        ),
        (
            NODEPORT_ENDPOINTS,
            format!(
                "typeof meta l4proto . th dport . numgen random mod 1 : {fam} daddr . th dport"
            ),
        ),
    ] {
        let _ = writeln!(s, "\tmap {name} {{\n\t\t{ty}\n\t}}");
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
