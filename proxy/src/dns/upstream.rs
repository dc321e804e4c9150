//! Forwarding names that are not the cluster's to the host's resolvers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The resolvers queries outside the cluster go to, tried in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub servers: Vec<SocketAddr>,
    /// How long one server gets to answer before the next is tried.
    pub timeout: Duration,
}

impl Upstream {
    /// No upstream: names outside the cluster are refused.
    pub fn none() -> Self {
        Upstream {
            servers: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }

    /// These servers, 2 s each.
    pub fn servers(servers: Vec<SocketAddr>) -> Self {
        Upstream {
            servers,
            timeout: Duration::from_secs(2),
        }
    }

    /// The `nameserver` lines of a resolv.conf (port 53), leaving out `exclude` (the
    /// cluster DNS's own addresses, so it never forwards to itself).
    pub fn from_resolv_conf(path: &Path, exclude: &[SocketAddr]) -> io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Ok(Self::servers(
            parse_resolv_conf(&text)
                .into_iter()
                .filter(|a| !exclude.iter().any(|e| same_endpoint(e, a)))
                .collect(),
        ))
    }

    /// Whether there is any server to forward to.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Sends a raw query to each server in turn until one answers; the raw answer.
    /// Over TCP when `tcp` (a client that got a truncated answer retries over TCP).
    pub async fn forward(&self, query: &[u8], tcp: bool) -> io::Result<Vec<u8>> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no upstream resolver");
        for server in &self.servers {
            let attempt = async {
                if tcp {
                    forward_tcp(*server, query).await
                } else {
                    forward_udp(*server, query).await
                }
            };
            match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{server} did not answer within {:?}", self.timeout),
                    )
                }
            }
            tracing::debug!(%server, error = %last, "upstream resolver failed");
        }
        Err(last)
    }
}

fn same_endpoint(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port()
        && (a.ip() == b.ip() || (a.ip().is_unspecified() && a.is_ipv4() == b.is_ipv4()))
}

/// The `nameserver` addresses of a resolv.conf text, port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            // A scoped IPv6 address (fe80::1%eth0) is left out: it cannot be parsed portably.
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

fn id_of(message: &[u8]) -> Option<[u8; 2]> {
    Some([*message.first()?, *message.get(1)?])
}

async fn forward_udp(server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // A stray datagram with another id is not the answer.
        if n >= 12 && id_of(&buf[..n]) == id_of(query) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let n = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(n)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch example.org\nnameserver 127.0.0.53\noptions edns0\nnameserver ::1\nnameserver fe80::1%eth0\nnameserver bogus\n";
        assert_eq!(
            parse_resolv_conf(text),
            [
                "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, text).unwrap();
        let up = Upstream::from_resolv_conf(&path, &["0.0.0.0:53".parse().unwrap()]).unwrap();
        assert_eq!(up.servers, ["[::1]:53".parse::<SocketAddr>().unwrap()]);
    }
}
