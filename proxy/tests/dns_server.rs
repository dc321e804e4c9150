//! The cluster DNS server on loopback: real UDP and TCP queries, a second server as the
//! upstream resolver, zone changes while running, truncation, bad input.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use kommit_proxy::Protocol;
use kommit_proxy::dns::{ClusterZone, DnsPort, DnsServer, DnsService, DnsTarget, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;

fn service(ns: &str, name: &str, target: DnsTarget) -> DnsService {
    DnsService {
        namespace: ns.into(),
        name: name.into(),
        target,
        ports: vec![DnsPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
        }],
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn query(name: &str, t: RecordType, edns: bool) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

async fn udp(server: SocketAddr, q: &Message) -> Message {
    let raw = udp_raw(server, &q.to_vec().unwrap())
        .await
        .expect("an answer");
    let answer = Message::from_vec(&raw).unwrap();
    assert_eq!(answer.metadata.id, q.metadata.id);
    answer
}

async fn udp_raw(server: SocketAddr, raw: &[u8]) -> Option<Vec<u8>> {
    udp_raw_within(server, raw, Duration::from_secs(10)).await
}

async fn udp_raw_within(server: SocketAddr, raw: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(raw, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(buf[..n].to_vec())
}

async fn tcp(server: SocketAddr, queries: &[Message]) -> Vec<Message> {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let mut out = Vec::new();
    // Several queries on one connection, as resolvers do.
    for q in queries {
        let raw = q.to_vec().unwrap();
        stream
            .write_all(&(raw.len() as u16).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&raw).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read_u16())
            .await
            .expect("an answer within 10 s")
            .unwrap();
        let mut buf = vec![0u8; n as usize];
        stream.read_exact(&mut buf).await.unwrap();
        let m = Message::from_vec(&buf).unwrap();
        assert_eq!(m.metadata.id, q.metadata.id);
        out.push(m);
    }
    out
}

/// The answer section as `name TYPE data` lines.
fn answers(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect()
}

struct Cluster {
    server: DnsServer,
    zone: watch::Sender<Arc<ClusterZone>>,
}

async fn start(services: Vec<DnsService>, domain: &str, upstream: Upstream) -> Cluster {
    let zone = ClusterZone::with_services(domain, services, 1).unwrap();
    let (tx, rx) = watch::channel(Arc::new(zone));
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), rx, upstream)
        .await
        .unwrap();
    Cluster { server, zone: tx }
}

#[tokio::test]
async fn answers_cluster_names_over_udp_and_tcp_and_follows_changes() {
    let c = start(
        vec![service(
            "shop",
            "web",
            DnsTarget::ClusterIp(ip("198.19.0.10")),
        )],
        "cluster.local",
        Upstream::none(),
    )
    .await;
    let addr = c.server.local_addr();
    let q = query("web.shop.svc.cluster.local.", RecordType::A, false);
    let a = udp(addr, &q).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(a.metadata.authoritative);
    assert_eq!(answers(&a), ["web.shop.svc.cluster.local. A 198.19.0.10"]);
    assert_eq!(a.answers[0].ttl, 5);

    let t = tcp(
        addr,
        &[
            q.clone(),
            query("nope.shop.svc.cluster.local.", RecordType::A, true),
        ],
    )
    .await;
    assert_eq!(
        answers(&t[0]),
        ["web.shop.svc.cluster.local. A 198.19.0.10"]
    );
    assert_eq!(t[1].metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(t[1].authorities.len(), 1, "the SOA for negative caching");
    assert_eq!(t[1].authorities[0].record_type(), RecordType::SOA);
    assert!(t[1].edns.is_some(), "EDNS answered with EDNS");
    // The reverse name of the cluster IP answers PTR (`dig -x 198.19.0.10`).
    let ptr = udp(
        addr,
        &query("10.0.19.198.in-addr.arpa.", RecordType::PTR, false),
    )
    .await;
    assert_eq!(ptr.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        answers(&ptr),
        ["10.0.19.198.in-addr.arpa. PTR web.shop.svc.cluster.local."]
    );

    // A new Service and a changed address show on the next query.
    let zone = ClusterZone::with_services(
        "cluster.local",
        [
            service("shop", "web", DnsTarget::ClusterIp(ip("198.19.0.20"))),
            service(
                "shop",
                "db",
                DnsTarget::Headless(vec![ip("172.17.0.4"), ip("172.17.0.3")]),
            ),
        ],
        2,
    )
    .unwrap();
    c.zone.send_replace(Arc::new(zone));
    assert_eq!(
        answers(&udp(addr, &q).await),
        ["web.shop.svc.cluster.local. A 198.19.0.20"]
    );
    assert_eq!(
        answers(
            &udp(
                addr,
                &query("db.shop.svc.cluster.local.", RecordType::A, false)
            )
            .await
        ),
        [
            "db.shop.svc.cluster.local. A 172.17.0.3",
            "db.shop.svc.cluster.local. A 172.17.0.4"
        ]
    );
    // No upstream: other names are refused, not left unanswered.
    let other = udp(addr, &query("example.org.", RecordType::A, false)).await;
    assert_eq!(other.metadata.response_code, ResponseCode::Refused);
    assert!(!other.metadata.recursion_available);
}

#[tokio::test]
async fn forwards_other_names_and_chases_external_names() {
    // The "upstream" is another server with its own zone.
    let up = start(
        vec![service(
            "corp",
            "www",
            DnsTarget::ClusterIp(ip("192.0.2.7")),
        )],
        "example.test",
        Upstream::none(),
    )
    .await;
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let mut upstream = Upstream::servers(vec![dead_addr, up.server.local_addr()]);
    upstream.timeout = Duration::from_millis(300);
    let c = start(
        vec![service(
            "shop",
            "partner",
            DnsTarget::ExternalName("www.corp.svc.example.test".into()),
        )],
        "cluster.local",
        upstream,
    )
    .await;
    let addr = c.server.local_addr();
    let q = query("www.corp.svc.example.test.", RecordType::A, false);
    // The first upstream never answers; the second does.
    let a = udp(addr, &q).await;
    assert_eq!(answers(&a), ["www.corp.svc.example.test. A 192.0.2.7"]);
    let t = tcp(addr, std::slice::from_ref(&q)).await;
    assert_eq!(answers(&t[0]), ["www.corp.svc.example.test. A 192.0.2.7"]);
    let nx = udp(
        addr,
        &query("nope.corp.svc.example.test.", RecordType::A, false),
    )
    .await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);

    let ext = udp(
        addr,
        &query("partner.shop.svc.cluster.local.", RecordType::A, false),
    )
    .await;
    assert_eq!(
        answers(&ext),
        [
            "partner.shop.svc.cluster.local. CNAME www.corp.svc.example.test.",
            "www.corp.svc.example.test. A 192.0.2.7"
        ]
    );
    assert!(ext.metadata.recursion_available);

    // Every upstream down: SERVFAIL.
    let mut down = Upstream::servers(vec![dead_addr]);
    down.timeout = Duration::from_millis(200);
    let c2 = start(vec![], "cluster.local", down).await;
    let f = udp(c2.server.local_addr(), &q).await;
    assert_eq!(f.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let ips: Vec<IpAddr> = (1..=100).map(|i| ip(&format!("172.17.1.{i}"))).collect();
    let c = start(
        vec![service("shop", "big", DnsTarget::Headless(ips))],
        "cluster.local",
        Upstream::none(),
    )
    .await;
    let addr = c.server.local_addr();
    let q = query("big.shop.svc.cluster.local.", RecordType::A, false);
    let a = udp(addr, &q).await;
    assert!(
        a.metadata.truncation,
        "100 A records do not fit in 512 bytes"
    );
    assert!(a.answers.is_empty());
    let with_edns = udp(
        addr,
        &query("big.shop.svc.cluster.local.", RecordType::A, true),
    )
    .await;
    assert!(with_edns.metadata.truncation, "nor in 1232");
    let t = tcp(addr, &[q]).await;
    assert!(!t[0].metadata.truncation);
    assert_eq!(t[0].answers.len(), 100);
    assert!(t[0].answers.iter().all(|r| matches!(r.data, RData::A(_))));
}

#[tokio::test]
async fn bad_input_gets_an_error_or_nothing_and_the_server_keeps_answering() {
    let c = start(
        vec![service(
            "shop",
            "web",
            DnsTarget::ClusterIp(ip("198.19.0.10")),
        )],
        "cluster.local",
        Upstream::none(),
    )
    .await;
    let addr = c.server.local_addr();
    // A header with one question and then nothing.
    let cut = [
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 3, b'w',
    ];
    let raw = udp_raw(addr, &cut).await.expect("FORMERR");
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Too short for a header: dropped (no answer within a second, while a good query
    // sent after it is answered).
    assert!(
        udp_raw_within(addr, &[1, 2, 3], Duration::from_secs(1))
            .await
            .is_none()
    );
    // Two questions: FORMERR.
    let mut two = query("web.shop.svc.cluster.local.", RecordType::A, false);
    two.add_query(Query::query(
        Name::from_ascii("web.shop.svc.cluster.local.").unwrap(),
        RecordType::AAAA,
    ));
    assert_eq!(
        udp(addr, &two).await.metadata.response_code,
        ResponseCode::FormErr
    );
    // A TCP client that announces 300 bytes and sends 3 is dropped, the server goes on.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[1, 44, 1, 2, 3]).await.unwrap();
    drop(s);
    let ok = udp(
        addr,
        &query("web.shop.svc.cluster.local.", RecordType::A, false),
    )
    .await;
    assert_eq!(answers(&ok), ["web.shop.svc.cluster.local. A 198.19.0.10"]);
}
