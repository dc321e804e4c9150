//! Performing one probe or lifecycle hook: exec through the runtime, TCP connect, HTTP GET,
//! gRPC health check.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::{Action, Outcome};
use crate::runtime::{Runtime, RuntimeError};

/// Where a probe connects to when its action names no host.
#[derive(Debug, Clone)]
pub struct Target {
    /// The runtime id of the container (for exec).
    pub container_id: String,
    /// The pod's IP.
    pub pod_ip: Option<String>,
}

/// Runs `action` once, bounded by `timeout`.
pub async fn probe(
    runtime: &dyn Runtime,
    action: &Action,
    target: &Target,
    timeout: Duration,
) -> Outcome {
    match action {
        Action::Exec { command } => {
            match runtime.exec(&target.container_id, command, timeout).await {
                Ok(r) if r.exit_code == 0 => Outcome::Success,
                Ok(r) => {
                    let mut out = String::from_utf8_lossy(&r.stdout).trim().to_string();
                    let err = String::from_utf8_lossy(&r.stderr);
                    if !err.trim().is_empty() {
                        if !out.is_empty() {
                            out.push(' ');
                        }
                        out.push_str(err.trim());
                    }
                    Outcome::Failure(if out.is_empty() {
                        format!("command exited with code {}", r.exit_code)
                    } else {
                        format!("command exited with code {}: {out}", r.exit_code)
                    })
                }
                Err(RuntimeError::ExecTimeout(t)) => {
                    Outcome::Failure(format!("command timed out after {}s", t.as_secs()))
                }
                Err(e) => Outcome::Failure(format!("cannot run the command: {e}")),
            }
        }
        other => network(other, target.pod_ip.as_deref(), timeout).await,
    }
}

/// Runs a TCP or HTTP probe against `pod_ip` (unless the action names a host).
pub async fn network(action: &Action, pod_ip: Option<&str>, timeout: Duration) -> Outcome {
    match action {
        Action::Exec { .. } => Outcome::Failure("an exec probe needs the runtime".into()),
        Action::Tcp { host, port } => {
            let Some(host) = host.clone().or_else(|| pod_ip.map(String::from)) else {
                return Outcome::Failure("the pod has no IP yet".into());
            };
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((&*host, *port)))
                .await
            {
                Ok(Ok(_)) => Outcome::Success,
                Ok(Err(e)) => Outcome::Failure(format!("dial tcp {host}:{port}: {e}")),
                Err(_) => Outcome::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
            }
        }
        Action::Grpc { port, service } => {
            let Some(host) = pod_ip else {
                return Outcome::Failure("the pod has no IP yet".into());
            };
            grpc_health(host, *port, service, timeout).await
        }
        Action::Http {
            scheme,
            host,
            path,
            port,
            headers,
        } => {
            let tls = if scheme.eq_ignore_ascii_case("HTTPS") {
                true
            } else if scheme.eq_ignore_ascii_case("HTTP") {
                false
            } else {
                return Outcome::Failure(format!("unknown scheme {scheme}"));
            };
            let Some(host) = host.clone().or_else(|| pod_ip.map(String::from)) else {
                return Outcome::Failure("the pod has no IP yet".into());
            };
            let url = format!(
                "{}://{host}:{port}{path}",
                if tls { "https" } else { "http" }
            );
            let get = http_get(&host, *port, path, headers, tls);
            match tokio::time::timeout(timeout, get).await {
                Ok(Ok(code)) if (200..400).contains(&code) => Outcome::Success,
                Ok(Ok(code)) => {
                    Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
                }
                Ok(Err(e)) => Outcome::Failure(format!("Get \"{url}\": {e}")),
                Err(_) => Outcome::Failure(format!(
                    "Get \"{url}\": context deadline exceeded (timeout {}s)",
                    timeout.as_secs()
                )),
            }
        }
    }
}

/// `grpc.health.v1.Health/Check` for `service`, in plain text (h2c), as the kubelet
/// does; the failure messages are the kubelet's.
async fn grpc_health(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{target}")) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return Outcome::Failure(format!("bad gRPC target {target}: {e}")),
    };
    let within = format!("{}s", timeout.as_secs());
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service \"{target}\" within {within}: {e}"
            ));
        }
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service \"{target}\" within {within}"
            ));
        }
    };
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    match tokio::time::timeout(timeout, HealthClient::new(channel).check(request)).await {
        Ok(Ok(resp)) => {
            let status = resp.into_inner().status;
            if status == ServingStatus::Serving as i32 {
                Outcome::Success
            } else {
                let name = ServingStatus::try_from(status)
                    .map(|s| s.as_str_name().to_owned())
                    .unwrap_or_else(|_| status.to_string());
                Outcome::Failure(format!("service unhealthy (responded with \"{name}\")"))
            }
        }
        Ok(Err(status)) => Outcome::Failure(format!(
            "error: health rpc probe failed: {}: {}",
            status.code(),
            status.message()
        )),
        Err(_) => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {within}"
        )),
    }
}

/// One HTTP/1.1 GET, over TLS when `tls` (the server's certificate is not checked, as
/// the kubelet does not check it); returns the status code. Redirects are not followed: a
/// 3xx passes.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    tls: bool,
) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
    if !tls {
        return exchange(stream, host, port, path, headers).await;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    exchange(stream, host, port, path, headers).await
}

/// Accepts any server certificate, still checking the handshake's signatures (Go's
/// `InsecureSkipVerify`, which the kubelet's HTTPS probes use).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn exchange<IO>(
    io: IO,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<u16, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "kube-probe/kommit")
        .header(hyper::header::ACCEPT, "*/*");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let code = resp.status().as_u16();
        // Read (and drop) the body so the server sees a complete exchange.
        let _ = resp.into_body().collect().await;
        Ok(code)
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real gRPC health server (tonic-health, the reference implementation of
    /// grpc.health.v1) on a loopback port.
    async fn grpc_server() -> (u16, tonic_health::server::HealthReporter) {
        let (reporter, service) = tonic_health::server::health_reporter();
        let incoming =
            tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = incoming.local_addr().unwrap().port();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        (port, reporter)
    }

    fn grpc(port: u16, service: &str) -> Action {
        Action::Grpc {
            port,
            service: service.into(),
        }
    }

    #[tokio::test]
    async fn grpc_probes_ask_the_standard_health_service() {
        use tonic_health::ServingStatus;
        let (port, reporter) = grpc_server().await;
        let t = Duration::from_secs(2);
        // The server as a whole is SERVING from the start.
        assert_eq!(
            network(&grpc(port, ""), Some("127.0.0.1"), t).await,
            Outcome::Success
        );
        reporter
            .set_service_status("shop.Cart", ServingStatus::NotServing)
            .await;
        assert_eq!(
            network(&grpc(port, "shop.Cart"), Some("127.0.0.1"), t).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        reporter
            .set_service_status("shop.Cart", ServingStatus::Serving)
            .await;
        assert_eq!(
            network(&grpc(port, "shop.Cart"), Some("127.0.0.1"), t).await,
            Outcome::Success
        );
        // A service the server does not know: the RPC fails (NOT_FOUND).
        let Outcome::Failure(why) =
            network(&grpc(port, "nope.Service"), Some("127.0.0.1"), t).await
        else {
            panic!("an unknown service is not healthy");
        };
        assert!(why.starts_with("error: health rpc probe failed"), "{why}");
        // Nothing listening.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = closed.local_addr().unwrap().port();
        drop(closed);
        let Outcome::Failure(why) = network(&grpc(dead, ""), Some("127.0.0.1"), t).await else {
            panic!("a closed port is not healthy");
        };
        assert!(
            why.starts_with("timeout: failed to connect service"),
            "{why}"
        );
        assert_eq!(
            network(&grpc(port, ""), None, t).await,
            Outcome::Failure("the pod has no IP yet".into())
        );
    }

    async fn serve(code: u16) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = axum::http::StatusCode::from_u16(code).unwrap();
        let app = axum::Router::new().route(
            "/check",
            axum::routing::get(move |h: axum::http::HeaderMap| async move {
                if h.get("x-probe").is_some_and(|v| v == "yes") {
                    (status, "checked")
                } else {
                    (axum::http::StatusCode::BAD_REQUEST, "no header")
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    fn http(port: u16) -> Action {
        Action::Http {
            scheme: "HTTP".into(),
            host: Some("127.0.0.1".into()),
            path: "/check".into(),
            port,
            headers: vec![("X-Probe".into(), "yes".into())],
        }
    }

    /// An HTTPS server with a self-signed certificate answering every request with `code`.
    async fn serve_tls(code: u16) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = ck.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let reply =
                    format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        port
    }

    #[tokio::test]
    async fn https_probes_accept_any_certificate() {
        let https = |port| Action::Http {
            scheme: "HTTPS".into(),
            host: Some("127.0.0.1".into()),
            path: "/".into(),
            port,
            headers: vec![],
        };
        let second = Duration::from_secs(5);
        let ok = serve_tls(200).await;
        assert_eq!(network(&https(ok), None, second).await, Outcome::Success);
        let bad = serve_tls(500).await;
        assert_eq!(
            network(&https(bad), None, second).await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        // HTTPS against a plain HTTP server fails in the handshake.
        let plain = serve(200).await;
        match network(&https(plain), None, second).await {
            Outcome::Failure(m) => assert!(m.contains("TLS handshake"), "{m}"),
            Outcome::Success => panic!("HTTPS passed against a plain server"),
        }
    }

    #[tokio::test]
    async fn http_and_tcp_probes_on_loopback() {
        let second = Duration::from_secs(1);
        let ok = serve(204).await;
        assert_eq!(network(&http(ok), None, second).await, Outcome::Success);
        let redirect = serve(302).await;
        assert_eq!(
            network(&http(redirect), None, second).await,
            Outcome::Success
        );
        let bad = serve(503).await;
        assert_eq!(
            network(&http(bad), None, second).await,
            Outcome::Failure("HTTP probe failed with statuscode: 503".into())
        );
        let tcp = Action::Tcp {
            host: Some("127.0.0.1".into()),
            port: ok,
        };
        assert_eq!(network(&tcp, None, second).await, Outcome::Success);
        // A port nobody listens on.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        for a in [
            http(closed),
            Action::Tcp {
                host: Some("127.0.0.1".into()),
                port: closed,
            },
        ] {
            match network(&a, None, second).await {
                Outcome::Failure(m) => assert!(m.contains("refused"), "{m}"),
                Outcome::Success => panic!("a closed port passed"),
            }
        }
    }
}
