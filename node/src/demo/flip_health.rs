//! `flip-health`: a server whose health flips.
//!
//! `/healthz` answers 200 `ok` until `--after` seconds have passed or `/flip` was requested,
//! then 500 `unhealthy` (a second `/flip` makes it healthy again). `/` answers the pod name.
//! With `--grpc-port`, the standard gRPC health service (`grpc.health.v1`) answers there
//! too: `SERVING` while healthy, `NOT_SERVING` after.

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
    /// Also serve grpc.health.v1 on this port, following the same health.
    #[arg(long)]
    grpc_port: Option<u16>,
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
    if let Some(grpc_port) = a.grpc_port {
        let (reporter, service) = tonic_health::server::health_reporter();
        let incoming = tonic::transport::server::TcpIncoming::bind(
            (std::net::Ipv4Addr::UNSPECIFIED, grpc_port).into(),
        )
        .map_err(|e| DemoError::Usage(format!("--grpc-port {grpc_port}: {e}")))?;
        let h = healthy.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let now = h.load(Ordering::SeqCst);
                if last != Some(now) {
                    let status = if now {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    reporter.set_service_status("", status).await;
                    last = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        println!("flip-health: gRPC health on port {grpc_port}");
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
