//! HTTPS serving: rustls (aws-lc-rs), HTTP/1.1 and HTTP/2, one task per connection.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::ApiState;
use crate::auth::Tokens;
use crate::pki::{Pki, PkiError};

/// Where the API listens by default (as kube-apiserver).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6443";

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Data directory: `pki/`, `tokens`, `admin.token`, `api.server`.
    pub data_dir: PathBuf,
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Extra names or IPs for the serving certificate (made at first start only).
    pub hosts: Vec<String>,
}

impl ServeConfig {
    /// Listens on [`DEFAULT_LISTEN`].
    pub fn new(data_dir: PathBuf) -> Self {
        ServeConfig {
            data_dir,
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            hosts: Vec::new(),
        }
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Certificates or tokens.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// TLS setup.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Binding the address.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Writing the server address file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The file keeping the URL the API serves at (read by `kommit kubeconfig`).
pub(crate) fn server_file(data_dir: &Path) -> PathBuf {
    data_dir.join("api.server")
}

/// A bound API server, ready to run.
pub struct Server {
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    url: String,
}

impl Server {
    /// Makes (first start) or reads the certificates and tokens, binds the address and
    /// records the URL in the data directory.
    pub async fn bind(config: ServeConfig, state: ApiState) -> Result<Server, ServeError> {
        let data_dir = config.data_dir.clone();
        let hosts = config.hosts.clone();
        let (pki, tokens) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&data_dir).map_err(|source| PkiError::Io {
                path: data_dir.clone(),
                source,
            })?;
            Ok::<_, PkiError>((
                Pki::load_or_create(&data_dir, &hosts)?,
                Tokens::load_or_create(&data_dir)?,
            ))
        })
        .await
        .map_err(|e| ServeError::Tls(format!("setup task failed: {e}")))??;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| ServeError::Tls(format!("serving certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes())
            .map_err(|e| ServeError::Tls(format!("serving key: {e}")))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ServeError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| ServeError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        // The OpenAPI documents take a moment to build: build them now, off the
        // request path, rather than at the first `kubectl explain`.
        drop(tokio::task::spawn_blocking(crate::openapi::index));
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        let url = format!("https://{host}:{}", addr.port());
        let file = server_file(&config.data_dir);
        std::fs::write(&file, format!("{url}\n"))
            .map_err(|source| ServeError::Io { path: file, source })?;
        Ok(Server {
            listener,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
            router: crate::handler::app(state, tokens),
            url,
        })
    }

    /// `https://host:port`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; then closes every connection (watches too).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        tracing::info!(url = %self.url, "Kubernetes API serving");
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let acceptor = self.acceptor.clone();
                    let router = self.router.clone();
                    conns.spawn(async move {
                        let tls = match tokio::time::timeout(
                            std::time::Duration::from_secs(10),
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let service = TowerToHyperService::new(router);
                        if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(tls), service)
                            .await
                        {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
            }
        }
        conns.abort_all();
        while conns.join_next().await.is_some() {}
        tracing::info!("Kubernetes API stopped");
        Ok(())
    }
}

/// Binds and serves until `shutdown` completes.
pub async fn serve(
    config: ServeConfig,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    Server::bind(config, state).await?.run(shutdown).await
}
