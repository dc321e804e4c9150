//! `exit --code N [--after S]`: a container that exits with a chosen code.

use std::time::Duration;

use super::{DemoError, shutdown_signal};

/// Arguments of `exit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Exit code.
    #[arg(long, default_value_t = 0)]
    code: i32,
    /// Seconds to wait before exiting (fractions allowed).
    #[arg(long, default_value_t = 0.0)]
    after: f64,
}

pub async fn run(a: Args) -> Result<i32, DemoError> {
    if !a.after.is_finite() || a.after < 0.0 {
        return Err(DemoError::Usage(format!(
            "--after {} is not a number of seconds",
            a.after
        )));
    }
    println!("exit: exiting with code {} after {}s", a.code, a.after);
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs_f64(a.after)) => {}
        _ = shutdown_signal() => println!("exit: signalled early"),
    }
    Ok(a.code)
}
