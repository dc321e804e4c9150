//! `kommit`: a container cluster whose desired state is a Git repository.

mod cache;
mod demo;
mod desired_args;
mod hook;
mod init;
mod kubeconfig;
mod plan;
mod proxy;
mod status;
mod up;
mod validate;

use std::process::ExitCode;

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
enum Command {
    /// The etcd-compatible cache on its own.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Service proxy maintenance.
    Proxy {
        #[command(subcommand)]
        command: proxy::ProxyCommand,
    },
    /// Run a built-in demo workload (what the kommit.dev/demo image runs).
    Demo(demo::DemoCmd),
    /// Validate the manifests of a commit (exit 0 valid, 1 invalid, 2 usage or repository error).
    Validate(validate::Args),
    /// Show what a commit changes: validation, object diffs, rollout (exit codes as validate).
    Plan(plan::Args),
    /// Git hooks (install with `kommit init --bare`).
    #[command(subcommand)]
    Hook(hook::Hook),
    /// Create a cluster repository with a starter manifest (with --bare: push-to-deploy).
    Init(init::Args),
    /// Run the cluster: follow a branch and converge containers to every new commit.
    Up(up::Args),
    /// Print a kubeconfig (server, CA, admin token) for kubectl.
    Kubeconfig(kubeconfig::Args),
    /// Show the applied commit and its rollout (-w: follow it; exit 0 converged, 1 failed).
    Status(status::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("KOMMIT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Cache(c) => failed_if_err(cache::run(c)),
        Command::Proxy { command } => failed_if_err(proxy::run(command)),
        Command::Demo(cmd) => std::process::exit(demo::run(cmd)),
        Command::Validate(args) => validate::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Hook(hook) => hook::run(&hook),
        Command::Init(args) => init::run(&args),
        Command::Up(args) => failed_if_err(up::run(args)),
        Command::Kubeconfig(args) => failed_if_err(kubeconfig::run(&args)),
        Command::Status(args) => status::run(args),
    }
}

/// The exit code of a command that either works or fails with an error chain.
fn failed_if_err(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
