//! Kubernetes Services and Endpoints → [`DnsService`]s.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Endpoints, Service};

use super::zone::{DnsPort, DnsService, DnsTarget};
use crate::model::Protocol;

fn protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn key(ns: Option<&String>, name: Option<&String>) -> (String, String) {
    (
        ns.cloned().unwrap_or_else(|| "default".into()),
        name.cloned().unwrap_or_default(),
    )
}

/// The DNS view of `services`; `endpoints` (core/v1, matched by namespace and name) give
/// headless Services their ready addresses and ports. Services without a cluster IP yet
/// (not allocated) and objects without a name are left out; so are addresses and ports
/// that do not parse.
pub fn services_from_k8s(services: &[Service], endpoints: &[Endpoints]) -> Vec<DnsService> {
    let endpoints: BTreeMap<(String, String), &Endpoints> = endpoints
        .iter()
        .map(|e| {
            (
                key(e.metadata.namespace.as_ref(), e.metadata.name.as_ref()),
                e,
            )
        })
        .collect();
    let mut out = Vec::new();
    for s in services {
        let (namespace, name) = key(s.metadata.namespace.as_ref(), s.metadata.name.as_ref());
        let Some(spec) = &s.spec else { continue };
        if name.is_empty() {
            continue;
        }
        let service_ports = || {
            spec.ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(DnsPort {
                        name: p.name.clone().unwrap_or_default(),
                        protocol: protocol(p.protocol.as_deref())?,
                        port: u16::try_from(p.port).ok()?,
                    })
                })
                .collect::<Vec<_>>()
        };
        let (target, ports) = if spec.type_.as_deref() == Some("ExternalName") {
            let Some(ext) = spec.external_name.clone().filter(|e| !e.is_empty()) else {
                continue;
            };
            (DnsTarget::ExternalName(ext), service_ports())
        } else {
            match spec.cluster_ip.as_deref() {
                Some("None") => {
                    let mut ips = Vec::new();
                    let mut ports = Vec::new();
                    if let Some(ep) = endpoints.get(&(namespace.clone(), name.clone())) {
                        for subset in ep.subsets.iter().flatten() {
                            let addrs = subset.addresses.iter().flatten();
                            let parsed: Vec<IpAddr> =
                                addrs.filter_map(|a| a.ip.parse().ok()).collect();
                            if parsed.is_empty() {
                                continue;
                            }
                            ips.extend(parsed);
                            for p in subset.ports.iter().flatten() {
                                let Some(protocol) = protocol(p.protocol.as_deref()) else {
                                    continue;
                                };
                                let Ok(port) = u16::try_from(p.port) else {
                                    continue;
                                };
                                let dp = DnsPort {
                                    name: p.name.clone().unwrap_or_default(),
                                    protocol,
                                    port,
                                };
                                if !ports.contains(&dp) {
                                    ports.push(dp);
                                }
                            }
                        }
                    }
                    (DnsTarget::Headless(ips), ports)
                }
                Some(ip) => match ip.parse::<IpAddr>() {
                    Ok(ip) => (DnsTarget::ClusterIp(ip), service_ports()),
                    Err(_) => continue,
                },
                None => continue,
            }
        };
        out.push(DnsService {
            namespace,
            name,
            target,
            ports,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn from_json<T: k8s_openapi::serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn services_of_every_type() {
        let services: Vec<Service> = vec![
            from_json(serde_json::json!({
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"clusterIP": "198.19.0.10", "ports": [
                    {"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}
            })),
            from_json(serde_json::json!({
                "metadata": {"name": "db", "namespace": "shop"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
            })),
            from_json(serde_json::json!({
                "metadata": {"name": "ext"},
                "spec": {"type": "ExternalName", "externalName": "example.org"}
            })),
            from_json(serde_json::json!({
                "metadata": {"name": "pending", "namespace": "shop"},
                "spec": {"ports": [{"port": 80}]}
            })),
        ];
        let endpoints: Vec<Endpoints> = vec![from_json(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "subsets": [{
                "addresses": [{"ip": "172.17.0.4"}, {"ip": "172.17.0.5"}],
                "notReadyAddresses": [{"ip": "172.17.0.6"}],
                "ports": [{"name": "pg", "port": 15432, "protocol": "TCP"}]
            }]
        }))];
        let got = services_from_k8s(&services, &endpoints);
        assert_eq!(
            got.len(),
            3,
            "the unallocated Service is left out: {got:#?}"
        );
        assert_eq!(
            got[0].target,
            DnsTarget::ClusterIp("198.19.0.10".parse().unwrap())
        );
        assert_eq!(got[0].ports[1].protocol, Protocol::Udp);
        assert_eq!(
            got[1].target,
            DnsTarget::Headless(vec![
                "172.17.0.4".parse().unwrap(),
                "172.17.0.5".parse().unwrap()
            ]),
            "not-ready addresses are left out"
        );
        assert_eq!(
            got[1].ports[0].port, 15432,
            "headless SRV uses the endpoint port"
        );
        assert_eq!(got[2].namespace, "default");
        assert_eq!(got[2].target, DnsTarget::ExternalName("example.org".into()));
    }
}
