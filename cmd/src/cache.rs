//! `kommit cache ...`: the etcd-compatible cache on its own.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use kommit_cache::{Cache, Options, grpc};

/// Run the etcd-compatible cache alone (for tests, benchmarks, and people who
/// want only the store).
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Serve a cache's etcd v3 gRPC API (etcdctl works against it).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory (created if missing; holds the WAL and snapshot).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Address to serve on (port 0 picks a free port; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2379")]
    listen: SocketAddr,
    /// Largest request in bytes (etcd's --max-request-bytes).
    #[arg(long, value_name = "BYTES", default_value_t = Options::default().max_request_bytes)]
    max_request_bytes: usize,
    /// Member name shown by `etcdctl member list`.
    #[arg(long, default_value = "kommit")]
    name: String,
}

pub fn run(cmd: CacheCommand) -> anyhow::Result<()> {
    match cmd {
        CacheCommand::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let options = Options {
        max_request_bytes: args.max_request_bytes,
        ..Options::default()
    };
    let cache = Cache::open(&args.data_dir, options)
        .with_context(|| format!("opening the cache in {}", args.data_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener
            .local_addr()
            .context("reading the listening address")?;
        let mut opts =
            grpc::ServeOptions::for_listener(&listener).context("reading the listening address")?;
        opts.name = args.name;
        tracing::info!(%addr, revision = cache.current_revision(), "serving the etcd v3 API");
        // The first line of stdout is the address, for scripts that asked for port 0.
        println!("listening on {addr}");
        grpc::serve(cache, listener, opts, shutdown_signal())
            .await
            .context("serving gRPC")?;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
