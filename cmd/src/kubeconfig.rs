//! `kommit kubeconfig`: prints a kubeconfig for the cluster's API (server, CA, admin token).

use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `kommit kubeconfig`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The data directory of the cluster (`kommit up --data-dir`; the API's certificates,
    /// tokens and address are in its `api/` folder).
    #[arg(long, env = "KOMMIT_DATA_DIR")]
    data_dir: PathBuf,
    /// Server URL to write instead of the one the API last served at.
    #[arg(long)]
    server: Option<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let dir = crate::up::api::api_dir(&args.data_dir);
    let text = kommit_api::kubeconfig(&dir, args.server.as_deref())
        .with_context(|| format!("making a kubeconfig from {}", dir.display()))?;
    print!("{text}");
    Ok(())
}
