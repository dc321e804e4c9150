//! Options shared by the commands that read desired state from a repository.

use std::path::PathBuf;
use std::process::ExitCode;

use kommit_desired::LoadOptions;

/// Exit code: the commit is valid / the command succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit code: the commit is invalid.
pub const EXIT_INVALID: u8 = 1;
/// Exit code: usage or repository error.
pub const EXIT_ERROR: u8 = 2;

/// Where the manifests are.
#[derive(Debug, clap::Args)]
pub struct RepoArgs {
    /// The Git repository (bare or with a work tree; a folder inside one works too).
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub repo: PathBuf,
    /// Folder of the manifests inside the repository (default: the whole tree).
    #[arg(long, default_value = "", value_name = "P")]
    pub path: String,
    /// The range Services' cluster IPs must come from (as `kommit up --service-cidr`).
    #[arg(long, value_name = "CIDR", default_value = "198.19.0.0/16")]
    pub service_cidr: kommit_desired::ServiceCidr,
}

impl RepoArgs {
    /// Load options for these arguments.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            service_cidr: self.service_cidr,
            ..LoadOptions::with_path(&self.path)
        }
    }
}

/// Prints a usage or repository error and returns exit code 2.
pub fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("kommit: error: {e}");
    ExitCode::from(EXIT_ERROR)
}
