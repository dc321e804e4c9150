//! The cluster zone: which names exist and what they answer, from a plain list of
//! Services. No wire format here beyond hickory's record types; [`super::server`] puts
//! the answers into messages.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::model::Protocol;

/// Time to live of every cluster answer, in seconds (CoreDNS' kubernetes plugin default).
pub const TTL: u32 = 5;

/// The default cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// One port of a Service, for SRV records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsPort {
    /// The port's name; unnamed ports get no SRV record.
    pub name: String,
    pub protocol: Protocol,
    /// The Service port (ClusterIP Services) or the endpoints' port (headless ones).
    pub port: u16,
}

/// What a Service's name answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsTarget {
    /// A/AAAA with the cluster IP.
    ClusterIp(IpAddr),
    /// Headless (`clusterIP: None`): A/AAAA with the ready endpoints' addresses.
    Headless(Vec<IpAddr>),
    /// CNAME to an external name.
    ExternalName(String),
}

/// A Service as DNS sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsService {
    pub namespace: String,
    pub name: String,
    pub target: DnsTarget,
    pub ports: Vec<DnsPort>,
}

/// What a question gets from the zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The name exists: its records of the asked type (empty: no data of that type), and
    /// additional records (the addresses of SRV targets).
    Found {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name is in the cluster domain and does not exist.
    NxDomain,
    /// Not a cluster name: ask the upstream resolver.
    NotOurs,
}

/// The cluster's DNS data: Services by namespace and name.
#[derive(Clone, Debug)]
pub struct ClusterZone {
    domain: Vec<String>,
    domain_name: Name,
    services: BTreeMap<(String, String), DnsService>,
    namespaces: BTreeSet<String>,
    serial: u32,
}

/// The domain is not a valid DNS name.
#[derive(Debug, thiserror::Error)]
#[error("cluster domain {domain:?} is not a DNS name: {message}")]
pub struct DomainError {
    pub domain: String,
    pub message: String,
}

fn labels(name: &Name) -> Vec<String> {
    name.iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect()
}

/// `10-1-2-3` → 10.1.2.3 (the pod and endpoint label form; IPv4 only).
fn dashed_ipv4(label: &str) -> Option<IpAddr> {
    let dotted = label.replace('-', ".");
    if dotted.split('.').count() != 4 {
        return None;
    }
    dotted.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The label naming one endpoint of a headless Service: its address with dashes
/// (`10-1-2-3`, IPv6 `fd00--1` with `:` as `-`).
pub fn endpoint_label(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn address_record(name: &Name, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), TTL, data)
}

/// The address a reverse name stands for: `4.3.2.1.in-addr.arpa` (labels as given, most
/// significant last) or the 32 nibbles of `....ip6.arpa`.
fn reverse_address(labels: &[String]) -> Option<IpAddr> {
    match labels {
        [d, c, b, a, in_addr, arpa] if in_addr == "in-addr" && arpa == "arpa" => {
            let octet = |s: &String| s.parse::<u8>().ok().filter(|_| !s.starts_with('+'));
            Some(IpAddr::V4(std::net::Ipv4Addr::new(
                octet(a)?,
                octet(b)?,
                octet(c)?,
                octet(d)?,
            )))
        }
        [nibbles @ .., ip6, arpa] if ip6 == "ip6" && arpa == "arpa" && nibbles.len() == 32 => {
            let mut value: u128 = 0;
            for n in nibbles.iter().rev() {
                let digit = u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1)?;
                value = value << 4 | u128::from(digit);
            }
            Some(IpAddr::V6(std::net::Ipv6Addr::from(value)))
        }
        _ => None,
    }
}

fn matches_type(ip: &IpAddr, qtype: RecordType) -> bool {
    match qtype {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    }
}

impl ClusterZone {
    /// An empty zone for `domain` (for example `cluster.local`).
    pub fn new(domain: &str) -> Result<Self, DomainError> {
        let err = |message: String| DomainError {
            domain: domain.to_string(),
            message,
        };
        let trimmed = domain.trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(err("empty".into()));
        }
        let mut domain_name = Name::from_ascii(trimmed).map_err(|e| err(e.to_string()))?;
        domain_name.set_fqdn(true);
        Ok(ClusterZone {
            domain: labels(&domain_name),
            domain_name,
            services: BTreeMap::new(),
            namespaces: BTreeSet::new(),
            serial: 1,
        })
    }

    /// Builds a zone with these Services; `serial` is the SOA serial (for example the
    /// cache revision the Services were read at).
    pub fn with_services(
        domain: &str,
        services: impl IntoIterator<Item = DnsService>,
        serial: u32,
    ) -> Result<Self, DomainError> {
        let mut zone = Self::new(domain)?;
        for s in services {
            zone.insert(s);
        }
        zone.serial = serial;
        Ok(zone)
    }

    /// Adds or replaces a Service.
    pub fn insert(&mut self, mut service: DnsService) {
        service.namespace = service.namespace.to_ascii_lowercase();
        service.name = service.name.to_ascii_lowercase();
        if let DnsTarget::Headless(ips) = &mut service.target {
            ips.sort();
            ips.dedup();
        }
        self.namespaces.insert(service.namespace.clone());
        self.services
            .insert((service.namespace.clone(), service.name.clone()), service);
    }

    /// The cluster domain as a fully qualified name.
    pub fn domain(&self) -> &Name {
        &self.domain_name
    }

    /// The number of Services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there are no Services.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&DnsService> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Whether `name` is the cluster domain or below it.
    pub fn is_cluster_name(&self, name: &Name) -> bool {
        labels(name).ends_with(&self.domain)
    }

    /// The zone's SOA record (for negative answers).
    pub fn soa(&self) -> Record {
        let prepend = |l: &str| {
            self.domain_name
                .prepend_label(l)
                .unwrap_or_else(|_| self.domain_name.clone())
        };
        let mname = prepend("dns")
            .prepend_label("ns")
            .unwrap_or_else(|_| prepend("ns"));
        let soa = SOA::new(
            mname,
            prepend("hostmaster"),
            self.serial,
            7200,
            1800,
            86400,
            TTL,
        );
        Record::from_rdata(self.domain_name.clone(), TTL, RData::SOA(soa))
    }

    /// Answers `qname`/`qtype`.
    ///
    /// In the cluster domain `<d>`: `<svc>.<ns>.svc.<d>` (the Service),
    /// `<ip-with-dashes>.<svc>.<ns>.svc.<d>` (one endpoint of a headless Service),
    /// `_<port>._<proto>.<svc>.<ns>.svc.<d>` (SRV of a named port) and
    /// `<ip-with-dashes>.<ns>.pod.<d>`; every other name there is NXDOMAIN, except the
    /// zone's own structure (`<d>`, `svc.<d>`, `<ns>.svc.<d>`, `pod.<d>`), which exists
    /// without data. Outside it, `<svc>.<ns>.svc`, `<svc>.<ns>` and a bare `<svc>` answer
    /// when such a Service exists (a bare name looks in `default` first, then in the one
    /// namespace that has it), and reverse names (`in-addr.arpa`, `ip6.arpa`) of cluster
    /// IPs and headless endpoints answer PTR, as CoreDNS' kubernetes plugin does;
    /// everything else (other reverse names too) is not ours.
    pub fn resolve(&self, qname: &Name, qtype: RecordType) -> Resolution {
        let all = labels(qname);
        if let Some(rest) = all.strip_suffix(self.domain.as_slice()) {
            return self.resolve_cluster(qname, rest, qtype);
        }
        if let Some(ip) = reverse_address(&all) {
            return self.reverse(qname, ip, qtype);
        }
        let found = match all.as_slice() {
            [svc, ns, s] if s == "svc" => self.service(ns, svc),
            [svc, ns] => self.service(ns, svc),
            [svc] => self.service("default", svc).or_else(|| {
                let mut it = self.services.values().filter(|s| &s.name == svc);
                match (it.next(), it.next()) {
                    (Some(one), None) => Some(one),
                    _ => None,
                }
            }),
            _ => None,
        };
        match found {
            Some(s) => self.service_answer(qname, s, qtype),
            None => Resolution::NotOurs,
        }
    }

    fn found(answers: Vec<Record>) -> Resolution {
        Resolution::Found {
            answers,
            additionals: Vec::new(),
        }
    }

    fn resolve_cluster(&self, qname: &Name, rest: &[String], qtype: RecordType) -> Resolution {
        let soa_or_nothing = || {
            if matches!(qtype, RecordType::SOA | RecordType::ANY) && rest.is_empty() {
                Self::found(vec![self.soa()])
            } else {
                Self::found(Vec::new())
            }
        };
        match rest {
            [] => soa_or_nothing(),
            [s] if s == "svc" || s == "pod" => soa_or_nothing(),
            [ns, s] if s == "svc" && self.namespaces.contains(ns) => soa_or_nothing(),
            [svc, ns, s] if s == "svc" => match self.service(ns, svc) {
                Some(service) => self.service_answer(qname, service, qtype),
                None => Resolution::NxDomain,
            },
            [endpoint, svc, ns, s] if s == "svc" => {
                let Some(DnsTarget::Headless(ips)) = self.service(ns, svc).map(|s| &s.target)
                else {
                    return Resolution::NxDomain;
                };
                match ips.iter().find(|ip| endpoint_label(ip) == *endpoint) {
                    Some(ip) => Self::found(
                        matches_type(ip, qtype)
                            .then(|| address_record(qname, *ip))
                            .into_iter()
                            .collect(),
                    ),
                    None => Resolution::NxDomain,
                }
            }
            [port, proto, svc, ns, s] if s == "svc" => self.srv(qname, port, proto, svc, ns, qtype),
            [ip, _ns, p] if p == "pod" => match dashed_ipv4(ip) {
                Some(ip) => Self::found(
                    matches_type(&ip, qtype)
                        .then(|| address_record(qname, ip))
                        .into_iter()
                        .collect(),
                ),
                None => Resolution::NxDomain,
            },
            _ => Resolution::NxDomain,
        }
    }

    /// PTR for a reverse name: the Services whose cluster IP it is (their FQDN), and the
    /// headless Services it is an endpoint of (`<ip-with-dashes>.<svc>.<ns>.svc.<d>`).
    /// Addresses of no Service are not ours (the upstream may know them).
    fn reverse(&self, qname: &Name, ip: IpAddr, qtype: RecordType) -> Resolution {
        let mut targets = Vec::new();
        for service in self.services.values() {
            let target = match &service.target {
                DnsTarget::ClusterIp(c) if *c == ip => self.service_fqdn(service),
                DnsTarget::Headless(ips) if ips.contains(&ip) => self
                    .service_fqdn(service)
                    .and_then(|n| n.prepend_label(endpoint_label(&ip)).ok()),
                _ => None,
            };
            targets.extend(target);
        }
        if targets.is_empty() {
            return Resolution::NotOurs;
        }
        if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
            return Self::found(Vec::new());
        }
        Self::found(
            targets
                .into_iter()
                .map(|t| Record::from_rdata(qname.clone(), TTL, RData::PTR(PTR(t))))
                .collect(),
        )
    }

    fn service_fqdn(&self, service: &DnsService) -> Option<Name> {
        let mut name = self.domain_name.prepend_label("svc").ok()?;
        name = name.prepend_label(service.namespace.as_str()).ok()?;
        name.prepend_label(service.name.as_str()).ok()
    }

    fn service_answer(&self, qname: &Name, service: &DnsService, qtype: RecordType) -> Resolution {
        match &service.target {
            DnsTarget::ClusterIp(ip) => Self::found(
                matches_type(ip, qtype)
                    .then(|| address_record(qname, *ip))
                    .into_iter()
                    .collect(),
            ),
            DnsTarget::Headless(ips) => Self::found(
                ips.iter()
                    .filter(|ip| matches_type(ip, qtype))
                    .map(|ip| address_record(qname, *ip))
                    .collect(),
            ),
            DnsTarget::ExternalName(target) => {
                // A CNAME answers every type but CNAME's own absence (RFC 1034 3.6.2).
                match Name::from_ascii(target.trim_end_matches('.')) {
                    Ok(mut t) => {
                        t.set_fqdn(true);
                        Self::found(vec![Record::from_rdata(
                            qname.clone(),
                            TTL,
                            RData::CNAME(CNAME(t)),
                        )])
                    }
                    Err(_) => Self::found(Vec::new()),
                }
            }
        }
    }

    fn srv(
        &self,
        qname: &Name,
        port: &str,
        proto: &str,
        svc: &str,
        ns: &str,
        qtype: RecordType,
    ) -> Resolution {
        let (Some(port), Some(proto)) = (port.strip_prefix('_'), proto.strip_prefix('_')) else {
            return Resolution::NxDomain;
        };
        let Some(service) = self.service(ns, svc) else {
            return Resolution::NxDomain;
        };
        let Some(p) = service.ports.iter().find(|p| {
            !p.name.is_empty()
                && p.name.eq_ignore_ascii_case(port)
                && p.protocol.k8s_name().eq_ignore_ascii_case(proto)
        }) else {
            return Resolution::NxDomain;
        };
        if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
            return Self::found(Vec::new());
        }
        let Some(fqdn) = self.service_fqdn(service) else {
            return Resolution::NxDomain;
        };
        let srv = |target: Name| {
            Record::from_rdata(
                qname.clone(),
                TTL,
                RData::SRV(SRV::new(0, 100, p.port, target)),
            )
        };
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        match &service.target {
            DnsTarget::ClusterIp(ip) => {
                answers.push(srv(fqdn.clone()));
                additionals.push(address_record(&fqdn, *ip));
            }
            DnsTarget::Headless(ips) => {
                for ip in ips {
                    if let Ok(target) = fqdn.prepend_label(endpoint_label(ip).as_str()) {
                        answers.push(srv(target.clone()));
                        additionals.push(address_record(&target, *ip));
                    }
                }
            }
            DnsTarget::ExternalName(t) => {
                if let Ok(mut target) = Name::from_ascii(t.trim_end_matches('.')) {
                    target.set_fqdn(true);
                    answers.push(srv(target));
                }
            }
        }
        Resolution::Found {
            answers,
            additionals,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn zone() -> ClusterZone {
        let svc = |ns: &str, name: &str, target: DnsTarget, ports: Vec<DnsPort>| DnsService {
            namespace: ns.into(),
            name: name.into(),
            target,
            ports,
        };
        let http = |port| DnsPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port,
        };
        ClusterZone::with_services(
            "cluster.local",
            [
                svc(
                    "shop",
                    "web",
                    DnsTarget::ClusterIp("198.19.0.10".parse().unwrap()),
                    vec![http(80)],
                ),
                svc(
                    "shop",
                    "db",
                    DnsTarget::Headless(vec![
                        "172.17.0.5".parse().unwrap(),
                        "172.17.0.4".parse().unwrap(),
                    ]),
                    vec![DnsPort {
                        name: "pg".into(),
                        protocol: Protocol::Tcp,
                        port: 5432,
                    }],
                ),
                svc(
                    "shop",
                    "ext",
                    DnsTarget::ExternalName("example.org".into()),
                    vec![],
                ),
                svc(
                    "default",
                    "web",
                    DnsTarget::ClusterIp("198.19.0.11".parse().unwrap()),
                    vec![],
                ),
                svc(
                    "other",
                    "api",
                    DnsTarget::ClusterIp("198.19.0.12".parse().unwrap()),
                    vec![],
                ),
                svc(
                    "third",
                    "api",
                    DnsTarget::ClusterIp("198.19.0.13".parse().unwrap()),
                    vec![],
                ),
            ],
            7,
        )
        .unwrap()
    }

    fn ask(zone: &ClusterZone, name: &str, t: RecordType) -> Resolution {
        zone.resolve(&Name::from_ascii(name).unwrap(), t)
    }

    /// The answers as text: `name TYPE data`.
    fn text(r: &Resolution) -> Vec<String> {
        match r {
            Resolution::Found {
                answers,
                additionals,
            } => answers
                .iter()
                .chain(additionals)
                .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
                .collect(),
            other => vec![format!("{other:?}")],
        }
    }

    #[test]
    fn a_service_answers_under_every_form_of_its_name() {
        let z = zone();
        for name in [
            "web.shop.svc.cluster.local.",
            "web.shop.svc.cluster.local",
            "WEB.Shop.SVC.cluster.LOCAL.",
            "web.shop.svc.",
            "web.shop.",
        ] {
            let got = text(&ask(&z, name, RecordType::A));
            assert_eq!(got, [format!("{name} A 198.19.0.10")], "{name}");
        }
        // A bare name prefers the default namespace, then a unique namespace.
        assert_eq!(
            text(&ask(&z, "web.", RecordType::A)),
            ["web. A 198.19.0.11"]
        );
        assert_eq!(
            text(&ask(&z, "db.", RecordType::A)),
            ["db. A 172.17.0.4", "db. A 172.17.0.5"]
        );
        // Ambiguous or unknown bare and partial names are not ours.
        assert_eq!(ask(&z, "api.", RecordType::A), Resolution::NotOurs);
        assert_eq!(ask(&z, "example.org.", RecordType::A), Resolution::NotOurs);
        assert_eq!(
            ask(&z, "web.nowhere.svc.", RecordType::A),
            Resolution::NotOurs
        );
    }

    #[test]
    fn no_data_nxdomain_and_structure() {
        let z = zone();
        assert_eq!(
            text(&ask(&z, "web.shop.svc.cluster.local.", RecordType::AAAA)),
            Vec::<String>::new(),
            "a v4 Service has no AAAA"
        );
        for name in [
            "nope.shop.svc.cluster.local.",
            "web.nope.svc.cluster.local.",
            "x.y.z.cluster.local.",
            "nope.cluster.local.",
            "1-2-3-4.web.shop.svc.cluster.local.",
            "_http._udp.web.shop.svc.cluster.local.",
            "_nope._tcp.web.shop.svc.cluster.local.",
        ] {
            assert_eq!(ask(&z, name, RecordType::A), Resolution::NxDomain, "{name}");
        }
        for name in [
            "cluster.local.",
            "svc.cluster.local.",
            "shop.svc.cluster.local.",
            "pod.cluster.local.",
        ] {
            assert!(
                matches!(ask(&z, name, RecordType::A), Resolution::Found { ref answers, .. } if answers.is_empty()),
                "{name}"
            );
        }
        let soa = text(&ask(&z, "cluster.local.", RecordType::SOA));
        assert_eq!(soa.len(), 1);
        assert!(
            soa[0].starts_with(
                "cluster.local. SOA ns.dns.cluster.local. hostmaster.cluster.local. 7 "
            ),
            "{soa:?}"
        );
    }

    #[test]
    fn headless_external_name_pods_and_srv() {
        let z = zone();
        assert_eq!(
            text(&ask(&z, "db.shop.svc.cluster.local.", RecordType::A)),
            [
                "db.shop.svc.cluster.local. A 172.17.0.4",
                "db.shop.svc.cluster.local. A 172.17.0.5"
            ]
        );
        assert_eq!(
            text(&ask(
                &z,
                "172-17-0-5.db.shop.svc.cluster.local.",
                RecordType::A
            )),
            ["172-17-0-5.db.shop.svc.cluster.local. A 172.17.0.5"]
        );
        assert_eq!(
            text(&ask(&z, "ext.shop.svc.cluster.local.", RecordType::A)),
            ["ext.shop.svc.cluster.local. CNAME example.org."]
        );
        assert_eq!(
            text(&ask(
                &z,
                "10-244-1-7.shop.pod.cluster.local.",
                RecordType::A
            )),
            ["10-244-1-7.shop.pod.cluster.local. A 10.244.1.7"]
        );
        assert_eq!(
            ask(&z, "10-244-1.shop.pod.cluster.local.", RecordType::A),
            Resolution::NxDomain
        );
        assert_eq!(
            text(&ask(
                &z,
                "_http._tcp.web.shop.svc.cluster.local.",
                RecordType::SRV
            )),
            [
                "_http._tcp.web.shop.svc.cluster.local. SRV 0 100 80 web.shop.svc.cluster.local.",
                "web.shop.svc.cluster.local. A 198.19.0.10"
            ]
        );
        assert_eq!(
            text(&ask(
                &z,
                "_pg._TCP.db.shop.svc.cluster.local.",
                RecordType::SRV
            )),
            [
                "_pg._TCP.db.shop.svc.cluster.local. SRV 0 100 5432 172-17-0-4.db.shop.svc.cluster.local.",
                "_pg._TCP.db.shop.svc.cluster.local. SRV 0 100 5432 172-17-0-5.db.shop.svc.cluster.local.",
                "172-17-0-4.db.shop.svc.cluster.local. A 172.17.0.4",
                "172-17-0-5.db.shop.svc.cluster.local. A 172.17.0.5"
            ]
        );
    }

    #[test]
    fn reverse_names_of_cluster_ips_and_headless_endpoints_answer_ptr() {
        let z = zone();
        assert_eq!(
            text(&ask(&z, "10.0.19.198.in-addr.arpa.", RecordType::PTR)),
            ["10.0.19.198.in-addr.arpa. PTR web.shop.svc.cluster.local."]
        );
        assert_eq!(
            text(&ask(&z, "5.0.17.172.in-addr.arpa.", RecordType::PTR)),
            ["5.0.17.172.in-addr.arpa. PTR 172-17-0-5.db.shop.svc.cluster.local."]
        );
        // An address of nothing in the cluster goes upstream; so do malformed names.
        for name in [
            "99.0.19.198.in-addr.arpa.",
            "300.0.19.198.in-addr.arpa.",
            "0.19.198.in-addr.arpa.",
            "1.0.0.0.0.0.0.0.ip6.arpa.",
        ] {
            assert_eq!(
                ask(&z, name, RecordType::PTR),
                Resolution::NotOurs,
                "{name}"
            );
        }
        // The name exists: other types get no data.
        assert_eq!(
            text(&ask(&z, "10.0.19.198.in-addr.arpa.", RecordType::A)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn another_cluster_domain() {
        let mut z = ClusterZone::new("kommit.test.").unwrap();
        z.insert(DnsService {
            namespace: "a".into(),
            name: "b".into(),
            target: DnsTarget::ClusterIp("fd00::5".parse().unwrap()),
            ports: vec![],
        });
        assert_eq!(
            text(&ask(&z, "b.a.svc.kommit.test.", RecordType::AAAA)),
            ["b.a.svc.kommit.test. AAAA fd00::5"]
        );
        assert_eq!(
            ask(&z, "b.a.svc.cluster.local.", RecordType::AAAA),
            Resolution::NotOurs
        );
        // fd00::5 backwards, nibble by nibble.
        let reverse = format!("5.{}d.f.ip6.arpa.", "0.".repeat(29));
        assert_eq!(
            text(&ask(&z, &reverse, RecordType::PTR)),
            [format!("{reverse} PTR b.a.svc.kommit.test.")]
        );
        assert!(ClusterZone::new("").is_err());
        assert!(ClusterZone::new("bad..domain").is_err());
    }
}
