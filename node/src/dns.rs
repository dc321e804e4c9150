//! A pod's resolver settings (`/etc/resolv.conf`) from its `dnsPolicy` and `dnsConfig`,
//! as the kubelet computes them.
//!
//! | dnsPolicy | resolver |
//! | --- | --- |
//! | `ClusterFirst` (default) | the cluster DNS, search `<ns>.svc.<domain> svc.<domain> <domain>`, `ndots:5`; a host-network pod (and every pod when the node has no cluster DNS) gets `Default` instead |
//! | `ClusterFirstWithHostNet` | the cluster DNS, also for host-network pods |
//! | `Default` | the node's own resolver (the runtime's default: Docker copies the host's resolv.conf) |
//! | `None` | only what `dnsConfig` says |
//!
//! `dnsConfig` adds nameservers and searches (duplicates dropped; at most 3 nameservers
//! and 32 searches, as Kubernetes allows) and sets options (a later one of the same name
//! wins). With the Docker runtime the sandbox container gets the result (Docker's `--dns`,
//! `--dns-search`, `--dns-option`) and every container of the pod shares it. The process
//! runtime runs pods on the host's network with the host's resolver and ignores it.

use k8s_openapi::api::core::v1::Pod;

/// The node's cluster DNS (kubelet's `--cluster-dns` and `--cluster-domain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    /// Nameserver addresses pods are given (port 53 is implied by resolv.conf).
    pub servers: Vec<String>,
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
}

/// What a pod's `/etc/resolv.conf` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DnsConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// `name` or `name:value` (`ndots:5`).
    pub options: Vec<String>,
}

const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The resolver settings for `pod`; `None` leaves the runtime's default (the host's).
pub fn pod_dns(pod: &Pod, cluster: Option<&ClusterDns>) -> Option<DnsConfig> {
    let spec = pod.spec.as_ref()?;
    let host_network = spec.host_network == Some(true);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster_base = |c: &ClusterDns| DnsConfig {
        nameservers: c.servers.clone(),
        searches: vec![
            format!("{namespace}.svc.{}", c.domain),
            format!("svc.{}", c.domain),
            c.domain.clone(),
        ],
        options: vec!["ndots:5".into()],
    };
    let base = match (policy, cluster) {
        ("None", _) => Some(DnsConfig::default()),
        ("ClusterFirstWithHostNet", Some(c)) => Some(cluster_base(c)),
        ("ClusterFirst", Some(c)) if !host_network => Some(cluster_base(c)),
        // Default, or a cluster policy without cluster DNS: the host's resolver.
        _ => None,
    };
    let Some(extra) = spec.dns_config.as_ref() else {
        return base;
    };
    let mut out = match base {
        Some(b) => b,
        None => host_resolv_conf(),
    };
    for n in extra.nameservers.iter().flatten() {
        if !out.nameservers.contains(n) {
            out.nameservers.push(n.clone());
        }
    }
    for s in extra.searches.iter().flatten() {
        if !out.searches.contains(s) {
            out.searches.push(s.clone());
        }
    }
    for o in extra.options.iter().flatten() {
        let Some(name) = o.name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        out.options.retain(|x| x.split(':').next() != Some(name));
        out.options.push(match &o.value {
            Some(v) => format!("{name}:{v}"),
            None => name.to_string(),
        });
    }
    out.nameservers.truncate(MAX_NAMESERVERS);
    out.searches.truncate(MAX_SEARCHES);
    Some(out)
}

/// The host's resolver settings (the base of `Default` with a `dnsConfig`).
fn host_resolv_conf() -> DnsConfig {
    parse_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
}

/// nameserver, search (and domain) and options lines of a resolv.conf.
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut out = DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => out.nameservers.extend(words.next().map(str::to_string)),
            Some("search") | Some("domain") => {
                out.searches = words.map(str::to_string).collect();
            }
            Some("options") => out.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn cluster() -> ClusterDns {
        ClusterDns {
            servers: vec!["172.17.0.1".into()],
            domain: "cluster.local".into(),
        }
    }

    #[test]
    fn cluster_first_by_default() {
        let p = pod(serde_json::json!({"containers": []}));
        assert_eq!(
            pod_dns(&p, Some(&cluster())),
            Some(DnsConfig {
                nameservers: vec!["172.17.0.1".into()],
                searches: vec![
                    "shop.svc.cluster.local".into(),
                    "svc.cluster.local".into(),
                    "cluster.local".into()
                ],
                options: vec!["ndots:5".into()],
            })
        );
        // Without a cluster DNS, or on the host's network, the host's resolver.
        assert_eq!(pod_dns(&p, None), None);
        let host = pod(serde_json::json!({"containers": [], "hostNetwork": true}));
        assert_eq!(pod_dns(&host, Some(&cluster())), None);
        let with = pod(serde_json::json!({"containers": [], "hostNetwork": true,
            "dnsPolicy": "ClusterFirstWithHostNet"}));
        assert_eq!(
            pod_dns(&with, Some(&cluster())).unwrap().nameservers,
            ["172.17.0.1"]
        );
        let default = pod(serde_json::json!({"containers": [], "dnsPolicy": "Default"}));
        assert_eq!(pod_dns(&default, Some(&cluster())), None);
    }

    #[test]
    fn none_and_dns_config() {
        let p = pod(serde_json::json!({"containers": [], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["192.0.2.1", "192.0.2.1"], "searches": ["corp.test"],
                          "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}));
        assert_eq!(
            pod_dns(&p, Some(&cluster())),
            Some(DnsConfig {
                nameservers: vec!["192.0.2.1".into()],
                searches: vec!["corp.test".into()],
                options: vec!["ndots:2".into(), "edns0".into()],
            })
        );
        // dnsConfig on ClusterFirst: added to the cluster settings; ndots overridden.
        let p = pod(serde_json::json!({"containers": [],
            "dnsConfig": {"nameservers": ["192.0.2.1", "192.0.2.2", "192.0.2.3"],
                          "options": [{"name": "ndots", "value": "1"}]}}));
        let got = pod_dns(&p, Some(&cluster())).unwrap();
        assert_eq!(got.nameservers, ["172.17.0.1", "192.0.2.1", "192.0.2.2"]);
        assert_eq!(got.searches.len(), 3);
        assert_eq!(got.options, ["ndots:1"]);
    }

    #[test]
    fn resolv_conf() {
        let c = parse_resolv_conf(
            "# x\nnameserver 127.0.0.53\nsearch a.test b.test\noptions edns0 trust-ad\n",
        );
        assert_eq!(c.nameservers, ["127.0.0.53"]);
        assert_eq!(c.searches, ["a.test", "b.test"]);
        assert_eq!(c.options, ["edns0", "trust-ad"]);
    }
}
