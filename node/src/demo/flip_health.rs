//! `flip-health`: a server whose health flips.
//!
//! `/healthz` answers 200 `ok` until `--after` seconds have passed or `/flip` was requested,
//! then 500 `unhealthy` (a second `/flip` makes it healthy again). `/` answers the pod name.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use super::{DemoError, pod_name, port_from, serve};

/// Arguments of `flip-health`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Port (default `$PORT`, else 8080).
    #[arg(long)]
    port: Option<u16>,
    /// Seconds after which /healthz turns unhealthy (never when omitted).
    #[arg(long)]
    after: Option<f64>,
}

pub async fn run(a: Args) -> Result<i32, DemoError> {
    let port = port_from(a.port)?;
    let healthy = Arc::new(AtomicBool::new(true));
    if let Some(after) = a.after {
        if !after.is_finite() || after < 0.0 {
            return Err(DemoError::Usage(format!(
                "--after {after} is not a number of seconds"
            )));
        }
        let h = healthy.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(after)).await;
            h.store(false, Ordering::SeqCst);
            println!("flip-health: now unhealthy");
        });
    }
    let app = Router::new()
        .route("/", get(|| async { format!("pod: {}\n", pod_name()) }))
        .route("/healthz", get(healthz))
        .route("/flip", get(flip).post(flip))
        .with_state(healthy);
    serve("flip-health", port, app).await
}

async fn healthz(State(h): State<Arc<AtomicBool>>) -> (StatusCode, &'static str) {
    if h.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "unhealthy")
    }
}

async fn flip(State(h): State<Arc<AtomicBool>>) -> &'static str {
    let was = h.fetch_xor(true, Ordering::SeqCst);
    if was { "now unhealthy" } else { "now healthy" }
}
