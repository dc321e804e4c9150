//! `sleep [SECONDS]` and `pause` (the pod sandbox).

use std::time::Duration;

use super::{DemoError, shutdown_signal};

/// Arguments of `sleep`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds to sleep; forever when omitted.
    seconds: Option<f64>,
}

pub async fn run(a: Args) -> Result<i32, DemoError> {
    match a.seconds {
        Some(s) if !s.is_finite() || s < 0.0 => {
            Err(DemoError::Usage(format!("{s} is not a number of seconds")))
        }
        Some(s) => {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(s)) => {}
                _ = shutdown_signal() => {}
            }
            Ok(0)
        }
        None => {
            shutdown_signal().await;
            Ok(0)
        }
    }
}

/// Holds the pod's namespaces until SIGTERM/SIGINT.
pub async fn pause() -> Result<i32, DemoError> {
    shutdown_signal().await;
    Ok(0)
}
