//! Driving a proxier (iptables, nftables or userspace) from a stream of states: the wiring's side of "changes reach the
//! rules within a second".
//!
//! The caller publishes the whole [`ProxyState`] on a `tokio::sync::watch` channel
//! whenever a Service or its endpoints change; the driver coalesces bursts (at most one
//! sync per `min_interval`), syncs in a blocking thread, retries a failed sync after
//! `retry`, and syncs at least every `resync` even without changes (the proxier turns
//! that into a full sync once its `full_sync_period` has passed). Before such a resync it
//! checks a canary chain: rules removed behind kommit's back (a firewall reload, `nft
//! flush ruleset`) are written again within one resync period, not at the next full one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::iptables::{IptablesProxier, Runner};
use crate::model::ProxyState;
use crate::nftables::{Nft, NftablesProxier};
use crate::userspace::UserspaceProxy;

/// Timing of a driver loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverTiming {
    /// Least time between two syncs (changes in between are coalesced).
    pub min_interval: Duration,
    /// Wait before retrying a failed sync.
    pub retry: Duration,
    /// Sync at least this often.
    pub resync: Duration,
}

impl Default for DriverTiming {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_millis(100),
            retry: Duration::from_secs(1),
            resync: Duration::from_secs(30),
        }
    }
}

/// Why the driver wakes up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    Changed,
    /// The resync period passed without a change.
    Resync,
    /// The sender is gone.
    Closed,
}

/// Waits for the next change, or the resync period.
async fn next(rx: &mut watch::Receiver<Arc<ProxyState>>, wait: Duration) -> Wake {
    match tokio::time::timeout(wait, rx.changed()).await {
        Ok(Ok(())) => Wake::Changed,
        Ok(Err(_)) => Wake::Closed,
        Err(_) => Wake::Resync,
    }
}

/// A proxier that writes kernel rules: iptables or nftables mode.
pub trait RuleProxier: Send + 'static {
    /// The mode's name, for logs.
    const MODE: &'static str;
    /// Brings the rules to `state`; a one-line summary when something was written.
    fn sync_rules(&mut self, state: &ProxyState) -> Result<Option<String>, String>;
    /// Whether the rules are still in the kernel (a cheap canary check); when not, the
    /// next sync is a full one.
    fn rules_intact(&mut self) -> Result<bool, String>;
}

impl<R: Runner + 'static> RuleProxier for IptablesProxier<R> {
    const MODE: &'static str = "iptables";

    fn rules_intact(&mut self) -> Result<bool, String> {
        IptablesProxier::rules_intact(self).map_err(|e| e.to_string())
    }

    fn sync_rules(&mut self, state: &ProxyState) -> Result<Option<String>, String> {
        let report = self.sync(state).map_err(|e| e.to_string())?;
        let changed =
            report.full || !report.chains_written.is_empty() || !report.chains_deleted.is_empty();
        Ok(changed.then(|| {
            format!(
                "full: {}, chains written: {}, deleted: {}, {} ms",
                report.full,
                report.chains_written.len(),
                report.chains_deleted.len(),
                (report.save + report.generate + report.restore).as_millis()
            )
        }))
    }
}

impl<N: Nft + 'static> RuleProxier for NftablesProxier<N> {
    const MODE: &'static str = "nftables";

    fn rules_intact(&mut self) -> Result<bool, String> {
        NftablesProxier::rules_intact(self).map_err(|e| e.to_string())
    }

    fn sync_rules(&mut self, state: &ProxyState) -> Result<Option<String>, String> {
        let report = self.sync(state).map_err(|e| e.to_string())?;
        Ok(report.changed().then(|| {
            format!(
                "full: {}, chains written: {}, deleted: {}, elements added: {}, deleted: {}, {} ms",
                report.full,
                report.chains_written.len(),
                report.chains_deleted.len(),
                report.elements_added,
                report.elements_deleted,
                (report.generate + report.apply).as_millis()
            )
        }))
    }
}

/// Runs a rule-writing proxier until the sender is dropped; returns the proxier (for a
/// cleanup, say).
pub async fn run_rules<P: RuleProxier>(
    mut proxier: P,
    mut rx: watch::Receiver<Arc<ProxyState>>,
    timing: DriverTiming,
) -> P {
    let mut verify = false;
    loop {
        let state = rx.borrow_and_update().clone();
        let (back, result) = match tokio::task::spawn_blocking(move || {
            // On a resync without changes, check first that the rules are still there.
            if verify {
                match proxier.rules_intact() {
                    Ok(true) => {}
                    Ok(false) => warn!(
                        mode = P::MODE,
                        "kommit's rules were removed behind its back; writing them again"
                    ),
                    Err(e) => warn!(mode = P::MODE, error = %e, "cannot check the rules"),
                }
            }
            let result = proxier.sync_rules(&state);
            (proxier, result)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => panic!("{} sync thread panicked: {e}", P::MODE),
        };
        proxier = back;
        let wait = match result {
            Ok(summary) => {
                if let Some(summary) = summary {
                    info!(mode = P::MODE, "rules synced ({summary})");
                }
                timing.resync
            }
            Err(e) => {
                warn!(mode = P::MODE, error = %e, "sync failed; retrying with a full sync");
                timing.retry
            }
        };
        tokio::time::sleep(timing.min_interval).await;
        match next(&mut rx, wait.saturating_sub(timing.min_interval)).await {
            Wake::Closed => return proxier,
            wake => verify = wake == Wake::Resync,
        }
    }
}

/// Runs the iptables proxier until the sender is dropped (see [`run_rules`]).
pub async fn run_iptables<R: Runner + 'static>(
    proxier: IptablesProxier<R>,
    rx: watch::Receiver<Arc<ProxyState>>,
    timing: DriverTiming,
) -> IptablesProxier<R> {
    run_rules(proxier, rx, timing).await
}

/// Runs the userspace proxy until the sender is dropped.
pub async fn run_userspace(
    proxy: &UserspaceProxy,
    mut rx: watch::Receiver<Arc<ProxyState>>,
    timing: DriverTiming,
) {
    loop {
        let state = rx.borrow_and_update().clone();
        let wait = match proxy.apply(&state).await {
            Ok(()) => timing.resync,
            Err(e) => {
                warn!(error = %e, "userspace proxy: some ports could not be opened; retrying");
                timing.retry
            }
        };
        tokio::time::sleep(timing.min_interval).await;
        if next(&mut rx, wait.saturating_sub(timing.min_interval)).await == Wake::Closed {
            return;
        }
    }
}
