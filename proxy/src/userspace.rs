//! userspace mode: an in-process proxy per Service port, as the old userspace
//! kube-proxy had, needing no privileges.
//!
//! Each Service port gets a listener on the configured address ([`UserspaceConfig`]):
//! by default its node port when it has one, otherwise a port the system picks (look it
//! up with [`UserspaceProxy::addr`]). TCP connections go to a ready endpoint chosen at
//! random; a failed connect is retried on the other endpoints in random order before the
//! client's connection is closed. UDP datagrams are relayed per client address through a
//! session with one endpoint chosen at random, kept while traffic flows and dropped after
//! [`UserspaceConfig::udp_idle_timeout`] (or at once when its endpoint goes away or
//! refuses). Endpoints are updated live: new connections use the new list at once,
//! connections already made stay up. SCTP is not proxied in userspace mode.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use crate::model::{Protocol, ProxyState, ServicePortName};

/// How the listening port of a Service port is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortPolicy {
    /// The node port when the Service has one, else a port the system picks.
    NodePortOrEphemeral,
    /// Always a port the system picks (the old userspace kube-proxy's way).
    Ephemeral,
    /// The Service port itself (for a bind address per Service, e.g. 127.0.0.x).
    ServicePort,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserspaceConfig {
    /// The address every listener binds.
    pub bind_ip: IpAddr,
    pub port_policy: PortPolicy,
    /// How long one connect to an endpoint may take before the next one is tried.
    pub connect_timeout: Duration,
    pub udp_idle_timeout: Duration,
}

impl Default for UserspaceConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_policy: PortPolicy::NodePortOrEphemeral,
            connect_timeout: Duration::from_secs(2),
            udp_idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Service ports that could not be opened; the others were applied.
#[derive(Debug, thiserror::Error)]
#[error("userspace proxy: {}", failures.iter().map(|(p, a, e)| format!("{p} on {a}: {e}")).collect::<Vec<_>>().join("; "))]
pub struct UserspaceError {
    pub failures: Vec<(ServicePortName, SocketAddr, std::io::Error)>,
}

type Endpoints = Arc<RwLock<Arc<Vec<SocketAddr>>>>;

struct PortProxy {
    protocol: Protocol,
    requested: SocketAddr,
    addr: SocketAddr,
    endpoints: Endpoints,
    task: JoinHandle<()>,
}

impl Drop for PortProxy {
    fn drop(&mut self) {
        // Aborting the listener task drops its JoinSet, which aborts its connections.
        self.task.abort();
    }
}

/// The userspace proxy. Call [`UserspaceProxy::apply`] with the whole state whenever it
/// changed; must be used inside a tokio runtime.
pub struct UserspaceProxy {
    config: UserspaceConfig,
    ports: Mutex<HashMap<ServicePortName, PortProxy>>,
}

fn current(endpoints: &Endpoints) -> Arc<Vec<SocketAddr>> {
    match endpoints.read() {
        Ok(g) => g.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn set(endpoints: &Endpoints, list: Vec<SocketAddr>) {
    match endpoints.write() {
        Ok(mut g) => *g = Arc::new(list),
        Err(poisoned) => *poisoned.into_inner() = Arc::new(list),
    }
}

impl UserspaceProxy {
    pub fn new(config: UserspaceConfig) -> Self {
        Self {
            config,
            ports: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServicePortName, PortProxy>> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens, updates and closes listeners to match `state`.
    pub async fn apply(&self, state: &ProxyState) -> Result<(), UserspaceError> {
        let mut wanted: Vec<(ServicePortName, Protocol, SocketAddr, Vec<SocketAddr>)> = Vec::new();
        for view in state.service_ports() {
            if view.port.protocol == Protocol::Sctp {
                warn!(port = %view.name(), "SCTP is not proxied in userspace mode");
                continue;
            }
            let port = match self.config.port_policy {
                PortPolicy::NodePortOrEphemeral => view.port.node_port.unwrap_or(0),
                PortPolicy::Ephemeral => 0,
                PortPolicy::ServicePort => view.port.port,
            };
            let eps = view.endpoints.iter().map(|e| e.socket_addr()).collect();
            wanted.push((
                view.name(),
                view.port.protocol,
                SocketAddr::new(self.config.bind_ip, port),
                eps,
            ));
        }
        // Close what is gone or changed first, so a port moving between Services is free.
        let mut to_open = Vec::new();
        {
            let mut ports = self.lock();
            let keep: HashMap<&ServicePortName, (Protocol, SocketAddr)> =
                wanted.iter().map(|(n, p, a, _)| (n, (*p, *a))).collect();
            ports.retain(|name, proxy| keep.get(name) == Some(&(proxy.protocol, proxy.requested)));
            for (name, protocol, requested, eps) in wanted {
                match ports.get(&name) {
                    Some(proxy) => set(&proxy.endpoints, eps),
                    None => to_open.push((name, protocol, requested, eps)),
                }
            }
        }
        let mut failures = Vec::new();
        for (name, protocol, requested, eps) in to_open {
            match self.open(&name, protocol, requested, eps).await {
                Ok(proxy) => {
                    debug!(port = %name, addr = %proxy.addr, "userspace proxy listening");
                    self.lock().insert(name, proxy);
                }
                Err(e) => failures.push((name, requested, e)),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(UserspaceError { failures })
        }
    }

    async fn open(
        &self,
        name: &ServicePortName,
        protocol: Protocol,
        requested: SocketAddr,
        eps: Vec<SocketAddr>,
    ) -> std::io::Result<PortProxy> {
        let endpoints: Endpoints = Arc::new(RwLock::new(Arc::new(eps)));
        let (addr, task) = match protocol {
            Protocol::Tcp => {
                let listener = TcpListener::bind(requested).await?;
                let addr = listener.local_addr()?;
                let task = tokio::spawn(serve_tcp(
                    name.clone(),
                    listener,
                    endpoints.clone(),
                    self.config.connect_timeout,
                ));
                (addr, task)
            }
            Protocol::Udp | Protocol::Sctp => {
                let socket = UdpSocket::bind(requested).await?;
                let addr = socket.local_addr()?;
                let task = tokio::spawn(serve_udp(
                    name.clone(),
                    Arc::new(socket),
                    endpoints.clone(),
                    self.config.udp_idle_timeout,
                ));
                (addr, task)
            }
        };
        Ok(PortProxy {
            protocol,
            requested,
            addr,
            endpoints,
            task,
        })
    }

    /// Where a Service port is listening.
    pub fn addr(&self, port: &ServicePortName) -> Option<SocketAddr> {
        self.lock().get(port).map(|p| p.addr)
    }

    /// Every Service port's listening address.
    pub fn addrs(&self) -> BTreeMap<ServicePortName, SocketAddr> {
        self.lock()
            .iter()
            .map(|(n, p)| (n.clone(), p.addr))
            .collect()
    }

    /// Closes every listener and connection.
    pub fn shutdown(&self) {
        self.lock().clear();
    }
}

impl Drop for UserspaceProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn shuffled(eps: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut v = eps.to_vec();
    v.shuffle(&mut rand::rng());
    v
}

async fn serve_tcp(
    name: ServicePortName,
    listener: TcpListener,
    endpoints: Endpoints,
    connect_timeout: Duration,
) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                warn!(port = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let order = shuffled(&current(&endpoints));
        let name = name.clone();
        conns.spawn(async move {
            for ep in order {
                match tokio::time::timeout(connect_timeout, TcpStream::connect(ep)).await {
                    Ok(Ok(upstream)) => {
                        let mut client = client;
                        let mut upstream = upstream;
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        return;
                    }
                    Ok(Err(e)) => debug!(port = %name, endpoint = %ep, error = %e, "connect failed; trying another endpoint"),
                    Err(_) => debug!(port = %name, endpoint = %ep, "connect timed out; trying another endpoint"),
                }
            }
            debug!(port = %name, client = %peer, "no endpoint reachable; closing the connection");
        });
    }
}

struct UdpSession {
    endpoint: SocketAddr,
    upstream: Arc<UdpSocket>,
    task: tokio::task::AbortHandle,
}

async fn udp_session(endpoint: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: SocketAddr = if endpoint.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("a valid literal address");
    let upstream = UdpSocket::bind(any).await?;
    upstream.connect(endpoint).await?;
    Ok(upstream)
}

async fn serve_udp(
    name: ServicePortName,
    socket: Arc<UdpSocket>,
    endpoints: Endpoints,
    idle: Duration,
) {
    let sessions: Arc<Mutex<HashMap<SocketAddr, UdpSession>>> =
        Arc::new(Mutex::new(HashMap::new()));
    let mut replies = JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        while replies.try_join_next().is_some() {}
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                debug!(port = %name, error = %e, "udp receive failed");
                continue;
            }
        };
        let eps = current(&endpoints);
        let existing = {
            let mut map = sessions.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&client) {
                Some(s) if eps.contains(&s.endpoint) && !s.task.is_finished() => {
                    Some(s.upstream.clone())
                }
                Some(_) => {
                    if let Some(old) = map.remove(&client) {
                        old.task.abort();
                    }
                    None
                }
                None => None,
            }
        };
        let upstream = match existing {
            Some(u) => u,
            None => {
                let mut chosen = None;
                for ep in shuffled(&eps) {
                    match udp_session(ep).await {
                        Ok(u) => {
                            chosen = Some((ep, Arc::new(u)));
                            break;
                        }
                        Err(e) => {
                            debug!(port = %name, endpoint = %ep, error = %e, "udp session failed")
                        }
                    }
                }
                let Some((ep, upstream)) = chosen else {
                    debug!(port = %name, client = %client, "no endpoint for datagram; dropped");
                    continue;
                };
                let (reply_to, back, up, map) =
                    (socket.clone(), client, upstream.clone(), sessions.clone());
                let task = replies.spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    // Relay replies until the session is idle or the endpoint refuses.
                    while let Ok(Ok(n)) = tokio::time::timeout(idle, up.recv(&mut buf)).await {
                        if reply_to.send_to(&buf[..n], back).await.is_err() {
                            break;
                        }
                    }
                    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
                    if map
                        .get(&back)
                        .is_some_and(|s| Arc::ptr_eq(&s.upstream, &up))
                    {
                        map.remove(&back);
                    }
                });
                sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    client,
                    UdpSession {
                        endpoint: ep,
                        upstream: upstream.clone(),
                        task,
                    },
                );
                upstream
            }
        };
        if let Err(e) = upstream.send(&buf[..n]).await {
            debug!(port = %name, error = %e, "udp send to endpoint failed");
        }
    }
}
