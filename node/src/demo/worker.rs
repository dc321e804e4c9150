//! `worker` (dockercoins): mines coins. Forever: get 32 random bytes from rng, hash them
//! with hasher, count the hash; once a second report the count to webui
//! (`POST /report` with `{"worker": <pod>, "hashes": <n since the last report>}`) and
//! print it.
//!
//! It never gives up, whatever the Services do:
//! - every request has a time limit (`--timeout`, connecting and name lookup included);
//! - a failed request is logged on stderr (what `kubectl logs` shows) and mining is
//!   retried after a back-off that starts short and doubles up to 2 s (reset by a hash);
//! - nothing is reused across a failure: a failed request drops the client and its
//!   pooled connections, so the next request looks the name up again and connects anew
//!   (a connection made before a Service had its rules or endpoints stays behind);
//! - hashes webui did not take are reported again with the next report.

use std::fmt::Arguments;
use std::io::Write;
use std::time::{Duration, Instant};

use super::client::{Client, RequestError, base_url};
use super::{DemoError, pod_name, shutdown_signal};

/// First wait after a failed hash; it doubles on each failure in a row up to
/// [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Arguments of `worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The rng Service (host name or URL).
    #[arg(long, default_value = "rng")]
    rng: String,
    /// The hasher Service (host name or URL).
    #[arg(long, default_value = "hasher")]
    hasher: String,
    /// The webui Service (host name or URL).
    #[arg(long, default_value = "webui")]
    webui: String,
    /// Seconds between two reports.
    #[arg(long, default_value_t = 1.0)]
    report_every: f64,
    /// Seconds one request may take (name lookup and connecting included).
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

/// A line on stdout; a closed or full stdout never stops the worker.
fn say(line: Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// A line on stderr (failures), likewise.
fn complain(line: Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(line);
    let _ = err.write_all(b"\n");
}

/// Waits between failed attempts: doubling from [`BACKOFF_START`] to [`BACKOFF_MAX`].
struct Backoff {
    next: Duration,
    failures: u32,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: BACKOFF_START,
            failures: 0,
        }
    }

    /// Records a failure; how long to wait before trying again.
    fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// Records a success; the failures in a row it ended.
    fn succeeded(&mut self) -> u32 {
        self.next = BACKOFF_START;
        std::mem::take(&mut self.failures)
    }
}

fn seconds(flag: &str, v: f64) -> Result<Duration, DemoError> {
    if !v.is_finite() || v <= 0.0 {
        return Err(DemoError::Usage(format!("--{flag} {v}: not a duration")));
    }
    Ok(Duration::from_secs_f64(v))
}

pub async fn run(a: Args) -> Result<i32, DemoError> {
    let every = seconds("report-every", a.report_every)?;
    let timeout = seconds("timeout", a.timeout)?;
    let rng = format!("{}/32", base_url(&a.rng)?);
    let hasher = format!("{}/", base_url(&a.hasher)?);
    let report = format!("{}/report", base_url(&a.webui)?);
    let me = pod_name();
    say(format_args!(
        "worker {me}: rng {rng}, hasher {hasher}, reporting to {report}"
    ));
    let work = async {
        let mut client = Client::new(timeout);
        let mut backoff = Backoff::new();
        let mut unreported: u64 = 0;
        let mut last_report = Instant::now();
        loop {
            match mine(&client, &rng, &hasher).await {
                Ok(()) => {
                    unreported += 1;
                    let failures = backoff.succeeded();
                    if failures > 0 {
                        say(format_args!(
                            "worker: mining again after {failures} failed attempts"
                        ));
                    }
                }
                Err(e) => {
                    let wait = backoff.failed();
                    complain(format_args!("worker: {e}; retrying in {wait:?}"));
                    client = Client::new(timeout);
                    tokio::time::sleep(wait).await;
                }
            }
            if last_report.elapsed() >= every {
                let body = serde_json::json!({"worker": me, "hashes": unreported}).to_string();
                match client.post(&report, body.into()).await {
                    Ok(_) => {
                        say(format_args!(
                            "worker: {unreported} hashes in {:.1} s",
                            last_report.elapsed().as_secs_f64()
                        ));
                        unreported = 0;
                    }
                    Err(e) => {
                        complain(format_args!(
                            "worker: {e}; keeping {unreported} hashes for the next report"
                        ));
                        client = Client::new(timeout);
                    }
                }
                last_report = Instant::now();
            }
        }
    };
    tokio::select! {
        _ = work => Ok(0),
        _ = shutdown_signal() => Ok(0),
    }
}

async fn mine(client: &Client, rng: &str, hasher: &str) -> Result<(), RequestError> {
    let bytes = client.get(rng).await?;
    let hash = client.post(hasher, bytes).await?;
    tracing::trace!(hash = %String::from_utf8_lossy(&hash), "mined");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_its_ceiling_and_a_success_resets_it() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..6).map(|_| b.failed()).collect();
        assert_eq!(
            waits,
            [250, 500, 1000, 2000, 2000, 2000].map(Duration::from_millis)
        );
        assert_eq!(b.succeeded(), 6);
        assert_eq!(b.failed(), BACKOFF_START);
        assert_eq!(b.succeeded(), 1);
        assert_eq!(b.succeeded(), 0);
    }
}
