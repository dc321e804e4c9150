//! `kommit proxy ...`: maintenance of the service proxy's host state.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use kommit_proxy::iptables::{Backend, IpFamily, RunnerError, SystemRunner, cleanup};
use kommit_proxy::nftables;

#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Remove what a kommit proxy left on this host: every kommit chain (KOMMIT-*) and
    /// every rule that jumps into one, from the nat and filter tables, in one atomic
    /// iptables-restore per family, and the nftables table `ip kommit` (nftables mode).
    /// Other rules (Docker's, a real kube-proxy's KUBE-*) are left alone.
    Cleanup(CleanupArgs),
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Clean ip6tables as well as iptables.
    #[arg(long)]
    ipv6: bool,
    /// Which iptables binaries to use.
    #[arg(long, value_enum, default_value_t = BackendArg::Installed)]
    backend: BackendArg,
    /// Clean up even while a running `kommit up` owns the chains.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendArg {
    /// iptables-restore as installed
    Installed,
    /// iptables-legacy-restore
    Legacy,
    /// iptables-nft-restore
    Nft,
}

pub fn run(command: ProxyCommand) -> anyhow::Result<()> {
    match command {
        ProxyCommand::Cleanup(args) => {
            // A running kommit would rewrite what is removed: refuse unless forced.
            let _lock = match crate::up::proxy::take_lock() {
                Ok(lock) => Some(lock),
                Err(e) if !args.force && e.contains("another kommit") => {
                    anyhow::bail!("{e}; stop it first (it removes its rules) or pass --force")
                }
                Err(_) => None,
            };
            let backend = match args.backend {
                BackendArg::Installed => Backend::Installed,
                BackendArg::Legacy => Backend::Legacy,
                BackendArg::Nft => Backend::Nft,
            };
            let runner = SystemRunner::new().with_backend(backend);
            let mut families = vec![IpFamily::V4];
            if args.ipv6 {
                families.push(IpFamily::V6);
            }
            for family in families {
                let report = cleanup(&runner, family)
                    .with_context(|| format!("cleaning up {family:?} rules"))?;
                for jump in &report.jumps_deleted {
                    println!("deleted rule {jump}");
                }
                for chain in &report.chains_deleted {
                    println!("deleted chain {chain}");
                }
                let table = match nftables::cleanup(&runner, family) {
                    Ok(deleted) => deleted,
                    // No nft on this host: nothing of the nftables mode to remove.
                    Err(nftables::SyncError::List(RunnerError::Spawn { .. })) => false,
                    Err(e) => {
                        return Err(e).with_context(|| format!("cleaning up {family:?} nftables"));
                    }
                };
                if table {
                    println!(
                        "deleted nftables table {} kommit",
                        nftables::family_name(family)
                    );
                }
                if report.chains_deleted.is_empty() && report.jumps_deleted.is_empty() && !table {
                    println!("no kommit rules ({family:?})");
                }
            }
            Ok(())
        }
    }
}
