//! Rule generation: the chains kommit writes, in kube-proxy's layout with kommit's names.
//!
//! ```text
//! nat    PREROUTING, OUTPUT ─► KOMMIT-SERVICES ─(cluster IP:port)─► KOMMIT-SVC-<hash>
//!                                 ├─(external or load balancer IP:port)─► KOMMIT-EXT-<hash>
//!                                 └─(dst-type LOCAL, last rule)─► KOMMIT-NODEPORTS
//!        KOMMIT-NODEPORTS ─(node port)─► KOMMIT-EXT-<hash> ─► KOMMIT-MARK-MASQ, KOMMIT-SVC-<hash>
//!        KOMMIT-SVC-<hash> ─(statistic random 1/(n-i))─► KOMMIT-SEP-<hash> ─► DNAT endpoint
//!        POSTROUTING ─► KOMMIT-POSTROUTING (MASQUERADE what KOMMIT-MARK-MASQ marked)
//! filter KOMMIT-SERVICES / KOMMIT-EXTERNAL-SERVICES: REJECT Services without endpoints
//!        KOMMIT-FORWARD: accept marked and established service traffic
//!        KOMMIT-FIREWALL: block martian traffic to 127/8 (only with localhost node ports)
//! ```
//!
//! Every Service port's rules depend only on that port and its endpoints, so they are
//! generated once per change and cached by the proxier ([`PortRules`]).

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Arc;

use data_encoding::BASE32;
use sha2::{Digest, Sha256};

use super::{IpFamily, IptablesConfig};
use crate::model::{Endpoint, Protocol, ServicePortName, ServicePortView};

/// Every chain kommit owns starts with this; nothing else on the host may use it.
pub const CHAIN_PREFIX: &str = "KOMMIT-";
pub const SERVICES_CHAIN: &str = "KOMMIT-SERVICES";
pub const EXTERNAL_SERVICES_CHAIN: &str = "KOMMIT-EXTERNAL-SERVICES";
pub const NODEPORTS_CHAIN: &str = "KOMMIT-NODEPORTS";
pub const POSTROUTING_CHAIN: &str = "KOMMIT-POSTROUTING";
pub const MARK_MASQ_CHAIN: &str = "KOMMIT-MARK-MASQ";
pub const FORWARD_CHAIN: &str = "KOMMIT-FORWARD";
pub const FIREWALL_CHAIN: &str = "KOMMIT-FIREWALL";
const SVC_PREFIX: &str = "KOMMIT-SVC-";
const EXT_PREFIX: &str = "KOMMIT-EXT-";
const SEP_PREFIX: &str = "KOMMIT-SEP-";

/// The two tables kommit writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Filter,
    Nat,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::Filter, Table::Nat];

    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
        }
    }
}

/// One chain's content: its rules, each a full `-A CHAIN ...` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub table: Table,
    pub name: String,
    pub rules: Vec<String>,
    /// Hash of the rules, to see cheaply whether the chain changed since the last write.
    pub digest: u64,
}

/// A digest of a chain's rules, to see cheaply whether it changed since the last write.
pub fn digest<'a>(rules: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut h = DefaultHasher::new();
    for r in rules {
        h.write(r.as_bytes());
        h.write_u8(0xff);
    }
    h.finish()
}

impl Chain {
    fn new(table: Table, name: String, rules: Vec<String>) -> Self {
        let digest = digest(rules.iter().map(String::as_str));
        Self {
            table,
            name,
            rules,
            digest,
        }
    }
}

/// A rule in a built-in chain that sends traffic into a kommit chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jump {
    pub table: Table,
    /// The built-in chain (PREROUTING, OUTPUT, ...).
    pub from: &'static str,
    pub to: &'static str,
    /// The match part of the rule (between the chain and `-j`).
    pub matches: &'static str,
}

impl Jump {
    /// The rule as written with `-I` (prepended, so kommit sees traffic before other rules
    /// such as Docker's).
    pub fn insert_line(&self) -> String {
        format!("-I {} 1 {} -j {}", self.from, self.matches, self.to)
    }
}

/// The jumps from built-in chains that kommit keeps, in the order they are checked.
pub fn jumps(config: &IptablesConfig) -> Vec<Jump> {
    let mut out = vec![
        Jump {
            table: Table::Filter,
            from: "INPUT",
            to: EXTERNAL_SERVICES_CHAIN,
            matches: "-m conntrack --ctstate NEW -m comment --comment \"kommit externally-visible service portals\"",
        },
        Jump {
            table: Table::Filter,
            from: "FORWARD",
            to: EXTERNAL_SERVICES_CHAIN,
            matches: "-m conntrack --ctstate NEW -m comment --comment \"kommit externally-visible service portals\"",
        },
        Jump {
            table: Table::Filter,
            from: "FORWARD",
            to: SERVICES_CHAIN,
            matches: "-m conntrack --ctstate NEW -m comment --comment \"kommit service portals\"",
        },
        Jump {
            table: Table::Filter,
            from: "OUTPUT",
            to: SERVICES_CHAIN,
            matches: "-m conntrack --ctstate NEW -m comment --comment \"kommit service portals\"",
        },
        Jump {
            table: Table::Filter,
            from: "FORWARD",
            to: FORWARD_CHAIN,
            matches: "-m comment --comment \"kommit forwarding rules\"",
        },
        Jump {
            table: Table::Nat,
            from: "PREROUTING",
            to: SERVICES_CHAIN,
            matches: "-m comment --comment \"kommit service portals\"",
        },
        Jump {
            table: Table::Nat,
            from: "OUTPUT",
            to: SERVICES_CHAIN,
            matches: "-m comment --comment \"kommit service portals\"",
        },
        Jump {
            table: Table::Nat,
            from: "POSTROUTING",
            to: POSTROUTING_CHAIN,
            matches: "-m comment --comment \"kommit postrouting rules\"",
        },
    ];
    if config.localhost_node_ports() {
        for from in ["INPUT", "OUTPUT"] {
            out.push(Jump {
                table: Table::Filter,
                from,
                to: FIREWALL_CHAIN,
                matches: "-m comment --comment \"kommit firewall\"",
            });
        }
    }
    out
}

/// The first 16 characters of the base32 SHA-256 of `parts`: short, stable, and
/// within iptables' 28-character chain name limit once prefixed.
fn hash16(parts: &[&str]) -> String {
    let mut sha = Sha256::new();
    for p in parts {
        sha.update(p.as_bytes());
        sha.update([0u8]);
    }
    let mut s = BASE32.encode(&sha.finalize());
    s.truncate(16);
    s
}

/// `KOMMIT-SVC-<hash>`: the chain that picks an endpoint for a Service port.
pub fn service_chain(spn: &ServicePortName, protocol: Protocol) -> String {
    format!(
        "{SVC_PREFIX}{}",
        hash16(&[&spn.to_string(), protocol.k8s_name()])
    )
}

/// `KOMMIT-EXT-<hash>`: the chain for traffic arriving on a Service port's node port.
pub fn external_chain(spn: &ServicePortName, protocol: Protocol) -> String {
    format!(
        "{EXT_PREFIX}{}",
        hash16(&[&spn.to_string(), protocol.k8s_name()])
    )
}

/// `KOMMIT-SEP-<hash>`: the chain that DNATs to one endpoint of a Service port.
pub fn endpoint_chain(spn: &ServicePortName, protocol: Protocol, endpoint: &Endpoint) -> String {
    format!(
        "{SEP_PREFIX}{}",
        hash16(&[&spn.to_string(), protocol.k8s_name(), &endpoint.to_string()])
    )
}

/// The probability that endpoint `i` (0-based) of `n` is chosen among the endpoints
/// not passed yet: 1/(n-i), with ten decimals as kube-proxy writes it (iptables keeps
/// 31 bits, so ten decimals lose nothing).
pub fn probability(i: usize, n: usize) -> String {
    format!("{:.10}", 1.0 / (n - i) as f64)
}

fn host_cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

fn dnat_target(ep: &Endpoint) -> String {
    match ep.ip {
        IpAddr::V4(v4) => format!("{v4}:{}", ep.port),
        IpAddr::V6(v6) => format!("[{v6}]:{}", ep.port),
    }
}

/// Everything one Service port contributes: lines in the shared chains and chains of
/// its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRules {
    pub nat_services: Vec<String>,
    pub nat_nodeports: Vec<String>,
    pub filter_services: Vec<String>,
    pub filter_external: Vec<String>,
    /// KOMMIT-SVC-, KOMMIT-EXT- and KOMMIT-SEP- chains (nat).
    pub chains: Vec<Chain>,
}

/// Generates the rules of one Service port. Ports of the other address family give
/// empty rules (an IPv6 Service is ip6tables' business).
///
/// `terse` leaves the comments off the per-endpoint rules, as kube-proxy does in large
/// clusters: less to write and to restore when there are thousands of endpoints.
pub fn port_rules(view: &ServicePortView<'_>, config: &IptablesConfig, terse: bool) -> PortRules {
    let mut out = PortRules {
        nat_services: Vec::new(),
        nat_nodeports: Vec::new(),
        filter_services: Vec::new(),
        filter_external: Vec::new(),
        chains: Vec::new(),
    };
    if !config.family.matches(view.service.cluster_ip) {
        return out;
    }
    let spn = view.name();
    let proto = view.port.protocol;
    let p = proto.iptables_name();
    let cluster = host_cidr(view.service.cluster_ip);
    let port = view.port.port;
    let node_port = view
        .port
        .node_port
        .filter(|_| view.service.service_type.has_node_ports());
    let endpoints: Vec<&Endpoint> = view
        .endpoints
        .iter()
        .filter(|e| config.family.matches(e.ip))
        .collect();
    let external: Vec<String> = view
        .service
        .external_ips
        .iter()
        .filter(|ip| config.family.matches(**ip))
        .map(|ip| host_cidr(*ip))
        .collect();

    if endpoints.is_empty() {
        out.filter_services.push(format!(
            "-A {SERVICES_CHAIN} -m comment --comment \"{spn} has no endpoints\" -m {p} -p {p} -d {cluster} --dport {port} -j REJECT"
        ));
        for ext in &external {
            out.filter_external.push(format!(
                "-A {EXTERNAL_SERVICES_CHAIN} -m comment --comment \"{spn} has no endpoints\" -m {p} -p {p} -d {ext} --dport {port} -j REJECT"
            ));
        }
        if let Some(np) = node_port {
            out.filter_external.push(format!(
                "-A {EXTERNAL_SERVICES_CHAIN} -m comment --comment \"{spn} has no endpoints\" -m addrtype --dst-type LOCAL -m {p} -p {p} --dport {np} -j REJECT"
            ));
        }
        return out;
    }

    let svc_chain = service_chain(&spn, proto);
    out.nat_services.push(format!(
        "-A {SERVICES_CHAIN} -m comment --comment \"{spn} cluster IP\" -m {p} -p {p} -d {cluster} --dport {port} -j {svc_chain}"
    ));

    let mut svc_rules = Vec::with_capacity(endpoints.len() + 1);
    let masq_source = match &config.cluster_cidr {
        Some(cidr) => format!(" ! -s {cidr}"),
        None => String::new(),
    };
    svc_rules.push(format!(
        "-A {svc_chain} -m comment --comment \"{spn} cluster IP\" -m {p} -p {p} -d {cluster} --dport {port}{masq_source} -j {MARK_MASQ_CHAIN}"
    ));

    if node_port.is_some() || !external.is_empty() {
        let ext_chain = external_chain(&spn, proto);
        for ext in &external {
            out.nat_services.push(format!(
                "-A {SERVICES_CHAIN} -m comment --comment \"{spn} external IP\" -m {p} -p {p} -d {ext} --dport {port} -j {ext_chain}"
            ));
        }
        if let Some(np) = node_port {
            out.nat_nodeports.push(format!(
                "-A {NODEPORTS_CHAIN} -m comment --comment \"{spn}\" -m {p} -p {p} --dport {np} -j {ext_chain}"
            ));
        }
        out.chains.push(Chain::new(
            Table::Nat,
            ext_chain.clone(),
            vec![
                format!(
                    "-A {ext_chain} -m comment --comment \"masquerade traffic for {spn} external destinations\" -j {MARK_MASQ_CHAIN}"
                ),
                format!("-A {ext_chain} -j {svc_chain}"),
            ],
        ));
    }

    let n = endpoints.len();
    let mut sep_chains = Vec::with_capacity(n);
    for (i, ep) in endpoints.iter().enumerate() {
        let sep = endpoint_chain(&spn, proto, ep);
        let mut line = if terse {
            format!("-A {svc_chain}")
        } else {
            format!(
                "-A {svc_chain} -m comment --comment \"{spn} -> {}\"",
                dnat_target(ep)
            )
        };
        if i + 1 < n {
            let _ = write!(
                line,
                " -m statistic --mode random --probability {}",
                probability(i, n)
            );
        }
        let _ = write!(line, " -j {sep}");
        svc_rules.push(line);
        sep_chains.push(Chain::new(Table::Nat, sep.clone(), {
            let comment = if terse {
                String::new()
            } else {
                format!(" -m comment --comment \"{spn}\"")
            };
            vec![
                format!(
                    "-A {sep}{comment} -s {} -j {MARK_MASQ_CHAIN}",
                    host_cidr(ep.ip)
                ),
                format!(
                    "-A {sep}{comment} -m {p} -p {p} -j DNAT --to-destination {}",
                    dnat_target(ep)
                ),
            ]
        }));
    }
    out.chains
        .push(Chain::new(Table::Nat, svc_chain, svc_rules));
    out.chains.extend(sep_chains);
    out
}

/// The chains that do not depend on any Service.
pub fn static_chains(config: &IptablesConfig) -> Vec<Chain> {
    let mark = config.masquerade_mark();
    let mut out = vec![
        Chain::new(
            Table::Nat,
            POSTROUTING_CHAIN.into(),
            vec![
                format!("-A {POSTROUTING_CHAIN} -m mark ! --mark {mark}/{mark} -j RETURN"),
                format!("-A {POSTROUTING_CHAIN} -j MARK --xor-mark {mark}"),
                format!(
                    "-A {POSTROUTING_CHAIN} -m comment --comment \"kommit service traffic requiring SNAT\" -j MASQUERADE --random-fully"
                ),
            ],
        ),
        Chain::new(
            Table::Nat,
            MARK_MASQ_CHAIN.into(),
            vec![format!("-A {MARK_MASQ_CHAIN} -j MARK --or-mark {mark}")],
        ),
        Chain::new(
            Table::Filter,
            FORWARD_CHAIN.into(),
            vec![
                format!(
                    "-A {FORWARD_CHAIN} -m comment --comment \"kommit forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
                ),
                format!(
                    "-A {FORWARD_CHAIN} -m comment --comment \"kommit forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
                ),
            ],
        ),
    ];
    if config.localhost_node_ports() {
        out.push(Chain::new(
            Table::Filter,
            FIREWALL_CHAIN.into(),
            vec![format!(
                "-A {FIREWALL_CHAIN} -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
            )],
        ));
    }
    out
}

/// One of the four chains every Service port adds lines to (KOMMIT-SERVICES and
/// KOMMIT-NODEPORTS in nat, KOMMIT-SERVICES and KOMMIT-EXTERNAL-SERVICES in filter).
/// Its digest can be computed without building it, so a partial sync only builds the
/// ones that changed.
pub struct SharedChain {
    pub table: Table,
    pub name: &'static str,
    select: fn(&PortRules) -> &Vec<String>,
    tail: Option<String>,
}

impl SharedChain {
    fn lines<'a>(&'a self, ports: &'a [Arc<PortRules>]) -> impl Iterator<Item = &'a str> + 'a {
        ports
            .iter()
            .flat_map(|p| (self.select)(p).iter().map(String::as_str))
            .chain(self.tail.as_deref())
    }

    pub fn digest(&self, ports: &[Arc<PortRules>]) -> u64 {
        digest(self.lines(ports))
    }

    /// The lines one Service port adds to this chain.
    pub fn lines_of<'a>(&self, port: &'a PortRules) -> &'a [String] {
        (self.select)(port)
    }

    /// `line` (an `-A` line of this chain) as a rule added to the chain in place: before
    /// the chain's last rule if it has a fixed one, else at the end.
    pub fn insert_line(&self, line: &str) -> String {
        match &self.tail {
            Some(_) => {
                let spec = line
                    .strip_prefix(&format!("-A {} ", self.name))
                    .unwrap_or(line);
                format!("-I {} 1 {spec}", self.name)
            }
            None => line.to_owned(),
        }
    }

    pub fn build(&self, ports: &[Arc<PortRules>]) -> Chain {
        Chain::new(
            self.table,
            self.name.to_owned(),
            self.lines(ports).map(str::to_owned).collect(),
        )
    }
}

/// The four shared chains, in the order they are written.
pub fn shared_chains(config: &IptablesConfig) -> [SharedChain; 4] {
    let local = if config.localhost_node_ports() || config.family == IpFamily::V6 {
        ""
    } else {
        " ! -d 127.0.0.0/8"
    };
    [
        SharedChain {
            table: Table::Nat,
            name: SERVICES_CHAIN,
            select: |p| &p.nat_services,
            tail: Some(format!(
                "-A {SERVICES_CHAIN} -m comment --comment \"kommit service nodeports; NOTE: this must be the last rule in this chain\"{local} -m addrtype --dst-type LOCAL -j {NODEPORTS_CHAIN}"
            )),
        },
        SharedChain {
            table: Table::Nat,
            name: NODEPORTS_CHAIN,
            select: |p| &p.nat_nodeports,
            tail: None,
        },
        SharedChain {
            table: Table::Filter,
            name: SERVICES_CHAIN,
            select: |p| &p.filter_services,
            tail: None,
        },
        SharedChain {
            table: Table::Filter,
            name: EXTERNAL_SERVICES_CHAIN,
            select: |p| &p.filter_external,
            tail: None,
        },
    ]
}
