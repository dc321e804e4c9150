//! `fetch URL`: GET a URL and print the body (a client inside a pod: the name goes
//! through the pod's resolver, so `fetch http://web` shows cluster DNS at work).

use std::io::Write;
use std::time::Duration;

use super::DemoError;
use super::client::{Client, base_url};

/// Arguments of `fetch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The URL, or a host name (then `http://HOST/`).
    url: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

pub async fn run(a: Args) -> Result<i32, DemoError> {
    if !a.timeout.is_finite() || a.timeout <= 0.0 {
        return Err(DemoError::Usage(format!(
            "--timeout {}: not a duration",
            a.timeout
        )));
    }
    let url = base_url(&a.url)?;
    let url = if url.matches('/').count() < 3 {
        format!("{url}/")
    } else {
        url
    };
    let client = Client::new(Duration::from_secs_f64(a.timeout));
    match client.get(&url).await {
        Ok(body) => {
            let mut out = std::io::stdout();
            out.write_all(&body)?;
            out.flush()?;
            Ok(0)
        }
        Err(e) => {
            eprintln!("fetch: {e}");
            Ok(1)
        }
    }
}
