//! `worker` (dockercoins): mines coins. Forever: get 32 random bytes from rng, hash them
//! with hasher, count the hash; once a second report the count to webui
//! (`POST /report` with `{"worker": <pod>, "hashes": <n since the last report>}`) and
//! print it. A failing Service is logged and retried after a second; hashes that webui
//! did not take are reported again with the next report.

use std::time::{Duration, Instant};

use super::client::{Client, base_url};
use super::{DemoError, pod_name, shutdown_signal};

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
}

pub async fn run(a: Args) -> Result<i32, DemoError> {
    if !a.report_every.is_finite() || a.report_every <= 0.0 {
        return Err(DemoError::Usage(format!(
            "--report-every {}: not a duration",
            a.report_every
        )));
    }
    let rng = format!("{}/32", base_url(&a.rng)?);
    let hasher = format!("{}/", base_url(&a.hasher)?);
    let report = format!("{}/report", base_url(&a.webui)?);
    let every = Duration::from_secs_f64(a.report_every);
    let client = Client::new(Duration::from_secs(5));
    let me = pod_name();
    println!("worker {me}: rng {rng}, hasher {hasher}, reporting to {report}");
    let work = async {
        let mut unreported: u64 = 0;
        let mut last_report = Instant::now();
        loop {
            match mine(&client, &rng, &hasher).await {
                Ok(()) => unreported += 1,
                Err(e) => {
                    println!("worker: {e}; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            if last_report.elapsed() >= every {
                let body = serde_json::json!({"worker": me, "hashes": unreported}).to_string();
                match client.post(&report, body.into()).await {
                    Ok(_) => {
                        println!(
                            "worker: {unreported} hashes in {:.1} s",
                            last_report.elapsed().as_secs_f64()
                        );
                        unreported = 0;
                    }
                    Err(e) => {
                        println!("worker: {e}; keeping {unreported} hashes for the next report")
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

async fn mine(client: &Client, rng: &str, hasher: &str) -> Result<(), super::client::RequestError> {
    let bytes = client.get(rng).await?;
    let hash = client.post(hasher, bytes).await?;
    tracing::trace!(hash = %String::from_utf8_lossy(&hash), "mined");
    Ok(())
}
