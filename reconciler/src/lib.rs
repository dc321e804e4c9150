//! Scheduler and controllers: pure functions of desired and observed state, and their executor.
//!
//! # Shape
//!
//! Every controller is a function `(&Context, desired, &Observed) -> Reconciled`:
//! [`Context`] injects the clock and the name/UID generator, [`Desired`] holds plain
//! k8s-openapi objects from Git at the applied revision, [`Observed`] holds what the
//! cache has (each object's `metadata.resourceVersion` = its key's `mod_revision`).
//! The outcome, [`Reconciled`], lists [`Action`]s — create / update / delete of an
//! observed object, or the status record of a desired object — each carrying the
//! `mod_revision` it expects, and a [`Requeue`] (as kube-rs' `Action::requeue`).
//! Failures are [`ReconcileError`]s with a back-off from [`error_policy`].
//!
//! | module | what |
//! | --- | --- |
//! | [`deployment`] | Deployment → ReplicaSets: RollingUpdate (maxSurge/maxUnavailable), Recreate, rollover, proportional scaling, minReadySeconds, progressDeadlineSeconds, revisionHistoryLimit, status |
//! | [`replicaset`] | ReplicaSet → Pods: create/delete to the count, deletion ranking, replacement, status |
//! | [`job`] | Job → Pods: completions, parallelism, Indexed, backoffLimit, activeDeadlineSeconds, ttlSecondsAfterFinished, suspend, status and conditions |
//! | [`cronjob`] | CronJob → Jobs on a cron schedule (clock from the context): concurrencyPolicy, suspend, startingDeadlineSeconds, history limits |
//! | [`daemonset`] | DaemonSet → one pod per eligible node (selector, affinity, taints), RollingUpdate (maxUnavailable/maxSurge), OnDelete, status |
//! | [`bare`] | bare Pods, ReplicaSets and Namespaces from Git copied to observed state |
//! | [`gc`] | garbage collector (owner gone from the revision → ReplicaSets, then pods) and pod GC |
//! | [`service`] | Services: cluster IP and node port allocation, Endpoints and EndpointSlices from ready pods |
//! | [`scheduler`] | filters, scores, binding, `FailedScheduling` |
//! | [`nodelifecycle`] | lease → Ready=Unknown after 40 s, taints, eviction after 5 min |
//! | [`rollout`] | rollout records: desired + observed → per-object progress and health, a commit's record (Progressing → Converged / Failed / Superseded, or Rejected) |
//! | [`events`] | core/v1 Events with Kubernetes' reasons |
//! | [`keys`] | `/registry/<resource>/<namespace>/<name>` layout, kind ↔ resource |
//! | [`controllers`] | [`reconcile_all`]: every controller once over one snapshot |
//! | [`executor`] | applies actions to the cache as compare-and-swap txns; the watch/requeue/back-off loop |
//! | [`memory`] | an in-memory store applying actions with compare-and-swap (simulations) |
//!
//! # Using it
//!
//! ```text
//! let ctx = Context::new(jiff::Timestamp::now());
//! let pass = reconcile_all(&ctx, &desired, &observed, &Config::default());
//! for action in &pass.outcome.actions { /* apply as a txn comparing mod_revision */ }
//! ```
//!
//! Desired objects need no UID: a stable one is derived from kind, namespace and name
//! ([`meta::desired_uid`]) unless `metadata.uid` is set; `metadata.generation`, when set,
//! becomes `status.observedGeneration` (default 1).

pub mod action;
pub mod bare;
pub mod context;
pub mod controllers;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod events;
pub mod executor;
pub mod gc;
pub mod hash;
pub mod job;
pub mod keys;
pub mod memory;
pub mod meta;
pub mod nodelifecycle;
pub mod object;
pub mod podutil;
pub mod quantity;
pub mod replicaset;
pub mod rollout;
pub mod scheduler;
pub mod service;
pub mod state;

pub use action::{Action, ReconcileError, Reconciled, Requeue, error_policy};
pub use context::Context;
pub use controllers::{Config, Pass, reconcile_all};
pub use keys::ObjectKey;
pub use object::Object;
pub use state::{Desired, Observed};
