//! `kommit validate [--repo DIR] [--path P] [REV]`.

use std::process::ExitCode;

use kommit_desired::{LoadError, Snapshot, open_repository};

use crate::desired_args::{EXIT_INVALID, EXIT_OK, RepoArgs, fail};

/// Arguments of `kommit validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    repo: RepoArgs,
    /// The commit to validate: branch, tag or commit id.
    #[arg(default_value = "HEAD")]
    rev: String,
}

/// Validates one commit: 0 valid, 1 invalid (every error printed), 2 usage or repository error.
pub fn run(args: &Args) -> ExitCode {
    let repo = match open_repository(&args.repo.repo) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    match Snapshot::load(&repo, &args.rev, &args.repo.load_options()) {
        Ok(s) => {
            let (objects, files) = (s.objects.len(), s.files().count());
            println!(
                "commit {} is valid: {objects} object{} in {files} file{}",
                s.commit.to_hex_with_len(12),
                if objects == 1 { "" } else { "s" },
                if files == 1 { "" } else { "s" }
            );
            ExitCode::from(EXIT_OK)
        }
        Err(LoadError::Rejected(r)) => {
            for e in &r.errors {
                println!("{e}");
            }
            let n = r.errors.len();
            println!(
                "commit {} is rejected: {n} error{}",
                r.commit.to_hex_with_len(12),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::from(EXIT_INVALID)
        }
        Err(e) => fail(e),
    }
}
