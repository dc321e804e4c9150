//! `hasher` (dockercoins): SHA-256 over HTTP.
//!
//! * `POST /` with any body → its SHA-256 in hex, after `--delay-ms` (default 100 ms)
//! * `GET /` → a line naming the pod
//! * `GET /healthz` → `ok`

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::{DemoError, pod_name, port_from, serve};

/// Arguments of `hasher`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Port (default `$PORT`, else 8080).
    #[arg(long)]
    port: Option<u16>,
    /// How long each hash takes, in milliseconds.
    #[arg(long, default_value_t = 100)]
    delay_ms: u64,
}

pub async fn run(a: Args) -> Result<i32, DemoError> {
    let port = port_from(a.port)?;
    let app = Router::new()
        .route(
            "/",
            get(|| async { format!("HASHER running on {}\n", pod_name()) }).post(hash),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::new(a));
    serve("hasher", port, app).await
}

async fn hash(State(a): State<Arc<Args>>, body: Bytes) -> String {
    tokio::time::sleep(Duration::from_millis(a.delay_ms)).await;
    hex(&Sha256::digest(&body))
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
