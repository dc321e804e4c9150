//! Desired state from Git: a commit of Kubernetes manifests, loaded, validated and planned.
//!
//! # Loading and validating a commit
//!
//! ```no_run
//! use kommit_desired::{LoadError, LoadOptions, Snapshot, open_repository};
//! # fn main() -> Result<(), LoadError> {
//! let repo = open_repository(std::path::Path::new("."))?;
//! match Snapshot::load(&repo, "main", &LoadOptions::with_path("manifests")) {
//!     Ok(snapshot) => println!("{} objects at {}", snapshot.objects.len(), snapshot.commit),
//!     Err(LoadError::Rejected(r)) => {
//!         for e in &r.errors {
//!             eprintln!("{e}"); // path:line:column: field.path: message
//!         }
//!     }
//!     Err(other) => eprintln!("{other}"), // repository problem: not the commit's fault
//! }
//! # Ok(()) }
//! ```
//!
//! - [`open_repository`] opens a bare or non-bare repository; [`resolve_commit`] turns a
//!   branch, tag or id into a commit.
//! - [`Snapshot::load`] / [`Snapshot::load_commit`] read every `.yaml`/`.yml`/`.json`
//!   file under [`LoadOptions::path`] straight from Git objects (never the work tree),
//!   skipping files and folders whose name starts with `.`. With a previous snapshot,
//!   only blobs whose tree entries changed are read again (unchanged folders are
//!   recognised by their tree id).
//! - A [`Snapshot`] is validated: [`Snapshot::objects`] maps each [`ObjectKey`] to an
//!   `Arc<`[`DesiredObject`]`>` holding the typed [`Object`] (k8s-openapi types; the library
//!   picks no API version: the binary enables one) and its [`Provenance`] (file, document
//!   index, line, last commit that changed the file).
//! - A commit with any error is [`LoadError::Rejected`]: the [`Rejection`] holds every
//!   [`ValidationError`], sorted, displayed as `path:line:column: field.path: message`,
//!   and a `partial` snapshot (never to be applied; useful for plans and as the
//!   `previous` of the next load). Other [`LoadError`] variants are about the repository
//!   or the request (missing ref, empty repository, missing or corrupt object).
//!
//! What is checked: YAML syntax (tabs, duplicate keys), UTF-8 text, file size
//! ([`DEFAULT_MAX_FILE_BYTES`], 4 MiB), symlinks and submodules (errors: they are not
//! followed), known kinds (see [`KINDS`]; `v1 List` is expanded), the Kubernetes schema
//! (unknown fields, wrong types, missing required fields), formats (DNS-1123 names,
//! label keys and values, ports and port names, quantities, cron schedules, rollout
//! budgets), and across objects: duplicates, undeclared namespaces (other than
//! [`BUILTIN_NAMESPACES`]), selectors that do not match their template, ConfigMap and
//! Secret references (names and keys) unless `optional: true`, and Service target ports
//! named but declared by no selected pod template.
//!
//! # Plans
//!
//! [`plan()`] compares two snapshots: objects added, changed (with a unified diff of
//! their YAML, keys sorted so reordering is no change) and removed, and the rollout
//! each change causes. [`Plan::render_text`], [`Plan::render_markdown`] and
//! [`Plan::render_json`] print it; the JSON schema is documented in [`plan::json`].
//!
//! # Watching a ref
//!
//! [`watch::RefWatcher`] reports each new commit of a tracked ref of a local repository
//! (notify on the ref files, with polling as fallback) or of a remote URL (fetched into
//! a mirror at an interval and on demand) as [`watch::RefEvent`]s on a tokio channel,
//! with `fast_forward: false` for a force-push.

mod checks;
mod cross;
mod error;
pub mod format;
mod object;
mod parse;
pub mod plan;
mod repo;
mod snapshot;
pub mod watch;
pub mod yaml;

pub use cross::{BUILTIN_NAMESPACES, map_selector_matches, selector_matches};
pub use error::{LoadError, Rejection, ValidationError};
/// The gix this crate uses, so callers name the same `gix::Repository`.
pub use gix;
pub use gix::ObjectId;
pub use object::{DesiredObject, KINDS, Object, ObjectKey, PodSpecRef, Provenance, TemplateRef};
pub use plan::{Action, Change, Plan, RolloutStep, normalized_yaml, plan};
pub use repo::{HookRepository, create_repository, first_parent, is_ancestor};
pub use snapshot::{
    DEFAULT_MAX_FILE_BYTES, LoadOptions, ServiceCidr, Snapshot, is_manifest_name, open_repository,
    resolve_commit,
};
