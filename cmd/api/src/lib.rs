//! kommit's read-only Kubernetes API: real `kubectl` reads the cluster.
//!
//! The API serves desired objects (spec at the applied revision, from Git) merged with
//! their observed status (from the cache), and the objects the cluster makes (Pods,
//! ReplicaSets, Nodes, Events, Leases, Endpoints, Namespaces). Every write is refused
//! with `405 MethodNotAllowed` and a message naming the Git repository, branch and the
//! file that declares the object: Git is the only writer of desired state.
//!
//! # Using it
//!
//! ```no_run
//! # async fn f(state: kommit_api::ApiState) -> Result<(), kommit_api::ServeError> {
//! let config = kommit_api::ServeConfig::new("/var/lib/kommit".into());
//! let server = kommit_api::Server::bind(config, state).await?; // makes CA, cert, admin token
//! println!("API at {}", server.url());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! or [`serve`] in one call. [`kubeconfig`] prints a kubeconfig (server, CA, admin token)
//! from the data directory. [`app`] is the axum `Router` alone (no TLS), for tests.
//!
//! - Input: [`ApiState`]: the cache, a `watch` channel of the applied revision
//!   ([`AppliedRevision`]: commit, repository, branch, snapshot) and an optional
//!   [`LogSource`] for `kubectl logs`.
//! - TLS ([`pki`]): a CA and serving certificate made at first start in `<data>/pki/`.
//! - Authentication ([`auth`]): bearer tokens, kept hashed in `<data>/tokens`; anonymous
//!   and unknown tokens get 401 with a `Status` body.
//! - Discovery ([`discovery`]): `/version`, `/api`, `/apis`, `/api/v1`, `/apis/G/V`, plain
//!   and aggregated (`apidiscovery.k8s.io/v2`); verbs get, list, watch; short names and
//!   the `all` category. Besides Kubernetes' kinds, kommit's own `kommit.dev/v1`
//!   `commits` (short name `kc`): the rollout record of every commit, from the cache.
//! - Reads ([`objects`]): GET and LIST, namespaced and cluster-wide, label and field
//!   selectors ([`select`]), `limit`/`continue`, resourceVersion from the cache revision,
//!   `Table` output ([`table`]) with kubectl's columns, JSON or YAML.
//! - WATCH ([`mod@watch`]): events from the cache, Table form when asked; 410 Gone for a
//!   compacted resourceVersion. [`active_watches`] counts running watch tasks.
//! - `pods/log` through the [`LogSource`] (`limitBytes` applied here; `sinceSeconds`,
//!   `sinceTime` and `timestamps` ignored).
//! - OpenAPI v3 ([`openapi`]), as kube-apiserver serves it, so that `kubectl explain`
//!   works: `/openapi/v3` lists the served group-versions, `/openapi/v3/api/v1` and
//!   `/openapi/v3/apis/G/V` are OpenAPI 3.0 documents with every schema reachable from
//!   the served kinds (Kubernetes' from k8s-openapi, kommit's `Commit` written here).
//!   `/openapi/v2` is a valid document without definitions (JSON or kubectl's protobuf),
//!   so that `kubectl apply` skips client-side validation and shows the server's refusal.

pub mod auth;
pub mod discovery;
mod handler;
mod kubeconfig;
pub mod objects;
pub mod openapi;
pub mod pki;
pub mod select;
mod serve;
pub mod status;
pub mod table;
pub mod watch;

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;

pub use auth::Tokens;
pub use handler::app;
pub use kubeconfig::{KubeconfigError, kubeconfig};
pub use serve::{DEFAULT_LISTEN, ServeConfig, ServeError, Server, serve};
pub use status::ApiError;
pub use watch::active_watches;

/// The revision of desired state the cluster runs.
#[derive(Debug, Clone)]
pub struct AppliedRevision {
    /// The applied commit (hex).
    pub commit: String,
    /// Where desired state lives (URL or path), shown in refusals.
    pub repository: String,
    /// The tracked branch.
    pub branch: String,
    /// The validated snapshot of that commit.
    pub snapshot: Arc<kommit_desired::Snapshot>,
}

/// What `kubectl logs` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRequest {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod UID (the runtime's handle on the pod).
    pub uid: String,
    /// Container name (resolved: the pod's only container when not given).
    pub container: String,
    /// Keep streaming (`-f`).
    pub follow: bool,
    /// Only the last lines (`--tail`).
    pub tail_lines: Option<i64>,
    /// The previous instance of the container (`--previous`).
    pub previous: bool,
}

/// A stream of log bytes.
pub type LogStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Why logs cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The runtime has no such container (or no previous instance).
    #[error("{0}")]
    NotFound(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Where container logs come from (the node agent's runtime).
#[async_trait::async_trait]
pub trait LogSource: Send + Sync {
    /// Opens the log of one container.
    async fn logs(&self, request: LogRequest) -> Result<LogStream, LogError>;
}

/// Everything the API reads.
#[derive(Clone)]
pub struct ApiState {
    /// Observed state.
    pub cache: kommit_cache::Cache,
    /// The applied revision (None before the first commit is applied).
    pub applied: tokio::sync::watch::Receiver<Option<Arc<AppliedRevision>>>,
    /// Container logs (None: `kubectl logs` answers that logs are not available).
    pub logs: Option<Arc<dyn LogSource>>,
}
