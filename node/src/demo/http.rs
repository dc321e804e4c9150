//! `http`: answers with its pod name and a payload; `/healthz` answers ok.
//!
//! * `GET /` → `pod: <name>` and, when there is one, `payload: <payload>` (text lines)
//! * `GET /hostname` → the pod name alone
//! * `GET /payload` → the payload alone
//! * `GET /healthz` → `ok`
//! * `GET /ready` → 200 `ready` once `--ready-after` seconds have passed (at once by
//!   default), 503 `not ready` before, and always with `--never-ready`; a readiness probe
//!   target for rollout tests
//!
//! The payload is `--payload`, else the file `--payload-file` (read on every request, so
//! a mounted ConfigMap's update shows), else the env var `--payload-env` (default
//! `PAYLOAD`).

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::time::{Duration, Instant};

use super::{DemoError, pod_name, port_from, serve};

/// Arguments of `http`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Port (default `$PORT`, else 8080).
    #[arg(long)]
    port: Option<u16>,
    /// Payload text.
    #[arg(long)]
    payload: Option<String>,
    /// File holding the payload (read on every request).
    #[arg(long)]
    payload_file: Option<PathBuf>,
    /// Environment variable holding the payload.
    #[arg(long, default_value = "PAYLOAD")]
    payload_env: String,
    /// Seconds after start before /ready answers 200.
    #[arg(long, default_value_t = 0.0)]
    ready_after: f64,
    /// /ready never answers 200.
    #[arg(long)]
    never_ready: bool,
}

impl Args {
    fn payload(&self) -> Option<String> {
        if let Some(p) = &self.payload {
            return Some(p.clone());
        }
        if let Some(f) = &self.payload_file {
            return Some(match std::fs::read_to_string(f) {
                Ok(s) => s.trim_end().to_string(),
                Err(e) => format!("(cannot read {}: {e})", f.display()),
            });
        }
        std::env::var(&self.payload_env).ok()
    }
}

pub async fn run(a: Args) -> Result<i32, DemoError> {
    let port = port_from(a.port)?;
    if !a.ready_after.is_finite() || a.ready_after < 0.0 {
        return Err(DemoError::Usage(format!(
            "--ready-after {} is not a number of seconds",
            a.ready_after
        )));
    }
    let ready_at =
        (!a.never_ready).then(|| Instant::now() + Duration::from_secs_f64(a.ready_after));
    let state = Arc::new(a);
    let app = Router::new()
        .route("/", get(root))
        .route("/hostname", get(|| async { pod_name() }))
        .route(
            "/payload",
            get(|State(a): State<Arc<Args>>| async move { a.payload().unwrap_or_default() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/ready",
            get(move || async move {
                if ready_at.is_some_and(|t| Instant::now() >= t) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .with_state(state);
    serve("http", port, app).await
}

async fn root(State(a): State<Arc<Args>>) -> String {
    let mut out = format!("pod: {}\n", pod_name());
    if let Some(p) = a.payload() {
        out.push_str(&format!("payload: {p}\n"));
    }
    out
}
