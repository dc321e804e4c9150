//! `kommit`: a container cluster whose desired state is a Git repository.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// kommit runs containers from the Kubernetes manifests in a Git repository.
///
/// Push a commit to change the cluster: kommit validates the commit as a whole,
/// shows what it will change, and converges the nodes to it.
#[derive(Debug, Parser)]
#[command(name = "kommit", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("KOMMIT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {}
}
