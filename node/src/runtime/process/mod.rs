//! The process runtime (in progress).

/// Arguments of the per-container supervisor.
#[derive(Debug, clap::Args)]
pub struct ShimArgs {
    /// The container's state directory.
    dir: std::path::PathBuf,
}

/// Runs the supervisor.
pub fn shim_main(args: ShimArgs) -> i32 {
    eprintln!("process-shim: not yet available ({})", args.dir.display());
    1
}
