//! `rng` (dockercoins): random bytes over HTTP.
//!
//! * `GET /` → a line naming the pod
//! * `GET /<n>` → n random bytes (1 to 1 MiB), after `--delay-ms` (default 100 ms, the
//!   work that makes more workers worth it)
//! * `GET /healthz` → `ok`

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::RngCore;

use super::{DemoError, pod_name, port_from, serve};

/// Largest answer, in bytes.
const MAX_BYTES: usize = 1 << 20;

/// Arguments of `rng`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Port (default `$PORT`, else 8080).
    #[arg(long)]
    port: Option<u16>,
    /// How long each request takes, in milliseconds.
    #[arg(long, default_value_t = 100)]
    delay_ms: u64,
}

pub async fn run(a: Args) -> Result<i32, DemoError> {
    let port = port_from(a.port)?;
    let app = Router::new()
        .route(
            "/",
            get(|| async { format!("RNG running on {}\n", pod_name()) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/{n}", get(random))
        .with_state(Arc::new(a));
    serve("rng", port, app).await
}

async fn random(State(a): State<Arc<Args>>, Path(n): Path<String>) -> Response {
    let n = match n.parse::<usize>() {
        Ok(n) if (1..=MAX_BYTES).contains(&n) => n,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                format!("{n}: ask for 1 to {MAX_BYTES} bytes\n"),
            )
                .into_response();
        }
    };
    tokio::time::sleep(Duration::from_millis(a.delay_ms)).await;
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes.into_response()
}
