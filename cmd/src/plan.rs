//! `kommit plan [--repo DIR] [--path P] [--format F] BASE..HEAD` (or `BASE HEAD`, or `REV`
//! for what one commit changes against its first parent).

use std::io::IsTerminal;
use std::process::ExitCode;

use kommit_desired::gix;
use kommit_desired::{
    LoadError, LoadOptions, ObjectId, Plan, Snapshot, first_parent, open_repository, plan,
    resolve_commit,
};

use crate::desired_args::{EXIT_INVALID, EXIT_OK, RepoArgs, fail};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For a terminal (coloured when stdout is one).
    Text,
    /// For a pull-request comment (collapsible per object).
    Markdown,
    /// Stable JSON, schema `kommit.plan/v1`.
    Json,
}

/// When to colour text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    /// When stdout is a terminal and NO_COLOR is not set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Arguments of `kommit plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    repo: RepoArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Colour the text format.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
    /// `BASE..HEAD`, or `BASE` followed by HEAD, or one commit (planned against its first parent).
    range: String,
    /// The head commit, when BASE and HEAD are given as two arguments.
    head: Option<String>,
}

fn parse_range(args: &Args) -> Result<(Option<String>, String), String> {
    match (args.range.split_once(".."), &args.head) {
        (Some(_), Some(_)) => Err("give either BASE..HEAD or BASE HEAD, not both".to_owned()),
        (Some((b, h)), None) => {
            if b.is_empty() || h.is_empty() || h.starts_with('.') {
                return Err(format!("`{}` is not a range BASE..HEAD", args.range));
            }
            Ok((Some(b.to_owned()), h.to_owned()))
        }
        (None, Some(h)) => Ok((Some(args.range.clone()), h.clone())),
        (None, None) => Ok((None, args.range.clone())),
    }
}

/// Plans a commit range: 0 valid, 1 invalid head, 2 usage or repository error.
pub fn run(args: &Args) -> ExitCode {
    let (base_rev, head_rev) = match parse_range(args) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let repo = match open_repository(&args.repo.repo) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let options = args.repo.load_options();
    let head = match resolve_commit(&repo, &head_rev) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let base = match base_rev {
        Some(b) => match resolve_commit(&repo, &b) {
            Ok(id) => Some(id),
            Err(e) => return fail(e),
        },
        None => first_parent(&repo, head),
    };
    let base_snapshot = match base.map(|b| load_base(&repo, b, &options)).transpose() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let p = match Snapshot::load_commit(&repo, head, &options, base_snapshot.as_ref()) {
        Ok(new) => plan(base_snapshot.as_ref(), &new),
        Err(LoadError::Rejected(r)) => Plan::rejected(base, &r),
        Err(e) => return fail(e),
    };
    let color = match args.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let out = match args.format {
        Format::Text => p.render_text(color),
        Format::Markdown => p.render_markdown(),
        Format::Json => p.render_json(),
    };
    print!("{out}");
    ExitCode::from(if p.is_valid() { EXIT_OK } else { EXIT_INVALID })
}

/// The base snapshot; an invalid base still gives the objects it has, with a warning.
fn load_base(
    repo: &gix::Repository,
    base: ObjectId,
    options: &LoadOptions,
) -> Result<Snapshot, LoadError> {
    match Snapshot::load_commit(repo, base, options, None) {
        Ok(s) => Ok(s),
        Err(LoadError::Rejected(r)) => {
            eprintln!(
                "kommit: warning: the base commit {} is itself invalid ({} errors); planning against the objects it has",
                base.to_hex_with_len(12),
                r.errors.len()
            );
            Ok(*r.partial)
        }
        Err(e) => Err(e),
    }
}
