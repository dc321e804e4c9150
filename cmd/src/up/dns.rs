//! The cluster DNS inside `kommit up`: a [`DnsServer`] fed from the Services (and, for
//! headless Services, the Endpoints) in the cache, and the node agent's resolver settings
//! for pods.
//!
//! Decisions:
//! - Where it listens (`--dns-listen auto`): with Docker, on the bridge's gateway address
//!   (172.17.0.1 on a default engine) at port 53, where every pod container reaches the
//!   host and where resolv.conf's fixed port 53 is needed; pods with `dnsPolicy:
//!   ClusterFirst` get it as their only nameserver, with the search list
//!   `<ns>.svc.<domain> svc.<domain> <domain>` and `ndots:5`. Port 53 needs root (or
//!   CAP_NET_BIND_SERVICE); when it cannot be had, kommit says so and pods keep the
//!   host's resolver.
//! - With the process runtime pods share the host's network and its `/etc/resolv.conf`
//!   (kommit does not rewrite the host's resolver): the DNS listens on a free loopback
//!   port, printed, for `dig @127.0.0.1 -p PORT web.shop.svc.cluster.local`, and Service
//!   names do not resolve inside the pods.
//! - `--dns-listen IP[:PORT]` listens there (port 53 by default); pods are pointed at it
//!   only when the port is 53 and the runtime is Docker. `off` runs no DNS.
//! - Other names go to the host's resolvers from `/etc/resolv.conf` (`--dns-upstream
//!   system`), to the given server, or nowhere (`none`: REFUSED).
//! - Sources: the allocated Services at `/registry/services/specs/` (what the services
//!   controller writes; a Service without a cluster IP yet is not answered) and core/v1
//!   Endpoints at `/registry/services/endpoints/`; the zone is rebuilt on every change.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kommit_cache::{Cache, RangeRequest, WatchRequest};
use kommit_node::dns::ClusterDns;
use kommit_node::runtime::Runtime;
use kommit_proxy::dns::{ClusterZone, DnsServer, Upstream, convert};
use tokio::sync::watch;

const SERVICES_PREFIX: &str = "/registry/services/specs/";
const ENDPOINTS_PREFIX: &str = "/registry/services/endpoints/";

/// `--dns-listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsListen {
    Auto,
    Off,
    At(SocketAddr),
}

impl FromStr for DnsListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DnsListen::Auto),
            "off" => Ok(DnsListen::Off),
            _ => parse_addr(s).map(DnsListen::At),
        }
    }
}

/// `--dns-upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsUpstream {
    System,
    None,
    At(SocketAddr),
}

impl FromStr for DnsUpstream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "system" => Ok(DnsUpstream::System),
            "none" => Ok(DnsUpstream::None),
            _ => parse_addr(s).map(DnsUpstream::At),
        }
    }
}

/// `IP` (port 53) or `IP:PORT` (`[v6]:PORT`).
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("`{s}`: expected auto, off, none, system, IP or IP:PORT"))
}

/// The cluster DNS options of `kommit up`.
#[derive(Debug, Clone, clap::Args)]
pub struct DnsArgs {
    /// Where the cluster DNS listens: auto (Docker: the bridge's gateway, port 53;
    /// processes: a free loopback port), off, or IP[:PORT].
    #[arg(long, value_name = "auto|off|IP[:PORT]", default_value = "auto")]
    dns_listen: DnsListen,
    /// The cluster domain Service names live under (`web.shop.svc.<domain>`).
    #[arg(long, value_name = "DOMAIN", default_value = kommit_proxy::dns::DEFAULT_CLUSTER_DOMAIN)]
    cluster_domain: String,
    /// Where names outside the cluster go: the host's resolvers from /etc/resolv.conf,
    /// none (refused), or IP[:PORT].
    #[arg(long, value_name = "system|none|IP[:PORT]", default_value = "system")]
    dns_upstream: DnsUpstream,
}

/// The running cluster DNS.
pub struct ClusterDnsHandle {
    server: DnsServer,
    feeder: tokio::task::JoinHandle<()>,
    /// What the node agent gives pods; `None` when pods cannot reach the DNS.
    pub for_pods: Option<ClusterDns>,
}

impl ClusterDnsHandle {
    /// Waits for the feeder (it ends on shutdown) and stops the server.
    pub async fn stopped(self) {
        let _ = self.feeder.await;
        self.server.shutdown();
    }
}

/// Starts the cluster DNS per `args`; `None` with `--dns-listen off`.
pub async fn start(
    args: &DnsArgs,
    runtime: &dyn Runtime,
    cache: Cache,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<ClusterDnsHandle>> {
    // Checked before anything listens: a bad domain is a usage error.
    let empty = ClusterZone::new(&args.cluster_domain).context("--cluster-domain")?;
    let gateway = match runtime.pod_gateway().await {
        Ok(g) => g,
        Err(e) => {
            println!("dns: cannot find the pods' gateway ({e})");
            None
        }
    };
    let (zone_tx, zone_rx) = watch::channel(Arc::new(empty));
    let (listen, explicit) = match &args.dns_listen {
        DnsListen::Off => {
            println!("dns: off (pods keep the host's resolver)");
            return Ok(None);
        }
        DnsListen::At(a) => (*a, true),
        DnsListen::Auto => match gateway {
            Some(g) => (SocketAddr::new(g, 53), false),
            None => (SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0), false),
        },
    };
    let upstream = |exclude: &[SocketAddr]| -> anyhow::Result<Upstream> {
        Ok(match &args.dns_upstream {
            DnsUpstream::None => Upstream::none(),
            DnsUpstream::At(a) => Upstream::servers(vec![*a]),
            DnsUpstream::System => Upstream::from_resolv_conf(
                Path::new("/etc/resolv.conf"),
                exclude,
            )
            .unwrap_or_else(|e| {
                println!("dns: cannot read /etc/resolv.conf ({e}); other names are refused");
                Upstream::none()
            }),
        })
    };
    let server = match DnsServer::bind(listen, zone_rx.clone(), upstream(&[listen])?).await {
        Ok(s) => s,
        Err(e) if explicit => {
            return Err(e).with_context(|| format!("--dns-listen {listen}"));
        }
        Err(e) => {
            let fallback = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0);
            println!(
                "dns: cannot listen on {listen} ({e}); pods keep the host's resolver, the cluster DNS answers on loopback only"
            );
            DnsServer::bind(fallback, zone_rx.clone(), upstream(&[])?)
                .await
                .context("listening for DNS on loopback")?
        }
    };
    let addr = server.local_addr();
    let reachable = addr.port() == 53 && !addr.ip().is_loopback() && gateway.is_some();
    let for_pods = reachable.then(|| ClusterDns {
        servers: vec![addr.ip().to_string()],
        domain: args.cluster_domain.trim_end_matches('.').to_string(),
    });
    match &for_pods {
        Some(_) => println!(
            "dns: {addr} (UDP and TCP) for *.svc.{}; pods with dnsPolicy ClusterFirst use it",
            args.cluster_domain
        ),
        None => println!(
            "dns: {addr} (UDP and TCP) for *.svc.{}; pods keep the host's resolver",
            args.cluster_domain
        ),
    }
    let domain = args.cluster_domain.clone();
    let feeder = tokio::spawn(feed(cache, domain, zone_tx, shutdown));
    Ok(Some(ClusterDnsHandle {
        server,
        feeder,
        for_pods,
    }))
}

async fn read(cache: &Cache, domain: &str) -> anyhow::Result<(ClusterZone, i64)> {
    let services = cache.range(RangeRequest::prefix(SERVICES_PREFIX)).await?;
    let endpoints = cache
        .range(RangeRequest::prefix(ENDPOINTS_PREFIX).with_revision(services.revision))
        .await?;
    let s: Vec<Service> = parse_all(&services.kvs, "a Service");
    let e: Vec<Endpoints> = parse_all(&endpoints.kvs, "an Endpoints");
    let serial = u32::try_from(services.revision.max(0) % i64::from(u32::MAX)).unwrap_or(0);
    let zone = ClusterZone::with_services(domain, convert::services_from_k8s(&s, &e), serial)?;
    Ok((zone, services.revision))
}

fn parse_all<T: k8s_openapi::serde::de::DeserializeOwned>(
    kvs: &[kommit_cache::KeyValue],
    what: &str,
) -> Vec<T> {
    kvs.iter()
        .filter_map(|kv| match serde_json::from_slice(&kv.value) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(key = %String::from_utf8_lossy(&kv.key), error = %e, "dns: not {what}; skipped");
                None
            }
        })
        .collect()
}

/// Publishes a new zone on every change of Services or Endpoints in the cache.
async fn feed(
    cache: Cache,
    domain: String,
    tx: watch::Sender<Arc<ClusterZone>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (zone, revision) = match read(&cache, &domain).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "dns: reading Services failed; retrying");
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        tracing::debug!(services = zone.len(), revision, "dns: zone updated");
        tx.send_replace(Arc::new(zone));
        let watch = |prefix: &'static str| {
            cache.watch(
                WatchRequest {
                    start_revision: revision + 1,
                    ..WatchRequest::prefix(prefix)
                },
                0,
            )
        };
        let (mut w1, mut w2) = (watch(SERVICES_PREFIX), watch(ENDPOINTS_PREFIX));
        loop {
            let got = tokio::select! {
                _ = shutdown.changed() => return,
                b = w1.recv() => b,
                b = w2.recv() => b,
            };
            match got {
                Some(b) if !b.canceled && b.events.is_empty() => continue,
                Some(_) => break,
                None if *shutdown.borrow() => return,
                None => break,
            }
        }
        // Let a burst of writes land before reading again.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hickory_proto::rr::{Name, RecordType};
    use kommit_cache::PutRequest;
    use kommit_proxy::dns::Resolution;

    #[test]
    fn flags_parse() {
        assert_eq!("auto".parse::<DnsListen>().unwrap(), DnsListen::Auto);
        assert_eq!("off".parse::<DnsListen>().unwrap(), DnsListen::Off);
        assert_eq!(
            "172.17.0.1".parse::<DnsListen>().unwrap(),
            DnsListen::At("172.17.0.1:53".parse().unwrap())
        );
        assert_eq!(
            "127.0.0.1:5353".parse::<DnsUpstream>().unwrap(),
            DnsUpstream::At("127.0.0.1:5353".parse().unwrap())
        );
        assert!("nowhere".parse::<DnsUpstream>().is_err());
    }

    #[tokio::test]
    async fn the_zone_follows_services_and_endpoints_in_the_cache() {
        let cache = Cache::in_memory();
        let put = |key: &str, v: serde_json::Value| {
            let cache = cache.clone();
            let key = key.to_string();
            async move {
                cache
                    .put(PutRequest::new(key, serde_json::to_vec(&v).unwrap()))
                    .await
                    .unwrap();
            }
        };
        put(
            "/registry/services/specs/shop/web",
            serde_json::json!({"metadata": {"name": "web", "namespace": "shop"},
                "spec": {"clusterIP": "198.19.0.5", "ports": [{"port": 80}]}}),
        )
        .await;
        let (tx, mut rx) = watch::channel(Arc::new(ClusterZone::new("cluster.local").unwrap()));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(feed(cache.clone(), "cluster.local".into(), tx, stop_rx));
        let ask = |z: &ClusterZone, name: &str| {
            z.resolve(&Name::from_ascii(name).unwrap(), RecordType::A)
        };
        let wait = |rx: &mut watch::Receiver<Arc<ClusterZone>>, name: &'static str, n: usize| {
            let mut rx = rx.clone();
            async move {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    rx.wait_for(|z| {
                        matches!(z.resolve(&Name::from_ascii(name).unwrap(), RecordType::A),
                            Resolution::Found { ref answers, .. } if answers.len() == n)
                    }),
                )
                .await
                .expect("the zone within 10 s")
                .unwrap()
                .clone()
            }
        };
        let z = wait(&mut rx, "web.shop.svc.cluster.local.", 1).await;
        assert_eq!(ask(&z, "db.shop.svc.cluster.local."), Resolution::NxDomain);
        put(
            "/registry/services/specs/shop/db",
            serde_json::json!({"metadata": {"name": "db", "namespace": "shop"},
                "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}}),
        )
        .await;
        put(
            "/registry/services/endpoints/shop/db",
            serde_json::json!({"metadata": {"name": "db", "namespace": "shop"},
                "subsets": [{"addresses": [{"ip": "172.17.0.7"}, {"ip": "172.17.0.8"}],
                             "ports": [{"port": 5432}]}]}),
        )
        .await;
        wait(&mut rx, "db.shop.svc.cluster.local.", 2).await;
        cache
            .delete_range(kommit_cache::DeleteRangeRequest::key(
                "/registry/services/specs/shop/web",
            ))
            .await
            .unwrap();
        let z = tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|z| z.service("shop", "web").is_none()),
        )
        .await
        .unwrap()
        .unwrap()
        .clone();
        assert_eq!(ask(&z, "web.shop.svc.cluster.local."), Resolution::NxDomain);
        stop_tx.send_replace(true);
        task.await.unwrap();
    }
}
