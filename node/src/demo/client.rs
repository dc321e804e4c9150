//! A small HTTP/1.1 client for the demo workloads that call other Services. Names are
//! resolved by the system resolver (getaddrinfo), so inside a pod they go through the
//! pod's `/etc/resolv.conf`: the cluster DNS and its search list.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::DemoError;

/// An HTTP client with a per-request time limit.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

/// A failed request: what was asked and why it failed.
#[derive(Debug, thiserror::Error)]
#[error("{method} {url}: {message}")]
pub struct RequestError {
    pub method: &'static str,
    pub url: String,
    pub message: String,
}

impl Client {
    /// A client whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let inner = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .build_http();
        Client { inner, timeout }
    }

    /// GET `url`: the body of a 2xx answer.
    pub async fn get(&self, url: &str) -> Result<Bytes, RequestError> {
        self.send("GET", url, Bytes::new()).await
    }

    /// POST `body` to `url`: the body of a 2xx answer.
    pub async fn post(&self, url: &str, body: Bytes) -> Result<Bytes, RequestError> {
        self.send("POST", url, body).await
    }

    async fn send(
        &self,
        method: &'static str,
        url: &str,
        body: Bytes,
    ) -> Result<Bytes, RequestError> {
        let err = |message: String| RequestError {
            method,
            url: url.to_string(),
            message,
        };
        let request = hyper::Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(body))
            .map_err(|e| err(e.to_string()))?;
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| err(error_chain(&e)))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| err(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                return Err(err(format!("{status}: {}", text.trim())));
            }
            Ok(body)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| err(format!("no answer within {:?}", self.timeout)))?
    }
}

/// An error with its causes (hyper's own message is often just "client error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `name` → `http://name`, leaving full URLs alone; without a trailing slash.
pub fn base_url(name: &str) -> Result<String, DemoError> {
    let url = if name.contains("://") {
        name.to_string()
    } else {
        format!("http://{name}")
    };
    url.parse::<hyper::Uri>()
        .map_err(|e| DemoError::Usage(format!("{name}: not a host or URL ({e})")))?;
    Ok(url.trim_end_matches('/').to_string())
}
