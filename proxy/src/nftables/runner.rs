//! Running `nft`: a trait so tests can record or break what is written, and its
//! implementation on [`SystemRunner`] (the same prefix, e.g. `ip netns exec NAME`).

use std::io::Write as _;
use std::process::Stdio;

use crate::iptables::runner::failed;
use crate::iptables::{IpFamily, RunnerError, SystemRunner};

use super::objects::{TABLE, family_name};

/// What the nftables proxier needs from the host. `apply` must apply a script as one
/// transaction, all or nothing, as `nft -f` does.
pub trait Nft: Send + Sync {
    /// `nft -f SCRIPT`.
    fn apply(&self, script: &str) -> Result<(), RunnerError>;
    /// `nft list table FAMILY kommit`, or `None` when there is no such table.
    fn list_table(&self, family: IpFamily) -> Result<Option<String>, RunnerError>;
    /// Sets a sysctl such as `net.ipv4.conf.all.route_localnet`.
    fn set_sysctl(&self, key: &str, value: &str) -> Result<(), RunnerError>;
    /// Whether kommit's table has `chain` (by default from a listing of the table).
    fn chain_exists(&self, family: IpFamily, chain: &str) -> Result<bool, RunnerError> {
        Ok(self
            .list_table(family)?
            .is_some_and(|t| t.contains(&format!("\tchain {chain} {{"))))
    }
}

impl<N: Nft + ?Sized> Nft for &N {
    fn apply(&self, script: &str) -> Result<(), RunnerError> {
        (**self).apply(script)
    }
    fn list_table(&self, family: IpFamily) -> Result<Option<String>, RunnerError> {
        (**self).list_table(family)
    }
    fn set_sysctl(&self, key: &str, value: &str) -> Result<(), RunnerError> {
        (**self).set_sysctl(key, value)
    }
    fn chain_exists(&self, family: IpFamily, chain: &str) -> Result<bool, RunnerError> {
        (**self).chain_exists(family, chain)
    }
}

impl Nft for SystemRunner {
    /// The script goes to a file first, written whole, and `nft -f` reads that file: a
    /// kommit killed while writing never starts `nft`, so a script cut short is never
    /// applied (`nft -f -` would apply whatever complete lines it got).
    fn apply(&self, script: &str) -> Result<(), RunnerError> {
        let program = "nft".to_owned();
        let spawn = |source| RunnerError::Spawn {
            program: program.clone(),
            source,
        };
        let mut file = tempfile::Builder::new()
            .prefix("kommit-nft-")
            .suffix(".nft")
            .tempfile()
            .map_err(spawn)?;
        file.write_all(script.as_bytes()).map_err(spawn)?;
        file.flush().map_err(spawn)?;
        let out = self
            .command("nft")
            .arg("-f")
            .arg(file.path())
            .stdin(Stdio::null())
            .output()
            .map_err(spawn)?;
        if !out.status.success() {
            return Err(failed(&program, &out));
        }
        Ok(())
    }

    fn list_table(&self, family: IpFamily) -> Result<Option<String>, RunnerError> {
        let program = "nft".to_owned();
        let out = self
            .command("nft")
            .args(["list", "table", family_name(family), TABLE])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RunnerError::Spawn {
                program: program.clone(),
                source,
            })?;
        if out.status.success() {
            return String::from_utf8(out.stdout)
                .map(Some)
                .map_err(|_| RunnerError::NotUtf8 { program });
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No such file or directory") {
            return Ok(None);
        }
        Err(failed(&program, &out))
    }

    fn set_sysctl(&self, key: &str, value: &str) -> Result<(), RunnerError> {
        crate::iptables::Runner::sysctl(self, key, value)
    }

    /// `nft list chain FAMILY kommit CHAIN`: one chain, not the whole table.
    fn chain_exists(&self, family: IpFamily, chain: &str) -> Result<bool, RunnerError> {
        let out = self
            .command("nft")
            .args(["list", "chain", family_name(family), TABLE, chain])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RunnerError::Spawn {
                program: "nft".into(),
                source,
            })?;
        if out.status.success() {
            return Ok(true);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No such file or directory") {
            return Ok(false);
        }
        Err(failed("nft", &out))
    }
}
