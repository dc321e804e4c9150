//! The DNS server: UDP and TCP on one address, answering from a [`ClusterZone`] that
//! can change at any time, forwarding the rest to an [`Upstream`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::upstream::Upstream;
use super::zone::{ClusterZone, Resolution};

/// Largest UDP answer to a client that sent no EDNS (RFC 1035).
const PLAIN_UDP_LIMIT: usize = 512;
/// The UDP size kommit offers in its own EDNS (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;
/// Queries answered at once; more wait (UDP) or are not read yet (TCP).
const MAX_IN_FLIGHT: usize = 512;
/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// A running DNS server.
pub struct DnsServer {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Listens on `listen` (UDP and TCP; port 0 picks one free for both) and answers
    /// from the zone `zone` holds at the time of each query.
    pub async fn bind(
        listen: SocketAddr,
        zone: watch::Receiver<Arc<ClusterZone>>,
        upstream: Upstream,
    ) -> io::Result<DnsServer> {
        let (udp, tcp) = bind_both(listen).await?;
        let addr = udp.local_addr()?;
        let handler = Arc::new(Handler { zone, upstream });
        let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let udp_task = tokio::spawn(serve_udp(Arc::new(udp), handler.clone(), limit.clone()));
        let tcp_task = tokio::spawn(serve_tcp(tcp, handler, limit));
        tracing::info!(%addr, "cluster DNS listening (UDP and TCP)");
        Ok(DnsServer {
            addr,
            tasks: vec![udp_task, tcp_task],
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening (queries being answered are dropped).
    pub fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn bind_both(listen: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    if listen.port() != 0 {
        let udp = UdpSocket::bind(listen).await?;
        let tcp = TcpListener::bind(listen).await?;
        return Ok((udp, tcp));
    }
    // The port the system gives UDP may be taken for TCP: try a few.
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(listen).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port for UDP and TCP")))
}

async fn serve_udp(socket: Arc<UdpSocket>, handler: Arc<Handler>, limit: Arc<Semaphore>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems: keep going.
                tracing::debug!(error = %e, "DNS UDP receive failed");
                continue;
            }
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let query = buf[..n].to_vec();
        let (socket, handler) = (socket.clone(), handler.clone());
        tokio::spawn(async move {
            if let Some(answer) = handler.answer(&query, false).await
                && let Err(e) = socket.send_to(&answer, peer).await
            {
                tracing::debug!(%peer, error = %e, "DNS UDP send failed");
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(listener: TcpListener, handler: Arc<Handler>, limit: Arc<Semaphore>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (handler, limit) = (handler.clone(), limit.clone());
        tokio::spawn(async move {
            if let Err(e) = tcp_connection(stream, &handler, &limit).await {
                tracing::debug!(%peer, error = %e, "DNS TCP connection ended");
            }
        });
    }
}

async fn tcp_connection(
    mut stream: TcpStream,
    handler: &Handler,
    limit: &Semaphore,
) -> io::Result<()> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let mut query = vec![0u8; usize::from(len)];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "query cut short"))??;
        let permit = limit
            .acquire()
            .await
            .map_err(|_| io::Error::other("server stopping"))?;
        let answer = handler.answer(&query, true).await;
        drop(permit);
        let Some(answer) = answer else { return Ok(()) };
        let n = u16::try_from(answer.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "answer too long"))?;
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&answer);
        stream.write_all(&framed).await?;
    }
}

struct Handler {
    zone: watch::Receiver<Arc<ClusterZone>>,
    upstream: Upstream,
}

/// A bare error answer when the query could not even be parsed: its id, FORMERR.
fn format_error(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None; // too short to have a header, or itself an answer: drop it
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

impl Handler {
    /// The wire answer to a wire query; `None` when it is to be dropped.
    async fn answer(&self, raw: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let request = match Message::from_vec(raw) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable DNS query");
                return format_error(raw);
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = !self.upstream.is_empty();
        response.add_queries(request.queries.iter().cloned());
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            response.set_edns(edns);
        }
        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return self.encode(response, &request, tcp);
        }
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return self.encode(response, &request, tcp);
        };
        let zone = self.zone.borrow().clone();
        let resolution = zone.resolve(query.name(), query.query_type());
        if resolution != Resolution::NotOurs && query.query_class() != DNSClass::IN {
            response.metadata.response_code = ResponseCode::Refused;
            return self.encode(response, &request, tcp);
        }
        match resolution {
            Resolution::NotOurs => {
                if self.upstream.is_empty() {
                    response.metadata.response_code = ResponseCode::Refused;
                    return self.encode(response, &request, tcp);
                }
                match self.upstream.forward(raw, tcp).await {
                    Ok(answer) => return Some(answer),
                    Err(e) => {
                        tracing::debug!(name = %query.name(), error = %e, "forwarding failed");
                        response.metadata.response_code = ResponseCode::ServFail;
                    }
                }
            }
            Resolution::NxDomain => {
                response.metadata.authoritative = true;
                response.metadata.response_code = ResponseCode::NXDomain;
                response.add_authority(zone.soa());
            }
            Resolution::Found {
                answers,
                additionals,
            } => {
                response.metadata.authoritative = true;
                let cname = answers.iter().find_map(|r| match &r.data {
                    RData::CNAME(c) => Some(c.0.clone()),
                    _ => None,
                });
                if answers.is_empty() {
                    response.add_authority(zone.soa());
                }
                response.add_answers(answers);
                response.add_additionals(additionals);
                if let Some(target) = cname
                    && matches!(query.query_type(), RecordType::A | RecordType::AAAA)
                {
                    response.add_answers(self.chase(&zone, target, query.query_type()).await);
                }
            }
        }
        self.encode(response, &request, tcp)
    }

    /// The addresses of a CNAME's target (an ExternalName Service), so that clients that
    /// do not follow CNAMEs themselves get them too.
    async fn chase(
        &self,
        zone: &ClusterZone,
        target: hickory_proto::rr::Name,
        qtype: RecordType,
    ) -> Vec<Record> {
        match zone.resolve(&target, qtype) {
            Resolution::Found { answers, .. } => return answers,
            Resolution::NxDomain => return Vec::new(),
            Resolution::NotOurs if self.upstream.is_empty() => return Vec::new(),
            Resolution::NotOurs => {}
        }
        let mut q = Message::query();
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(target, qtype));
        let Ok(raw) = q.to_vec() else {
            return Vec::new();
        };
        match self.upstream.forward(&raw, false).await {
            Ok(answer) => Message::from_vec(&answer)
                .map(|m| m.answers)
                .unwrap_or_default(),
            Err(e) => {
                tracing::debug!(error = %e, "resolving an ExternalName target failed");
                Vec::new()
            }
        }
    }

    fn encode(&self, response: Message, request: &Message, tcp: bool) -> Option<Vec<u8>> {
        let bytes = match response.to_vec() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a DNS answer");
                return Message::error_msg(
                    request.metadata.id,
                    request.metadata.op_code,
                    ResponseCode::ServFail,
                )
                .to_vec()
                .ok();
            }
        };
        let limit = match &request.edns {
            Some(e) => usize::from(e.max_payload().min(EDNS_PAYLOAD)).max(PLAIN_UDP_LIMIT),
            None => PLAIN_UDP_LIMIT,
        };
        if tcp || bytes.len() <= limit {
            return Some(bytes);
        }
        response.truncate().to_vec().ok()
    }
}
