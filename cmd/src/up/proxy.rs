//! The service proxy inside `kommit up`: fed from the Services and EndpointSlices in the
//! cache, in iptables, nftables or userspace mode.
//!
//! Decisions:
//! - `auto` picks iptables when kommit runs as root, `iptables-save` answers and no other
//!   kommit owns the rules; nftables when iptables does not work but nft does; userspace
//!   otherwise, and says why.
//! - One kommit at a time owns the `KOMMIT-*` chains: an exclusive lock on
//!   [`LOCK_PATH`] (released by the kernel when the process dies, so a killed kommit never
//!   leaves it held). `--proxy-mode iptables` fails when it is taken.
//! - Rules are removed on exit (`kommit proxy cleanup` removes leftovers of a killed run;
//!   the next run's first sync also deletes stale kommit chains).
//! - Traffic to cluster IPs is masqueraded whatever its source (no cluster CIDR is
//!   configured): a Docker container reaching a Service whose endpoint sits on the same
//!   bridge then gets its replies back through the host, with or without
//!   `br_netfilter`, and so does a pod reaching itself through its Service.
//! - Node ports answer on the host's addresses and on 127.0.0.1: in iptables mode with
//!   `route_localnet=1` (the proxier sets it, as kube-proxy does); in userspace mode the
//!   proxy listens on 127.0.0.1 at each node port (other Service ports get a port the
//!   system picks; cluster IPs are not reachable in userspace mode).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::ValueEnum;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kommit_cache::{Cache, RangeRequest, WatchRequest};
use kommit_proxy::driver::{self, DriverTiming};
use kommit_proxy::iptables::{IpFamily, IptablesConfig, IptablesProxier, Runner, SystemRunner};
use kommit_proxy::nftables::{self, NftablesConfig, NftablesProxier};
use kommit_proxy::userspace::{PortPolicy, UserspaceConfig, UserspaceProxy};
use kommit_proxy::{ProxyState, ServiceEndpoints, ServiceName, convert};
use tokio::sync::watch;

/// Where the lock on the host's kommit chains lives.
pub const LOCK_PATH: &str = "/run/kommit-proxy.lock";

const SERVICES_PREFIX: &str = "/registry/services/specs/";
const SLICES_PREFIX: &str = "/registry/endpointslices/";

/// How Services are proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyMode {
    /// iptables when root, iptables works and no other kommit owns the rules; nftables
    /// when only nft works; else userspace.
    Auto,
    /// kube-proxy's iptables rules (needs root).
    Iptables,
    /// one nftables table of kommit's own with verdict maps (needs root and `nft`):
    /// faster syncs than iptables with thousands of Services.
    Nftables,
    /// an in-process TCP/UDP proxy on 127.0.0.1 (node ports only).
    Userspace,
    /// no proxy.
    None,
}

/// The running proxy.
pub struct Proxy {
    task: tokio::task::JoinHandle<()>,
    feeder: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Waits until the proxy stopped (after shutdown) and its rules are removed.
    pub async fn stopped(self) {
        let _ = self.feeder.await;
        let _ = self.task.await;
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Takes the lock on the host's kommit chains (held until the file is dropped).
pub fn take_lock() -> Result<File, String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .map_err(|e| format!("cannot open {LOCK_PATH}: {e}"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another kommit owns the proxy rules (lock {LOCK_PATH} is held)"
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {LOCK_PATH}: {e}")),
    }
}

/// Whether iptables mode can run here; the lock when it can.
fn iptables_ready(runner: &SystemRunner) -> Result<File, String> {
    if !is_root() {
        return Err("kommit is not running as root".into());
    }
    // A dump may fail while others change the tables (nft): try a few times.
    let mut tries = 0;
    while let Err(e) = runner.save(IpFamily::V4, "nat") {
        tries += 1;
        if tries == 3 {
            return Err(format!("iptables does not work here: {e}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    take_lock()
}

/// Whether nftables mode can run here; the lock when it can.
fn nftables_ready(runner: &SystemRunner) -> Result<File, String> {
    if !is_root() {
        return Err("kommit is not running as root".into());
    }
    nftables::available(runner).map_err(|e| format!("nft does not work here: {e}"))?;
    take_lock()
}

/// Starts the proxy in `mode`; `None` when the mode is `none`.
pub async fn start(
    mode: ProxyMode,
    cache: Cache,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<Proxy>> {
    let runner = SystemRunner::new();
    let (mode, lock) = match mode {
        ProxyMode::None => {
            println!("proxy: none (Services are not proxied)");
            return Ok(None);
        }
        ProxyMode::Userspace => (ProxyMode::Userspace, None),
        ProxyMode::Iptables => {
            let lock = iptables_ready(&runner)
                .map_err(anyhow::Error::msg)
                .context("--proxy-mode iptables")?;
            (ProxyMode::Iptables, Some(lock))
        }
        ProxyMode::Nftables => {
            let lock = nftables_ready(&runner)
                .map_err(anyhow::Error::msg)
                .context("--proxy-mode nftables")?;
            (ProxyMode::Nftables, Some(lock))
        }
        ProxyMode::Auto => match iptables_ready(&runner) {
            Ok(lock) => (ProxyMode::Iptables, Some(lock)),
            // A host with nft but without a working iptables.
            Err(why) if why.starts_with("iptables does not work") => {
                match nftables_ready(&runner) {
                    Ok(lock) => {
                        println!("proxy: {why}; using nftables");
                        (ProxyMode::Nftables, Some(lock))
                    }
                    Err(also) => {
                        println!("proxy: userspace mode ({why}; {also})");
                        (ProxyMode::Userspace, None)
                    }
                }
            }
            Err(why) => {
                println!("proxy: userspace mode ({why})");
                (ProxyMode::Userspace, None)
            }
        },
    };
    let (tx, rx) = watch::channel(Arc::new(ProxyState::new()));
    let feeder = tokio::spawn(feed(cache, tx, shutdown));
    let timing = DriverTiming::default();
    let task = match mode {
        ProxyMode::Iptables => {
            let config = IptablesConfig {
                cluster_cidr: None,
                ..IptablesConfig::default()
            };
            let proxier = IptablesProxier::new(runner, config).context("the iptables proxier")?;
            println!("proxy: iptables mode (chains KOMMIT-*, removed on exit)");
            tokio::spawn(async move {
                let mut proxier = driver::run_iptables(proxier, rx, timing).await;
                remove_rules("iptables rules", move || {
                    proxier
                        .cleanup()
                        .map(|r| format!("{} chains", r.chains_deleted.len()))
                })
                .await;
                drop(lock);
            })
        }
        ProxyMode::Nftables => {
            let config = NftablesConfig {
                cluster_cidr: None,
                ..NftablesConfig::default()
            };
            let proxier = NftablesProxier::new(runner, config).context("the nftables proxier")?;
            println!("proxy: nftables mode (table ip kommit, removed on exit)");
            tokio::spawn(async move {
                let mut proxier = driver::run_rules(proxier, rx, timing).await;
                remove_rules("nftables table", move || {
                    proxier.cleanup().map(|_| "table ip kommit".to_owned())
                })
                .await;
                drop(lock);
            })
        }
        _ => {
            let proxy = UserspaceProxy::new(UserspaceConfig {
                port_policy: PortPolicy::NodePortOrEphemeral,
                ..UserspaceConfig::default()
            });
            println!(
                "proxy: userspace mode on 127.0.0.1 (node ports; cluster IPs are not reachable)"
            );
            tokio::spawn(async move {
                driver::run_userspace(&proxy, rx, timing).await;
                proxy.shutdown();
            })
        }
    };
    Ok(Some(Proxy { task, feeder }))
}

/// Removes the proxy's rules on the way out, trying twice; says so when it cannot.
async fn remove_rules<E: std::fmt::Display + Send + 'static>(
    what: &'static str,
    mut cleanup: impl FnMut() -> Result<String, E> + Send + 'static,
) {
    let run = move || {
        cleanup().or_else(|e| {
            tracing::warn!(error = %e, "removing the {what} failed; trying again");
            std::thread::sleep(Duration::from_millis(200));
            cleanup()
        })
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(Ok(removed)) => tracing::info!(%removed, "proxy: {what} removed"),
        Ok(Err(e)) => {
            println!("proxy: removing the {what} failed: {e} (run `kommit proxy cleanup`)")
        }
        Err(e) => println!("proxy: cleanup thread failed: {e}"),
    }
}

/// What the cache says, converted.
struct Read {
    services: BTreeMap<ServiceName, kommit_proxy::Service>,
    endpoints: BTreeMap<ServiceName, ServiceEndpoints>,
    revision: i64,
}

async fn read(cache: &Cache) -> Result<Read, kommit_cache::Error> {
    let services = cache.range(RangeRequest::prefix(SERVICES_PREFIX)).await?;
    let slices = cache
        .range(RangeRequest::prefix(SLICES_PREFIX).with_revision(services.revision))
        .await?;
    let mut out = Read {
        services: BTreeMap::new(),
        endpoints: BTreeMap::new(),
        revision: services.revision,
    };
    for kv in &services.kvs {
        let svc: Service = match serde_json::from_slice(&kv.value) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(key = %String::from_utf8_lossy(&kv.key), error = %e, "not a Service; skipped");
                continue;
            }
        };
        match convert::service_from_k8s(&svc) {
            Ok(Some(s)) => {
                out.services.insert(s.name.clone(), s);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "Service not proxied"),
        }
    }
    let slices: Vec<EndpointSlice> = slices
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    // One bad slice must not hide the others: convert them one by one.
    for slice in &slices {
        match convert::endpoints_from_slices([slice]) {
            Ok(map) => {
                for (name, eps) in map {
                    let all = out.endpoints.entry(name).or_default();
                    for (port, list) in eps {
                        all.entry(port).or_default().extend(list);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "EndpointSlice not used"),
        }
    }
    Ok(out)
}

/// Brings `state` to `read`; true when something changed.
fn apply(state: &mut ProxyState, read: Read) -> bool {
    let before = state.clone();
    let old: BTreeSet<ServiceName> = state.services().map(|s| s.name.clone()).collect();
    for name in old.iter().filter(|n| !read.services.contains_key(*n)) {
        state.remove_service(name);
    }
    for (name, eps) in &read.endpoints {
        state.set_endpoints(name.clone(), eps.clone());
    }
    for name in old.iter().chain(read.services.keys()) {
        if !read.endpoints.contains_key(name) {
            state.remove_endpoints(name);
        }
    }
    for (_, s) in read.services {
        state.upsert_service(s);
    }
    *state != before
}

/// Publishes the proxy state on every change of Services or EndpointSlices in the cache.
async fn feed(
    cache: Cache,
    tx: watch::Sender<Arc<ProxyState>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut state = ProxyState::new();
    loop {
        let r = match read(&cache).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "proxy: reading Services failed; retrying");
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let next = r.revision + 1;
        if apply(&mut state, r) {
            tx.send_replace(Arc::new(state.clone()));
        }
        let mut w1 = cache.watch(
            WatchRequest {
                start_revision: next,
                ..WatchRequest::prefix(SERVICES_PREFIX)
            },
            0,
        );
        let mut w2 = cache.watch(
            WatchRequest {
                start_revision: next,
                ..WatchRequest::prefix(SLICES_PREFIX)
            },
            0,
        );
        // Wait for a change, then read everything again (a burst lands first).
        let ended = loop {
            let got = tokio::select! {
                _ = shutdown.changed() => return,
                b = w1.recv() => b,
                b = w2.recv() => b,
            };
            match got {
                Some(b) if b.canceled => break false,
                Some(b) if b.events.is_empty() => continue,
                Some(_) => break false,
                None => break true,
            }
        };
        if ended && *shutdown.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kommit_cache::PutRequest;

    fn service(name: &str, ip: &str) -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80, "protocol": "TCP"}]}
        })
    }

    fn slice(svc: &str, ips: &[(&str, bool)]) -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": format!("{svc}-abc"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
            "endpoints": ips.iter().map(|(ip, ready)| serde_json::json!(
                {"addresses": [ip], "conditions": {"ready": ready}})).collect::<Vec<_>>()
        })
    }

    async fn put(cache: &Cache, key: &str, v: serde_json::Value) {
        cache
            .put(PutRequest::new(
                key.to_string(),
                serde_json::to_vec(&v).unwrap(),
            ))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_feed_follows_services_and_ready_endpoints() {
        let cache = Cache::in_memory();
        put(
            &cache,
            "/registry/services/specs/default/web",
            service("web", "198.19.0.5"),
        )
        .await;
        put(
            &cache,
            "/registry/services/specs/default/none",
            service("none", "None"),
        )
        .await;
        put(
            &cache,
            "/registry/endpointslices/default/web-abc",
            slice("web", &[("172.17.0.2", true), ("172.17.0.3", false)]),
        )
        .await;
        let (tx, mut rx) = watch::channel(Arc::new(ProxyState::new()));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(feed(cache.clone(), tx, stop_rx));
        let name = ServiceName::new("default", "web");
        let wait = |rx: &mut watch::Receiver<Arc<ProxyState>>, want: usize| {
            let mut rx = rx.clone();
            let name = name.clone();
            async move {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    rx.wait_for(|s| {
                        s.service(&name).is_some()
                            && s.endpoints(&name).map_or(0, |e| e[""].len()) == want
                    }),
                )
                .await
                .expect("state within 10 s")
                .map(|s| s.clone())
                .unwrap()
            }
        };
        let s = wait(&mut rx, 1).await;
        assert_eq!(
            s.services().count(),
            1,
            "the headless Service is not proxied"
        );
        assert_eq!(
            s.endpoints(&name).unwrap()[""][0].to_string(),
            "172.17.0.2:8080"
        );
        put(
            &cache,
            "/registry/endpointslices/default/web-abc",
            slice("web", &[("172.17.0.2", true), ("172.17.0.3", true)]),
        )
        .await;
        wait(&mut rx, 2).await;
        cache
            .delete_range(kommit_cache::DeleteRangeRequest::key(
                "/registry/services/specs/default/web",
            ))
            .await
            .unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|s| s.service(&name).is_none()),
        )
        .await
        .unwrap()
        .unwrap();
        stop_tx.send_replace(true);
        task.await.unwrap();
    }
}
