//! userspace mode end to end on loopback: TCP spread, retry past a dead endpoint, live
//! endpoint updates, node ports, UDP. Run as root (as on CI), the scenario is also
//! re-run as the unprivileged user `nobody` to show the proxy needs no privileges.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kommit_proxy::userspace::{PortPolicy, UserspaceConfig, UserspaceProxy};
use kommit_proxy::{
    Endpoint, Protocol, ProxyState, Service, ServiceEndpoints, ServiceName, ServicePort,
    ServicePortName, ServiceType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

struct Backend {
    name: String,
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

async fn tcp_backend(name: &str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let (h, n) = (hits.clone(), name.to_owned());
    tokio::spawn(async move {
        loop {
            let (mut c, _) = listener.accept().await.unwrap();
            h.fetch_add(1, Ordering::SeqCst);
            let n = n.clone();
            tokio::spawn(async move {
                let _ = c.write_all(n.as_bytes()).await;
            });
        }
    });
    Backend {
        name: name.to_owned(),
        addr,
        hits,
    }
}

async fn udp_backend(name: &str) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let name = name.to_owned();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            let reply = format!("{name}:{}", String::from_utf8_lossy(&buf[..n]));
            socket.send_to(reply.as_bytes(), from).await.unwrap();
        }
    });
    addr
}

/// A loopback port with nothing listening (connects are refused).
async fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

async fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await??;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await??;
    Ok(out)
}

fn eps(port: &str, addrs: &[SocketAddr]) -> ServiceEndpoints {
    let mut m = ServiceEndpoints::new();
    m.insert(
        port.to_owned(),
        addrs
            .iter()
            .map(|a| Endpoint::new(a.ip(), a.port()))
            .collect(),
    );
    m
}

async fn scenario() {
    let b: Vec<Backend> = vec![
        tcp_backend("b1").await,
        tcp_backend("b2").await,
        tcp_backend("b3").await,
    ];
    let dead = dead_port().await;
    let free_node_port = dead_port().await.port();
    let u1 = udp_backend("u1").await;
    let u2 = udp_backend("u2").await;

    let web = ServiceName::new("default", "web");
    let mut state = ProxyState::new();
    state.upsert_service(Service {
        name: web.clone(),
        cluster_ip: "10.96.0.10".parse().unwrap(),
        service_type: ServiceType::NodePort,
        ports: vec![
            ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: Some(free_node_port),
            },
            ServicePort {
                name: "dns".into(),
                protocol: Protocol::Udp,
                port: 53,
                node_port: None,
            },
        ],
        external_ips: Vec::new(),
    });
    let mut all = eps("http", &[b[0].addr, b[1].addr, b[2].addr, dead]);
    all.extend(eps("dns", &[u1, u2]));
    state.set_endpoints(web.clone(), all);

    let proxy = UserspaceProxy::new(UserspaceConfig {
        port_policy: PortPolicy::NodePortOrEphemeral,
        ..Default::default()
    });
    proxy.apply(&state).await.unwrap();
    let http = ServicePortName::new("default", "web", "http");
    let addr = proxy.addr(&http).unwrap();
    assert_eq!(
        addr,
        SocketAddr::from(([127, 0, 0, 1], free_node_port)),
        "a NodePort Service listens on its node port"
    );

    // 90 connections: none fails although one endpoint refuses (retried elsewhere), and
    // each live endpoint gets a fair share.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..90 {
        *counts.entry(get(addr).await.unwrap()).or_default() += 1;
    }
    for backend in &b {
        let n = counts.get(&backend.name).copied().unwrap_or(0);
        assert!(n >= 15, "{} got {n} of 90: {counts:?}", backend.name);
    }
    assert_eq!(counts.values().sum::<usize>(), 90);

    // b2 is no longer ready: same port, and nothing reaches b2 any more.
    let mut all = eps("http", &[b[0].addr, b[2].addr]);
    all.extend(eps("dns", &[u1, u2]));
    state.set_endpoints(web.clone(), all);
    proxy.apply(&state).await.unwrap();
    assert_eq!(proxy.addr(&http), Some(addr));
    let before = b[1].hits.load(Ordering::SeqCst);
    for _ in 0..40 {
        assert_ne!(get(addr).await.unwrap(), "b2");
    }
    assert_eq!(b[1].hits.load(Ordering::SeqCst), before);

    // UDP: each client is relayed to one endpoint and gets its answers back; over 20
    // clients both endpoints are used.
    let dns = proxy
        .addr(&ServicePortName::new("default", "web", "dns"))
        .unwrap();
    let mut seen = HashMap::new();
    for i in 0..20 {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 1500];
        let mut first = None;
        for q in 0..2 {
            client
                .send_to(format!("q{i}-{q}").as_bytes(), dns)
                .await
                .unwrap();
            let (n, from) =
                tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(from, dns, "replies come from the proxy's address");
            let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (backend, echoed) = reply.split_once(':').unwrap();
            assert_eq!(echoed, format!("q{i}-{q}"));
            // A session sticks to its endpoint.
            assert_eq!(*first.get_or_insert(backend.to_owned()), backend);
        }
        *seen.entry(first.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // No endpoints: the connection is accepted and closed at once.
    state.remove_endpoints(&web);
    proxy.apply(&state).await.unwrap();
    assert_eq!(get(addr).await.unwrap(), "");

    // The Service goes away: its port is closed.
    state.remove_service(&web);
    proxy.apply(&state).await.unwrap();
    assert!(proxy.addrs().is_empty());
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn userspace_proxy_end_to_end() {
    scenario().await;
}

#[test]
fn userspace_proxy_needs_no_privileges() {
    let uid = String::from_utf8(
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    if uid.trim() != "0" {
        // Already unprivileged: the end-to-end test above is the proof.
        return tokio::runtime::Runtime::new().unwrap().block_on(scenario());
    }
    // As root: run the scenario again in this binary as the user nobody, with no groups
    // and no capabilities.
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(&exe)
        .args(["--exact", "userspace_proxy_end_to_end", "--test-threads=1"])
        .output()
        .expect("setpriv (util-linux) runs the test as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "as nobody: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
