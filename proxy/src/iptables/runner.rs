//! Running `iptables-save` / `iptables-restore`: a trait so tests can record what would
//! be written without root, and the real runner that drives the binaries.

use std::ffi::OsString;
use std::io::Write;
use std::process::{Command, Stdio};

use super::IpFamily;

/// What the proxier needs from the host. Implementations must apply a restore input
/// atomically per table (as `iptables-restore` does) or not at all.
pub trait Runner: Send + Sync {
    /// `iptables-save -t TABLE` output.
    fn save(&self, family: IpFamily, table: &str) -> Result<String, RunnerError>;
    /// `iptables-restore --noflush` with `input` on standard input.
    fn restore(&self, family: IpFamily, input: &[u8]) -> Result<(), RunnerError>;
    /// Sets a sysctl such as `net.ipv4.conf.all.route_localnet`.
    fn sysctl(&self, key: &str, value: &str) -> Result<(), RunnerError>;
    /// Whether `chain` exists in `table` (by default from a save of the table).
    fn chain_exists(
        &self,
        family: IpFamily,
        table: &str,
        chain: &str,
    ) -> Result<bool, RunnerError> {
        let saved = super::parse_save(&self.save(family, table)?);
        Ok(saved.chains.iter().any(|c| c == chain))
    }
}

impl<R: Runner + ?Sized> Runner for &R {
    fn save(&self, family: IpFamily, table: &str) -> Result<String, RunnerError> {
        (**self).save(family, table)
    }
    fn restore(&self, family: IpFamily, input: &[u8]) -> Result<(), RunnerError> {
        (**self).restore(family, input)
    }
    fn sysctl(&self, key: &str, value: &str) -> Result<(), RunnerError> {
        (**self).sysctl(key, value)
    }
    fn chain_exists(
        &self,
        family: IpFamily,
        table: &str,
        chain: &str,
    ) -> Result<bool, RunnerError> {
        (**self).chain_exists(family, table, chain)
    }
}

impl<R: Runner + ?Sized> Runner for std::sync::Arc<R> {
    fn save(&self, family: IpFamily, table: &str) -> Result<String, RunnerError> {
        (**self).save(family, table)
    }
    fn restore(&self, family: IpFamily, input: &[u8]) -> Result<(), RunnerError> {
        (**self).restore(family, input)
    }
    fn sysctl(&self, key: &str, value: &str) -> Result<(), RunnerError> {
        (**self).sysctl(key, value)
    }
    fn chain_exists(
        &self,
        family: IpFamily,
        table: &str,
        chain: &str,
    ) -> Result<bool, RunnerError> {
        (**self).chain_exists(family, table, chain)
    }
}

/// A failed host command.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{program}: output is not UTF-8")]
    NotUtf8 { program: String },
}

/// Which iptables binaries to run. The host's rules and kommit's must live in the same
/// backend, so the default is whatever `iptables-restore` is on this host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-restore` / `iptables-save` as installed (Debian: the nft variant).
    #[default]
    Installed,
    /// `iptables-legacy-restore` / `iptables-legacy-save`.
    Legacy,
    /// `iptables-nft-restore` / `iptables-nft-save`.
    Nft,
}

/// Runs the real `iptables-save` / `iptables-restore` (or the ip6tables ones).
///
/// A prefix runs them through another command, e.g. `ip netns exec NAME` to program a
/// network namespace.
#[derive(Clone, Debug, Default)]
pub struct SystemRunner {
    prefix: Vec<OsString>,
    /// Seconds `iptables-restore` waits for the xtables lock (`-w`).
    pub lock_wait_secs: u32,
    pub backend: Backend,
}

impl SystemRunner {
    pub fn new() -> Self {
        Self {
            prefix: Vec::new(),
            lock_wait_secs: 5,
            backend: Backend::Installed,
        }
    }

    /// Runs every command as `PREFIX... iptables-restore ...`.
    pub fn with_prefix<I, S>(prefix: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self {
            prefix: prefix.into_iter().map(Into::into).collect(),
            lock_wait_secs: 5,
            backend: Backend::Installed,
        }
    }

    /// Runs in the named network namespace (`ip netns exec NAME ...`).
    pub fn in_netns(name: &str) -> Self {
        Self::with_prefix(["ip", "netns", "exec", name])
    }

    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    fn program(&self, family: IpFamily, tool: &str) -> String {
        let base = match family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        match self.backend {
            Backend::Installed => format!("{base}-{tool}"),
            Backend::Legacy => format!("{base}-legacy-{tool}"),
            Backend::Nft => format!("{base}-nft-{tool}"),
        }
    }

    /// The command, in a process group of its own: a Ctrl-C meant for kommit (the
    /// terminal signals the whole foreground group) must not kill a save or restore
    /// kommit still needs, such as the one removing its rules on the way out.
    pub(crate) fn command(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = match self.prefix.split_first() {
            None => Command::new(program),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
        };
        c.process_group(0);
        c
    }
}

/// A command that exited unsuccessfully, with its status and stderr.
pub(crate) fn failed(program: &str, out: &std::process::Output) -> RunnerError {
    RunnerError::Failed {
        program: program.to_owned(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    }
}

impl Runner for SystemRunner {
    fn save(&self, family: IpFamily, table: &str) -> Result<String, RunnerError> {
        let program = self.program(family, "save");
        let out = self
            .command(&program)
            .args(["-t", table])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RunnerError::Spawn {
                program: program.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(failed(&program, &out));
        }
        String::from_utf8(out.stdout).map_err(|_| RunnerError::NotUtf8 { program })
    }

    fn restore(&self, family: IpFamily, input: &[u8]) -> Result<(), RunnerError> {
        let program = self.program(family, "restore");
        let mut child = self
            .command(&program)
            .args(["--noflush", "-w", &self.lock_wait_secs.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RunnerError::Spawn {
                program: program.clone(),
                source,
            })?;
        let stdin = child.stdin.take();
        // Feed the input from another thread so a child that reports errors while still
        // reading cannot block on a full stderr pipe while we block on its stdin.
        let out = std::thread::scope(|s| {
            let writer = s.spawn(move || -> std::io::Result<()> {
                if let Some(mut stdin) = stdin {
                    stdin.write_all(input)?;
                }
                Ok(())
            });
            let out = child.wait_with_output();
            // A write error (broken pipe) only means the child stopped reading; its exit
            // status says why.
            let _ = writer.join();
            out
        })
        .map_err(|source| RunnerError::Spawn {
            program: program.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(failed(&program, &out));
        }
        Ok(())
    }

    /// `iptables -t TABLE -S CHAIN`: lists one chain, not the whole table.
    fn chain_exists(
        &self,
        family: IpFamily,
        table: &str,
        chain: &str,
    ) -> Result<bool, RunnerError> {
        let program = match (self.backend, family) {
            (Backend::Installed, IpFamily::V4) => "iptables",
            (Backend::Installed, IpFamily::V6) => "ip6tables",
            (Backend::Legacy, IpFamily::V4) => "iptables-legacy",
            (Backend::Legacy, IpFamily::V6) => "ip6tables-legacy",
            (Backend::Nft, IpFamily::V4) => "iptables-nft",
            (Backend::Nft, IpFamily::V6) => "ip6tables-nft",
        };
        let out = self
            .command(program)
            .args([
                "-w",
                &self.lock_wait_secs.to_string(),
                "-t",
                table,
                "-S",
                chain,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RunnerError::Spawn {
                program: program.to_owned(),
                source,
            })?;
        if out.status.success() {
            return Ok(true);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        // iptables-legacy: "No chain/target/match by that name"; iptables-nft 1.8.9 says
        // a missing chain is "incompatible".
        if stderr.contains("No chain") || stderr.contains("incompatible") {
            return Ok(false);
        }
        Err(failed(program, &out))
    }

    fn sysctl(&self, key: &str, value: &str) -> Result<(), RunnerError> {
        if self.prefix.is_empty() {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            return std::fs::write(&path, value).map_err(|source| RunnerError::Spawn {
                program: format!("write {path}"),
                source,
            });
        }
        let out = self
            .command("sysctl")
            .args(["-w", &format!("{key}={value}")])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RunnerError::Spawn {
                program: "sysctl".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(failed("sysctl", &out));
        }
        Ok(())
    }
}
