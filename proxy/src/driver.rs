//! Driving a proxier (iptables, nftables or userspace) from a stream of states: the wiring's side of "changes reach the
//! rules within a second".
//!
//! The caller publishes the whole [`ProxyState`] on a `tokio::sync::watch` channel
//! whenever a Service or its endpoints change; the driver coalesces bursts (at most one
//! sync per `min_interval`), syncs in a blocking thread, retries a failed sync after
//! `retry`, and syncs at least every `resync` even without changes (the proxier turns
//! that into a full sync once its `full_sync_period` has passed).

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

/// Waits for the next change, or the resync period; `false` when the sender is gone.
async fn next(rx: &mut watch::Receiver<Arc<ProxyState>>, wait: Duration) -> bool {
    match tokio::time::timeout(wait, rx.changed()).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => true,
    }
}

/// A proxier that writes kernel rules: iptables or nftables mode.
pub trait RuleProxier: Send + 'static {
    /// The mode's name, for logs.
    const MODE: &'static str;
    /// Brings the rules to `state`; a one-line summary when something was written.
    fn sync_rules(&mut self, state: &ProxyState) -> Result<Option<String>, String>;
}

impl<R: Runner + 'static> RuleProxier for IptablesProxier<R> {
    const MODE: &'static str = "iptables";

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
    loop {
        let state = rx.borrow_and_update().clone();
        let (back, result) = match tokio::task::spawn_blocking(move || {
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
        if !next(&mut rx, wait.saturating_sub(timing.min_interval)).await {
            return proxier;
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
        if !next(&mut rx, wait.saturating_sub(timing.min_interval)).await {
            return;
        }
    }
}
