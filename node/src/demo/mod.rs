//! The built-in demo workloads, in the spirit of Kubernetes' `agnhost` test image.
//!
//! The node's demo image (see [`crate::image`]) has `ENTRYPOINT ["/kommit", "demo"]`, so a
//! pod selects a workload with its `args`:
//!
//! ```yaml
//! containers:
//! - name: web
//!   image: kommit.dev/demo:1
//!   args: ["http", "--port", "8080"]
//! ```
//!
//! | workload | what it does |
//! | --- | --- |
//! | `http` | HTTP server answering with its pod name and a payload (env var or file), `/healthz`, `/ready` (after `--ready-after`, never with `--never-ready`) |
//! | `flip-health` | HTTP server whose `/healthz` turns unhealthy after N seconds or on `/flip` |
//! | `exit` | exits with `--code N`, optionally `--after S` seconds |
//! | `sleep` | sleeps (forever, or `S` seconds), exits 0 on SIGTERM |
//! | `pause` | the pod sandbox: holds the pod's network namespace until stopped |
//! | `fetch URL` | GET a URL and print the body (a client for Service names inside a pod) |
//! | `rng` | dockercoins: random bytes over HTTP |
//! | `hasher` | dockercoins: SHA-256 of a POST body |
//! | `worker` | dockercoins: hashes rng's bytes with hasher, reports the count to webui |
//! | `webui` | dockercoins: the hashing rate as JSON and a small HTML page |
//!
//! Each workload is a module with an `Args` (clap) and an `async fn run(args) -> Result<i32>`,
//! added to [`Workload`]. The dockercoins programs find each other by Service name
//! (`rng`, `hasher`, `webui`; flags override), so they need the cluster DNS.
//! Every workload exits promptly on SIGTERM/SIGINT, since it often runs as PID 1.

mod client;
mod exit;
mod fetch;
mod flip_health;
mod hasher;
mod http;
mod rng;
mod sleep;
mod webui;
mod worker;

use clap::{Parser, Subcommand};

/// Errors of a demo workload.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Bad command line.
    #[error("{0}")]
    Usage(String),
    /// I/O (binding a port, reading a file).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// `kommit demo <workload> [args]`.
#[derive(Debug, Parser)]
#[command(
    name = "kommit demo",
    about = "Built-in demo workloads (what the kommit.dev/demo image runs)"
)]
pub struct DemoArgs {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// HTTP server answering with its pod name and a payload; /healthz answers ok.
    Http(http::Args),
    /// HTTP server whose /healthz turns unhealthy after --after seconds or on /flip.
    FlipHealth(flip_health::Args),
    /// Exit with a chosen code, optionally after a delay.
    Exit(exit::Args),
    /// Sleep forever (or for the given seconds); exit 0 on SIGTERM.
    Sleep(sleep::Args),
    /// Hold a pod's network namespace (the pod sandbox) until stopped.
    Pause,
    /// GET a URL (or http://HOST/) and print the body; exit 1 when it fails.
    Fetch(fetch::Args),
    /// dockercoins: random bytes over HTTP (GET /<n>).
    Rng(rng::Args),
    /// dockercoins: SHA-256 in hex of a POST body.
    Hasher(hasher::Args),
    /// dockercoins: hash rng's bytes with hasher, forever; report the count to webui.
    Worker(worker::Args),
    /// dockercoins: the hashing rate (GET /json, and an HTML page at /).
    Webui(webui::Args),
    /// Internal: the process runtime's per-container supervisor.
    #[command(hide = true)]
    ProcessShim(crate::runtime::process::ShimArgs),
}

/// Runs a workload given the arguments after `demo` (blocking); returns the exit code.
pub fn main<I, S>(args: I) -> i32
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let argv =
        std::iter::once(std::ffi::OsString::from("demo")).chain(args.into_iter().map(Into::into));
    let parsed = match DemoArgs::try_parse_from(argv) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    if let Workload::ProcessShim(args) = parsed.workload {
        // The shim is synchronous: it forks and waits.
        return crate::runtime::process::shim_main(args);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(parsed)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("demo: {e}");
            1
        }
    }
}

/// Runs a parsed workload.
pub async fn run(args: DemoArgs) -> Result<i32, DemoError> {
    match args.workload {
        Workload::Http(a) => http::run(a).await,
        Workload::FlipHealth(a) => flip_health::run(a).await,
        Workload::Exit(a) => exit::run(a).await,
        Workload::Sleep(a) => sleep::run(a).await,
        Workload::Pause => sleep::pause().await,
        Workload::Fetch(a) => fetch::run(a).await,
        Workload::Rng(a) => rng::run(a).await,
        Workload::Hasher(a) => hasher::run(a).await,
        Workload::Worker(a) => worker::run(a).await,
        Workload::Webui(a) => webui::run(a).await,
        Workload::ProcessShim(_) => Err(DemoError::Usage(
            "process-shim runs outside the async runtime".into(),
        )),
    }
}

/// The pod name: `$POD_NAME`, else `$HOSTNAME`, else the host name.
pub fn pod_name() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .map(|h| h.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The port to listen on: the flag, else `$PORT`, else 8080.
pub(crate) fn port_from(flag: Option<u16>) -> Result<u16, DemoError> {
    if let Some(p) = flag {
        return Ok(p);
    }
    match std::env::var("PORT") {
        Ok(p) if !p.is_empty() => p
            .parse()
            .map_err(|_| DemoError::Usage(format!("PORT={p} is not a port number"))),
        _ => Ok(8080),
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// Serves `app` on all addresses at `port` until SIGTERM/SIGINT.
pub(crate) async fn serve(name: &str, port: u16, app: axum::Router) -> Result<i32, DemoError> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    println!("{name}: listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    println!("{name}: stopped");
    Ok(0)
}
