//! The executor: reads observed state from the cache, runs the controllers, applies their
//! actions as compare-and-swap transactions, and loops on watch events, requeues and
//! back-off.
//!
//! - Values are the JSON of the k8s-openapi object under its etcd key
//!   ([`ObjectKey::to_key`]); `metadata.resourceVersion` is not stored (as the API
//!   server does not store it) but set from the key's `mod_revision` on every read.
//! - [`Action::Create`] compares `create_revision == 0`; [`Action::Update`] and
//!   [`Action::WriteStatus`] compare `mod_revision` with the object's resourceVersion
//!   (a status record without one must not exist yet); [`Action::Delete`] compares the
//!   given `mod_revision` and counts a key already gone as done. A failed compare is a
//!   conflict: the write is dropped and the controllers run again on fresh state.
//! - Actions of one pass are applied in order; consecutive actions on distinct keys are
//!   sent together so the cache can commit them in one group.
//! - [`Executor::run`] is level-triggered: any change under `/registry/` (other than
//!   Events), a new desired revision, the earliest requeue, or a back-off timer starts a
//!   new pass over everything.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kommit_cache::{
    Cache, Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, WatchRequest,
};
use tokio::sync::watch;

use crate::action::{Action, ReconcileError, Requeue, error_policy};
use crate::context::Context;
use crate::controllers::{Config, reconcile_all};
use crate::keys::{self, ObjectKey};
use crate::object::Object;
use crate::state::{Desired, Observed};

/// Where the executor gets the time (injectable for tests).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // Seconds since 1970 fit a Timestamp until the year 9999.
        Timestamp::new(since.as_secs() as i64, since.subsec_nanos() as i32)
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

/// Failures talking to the cache.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The cache refused or failed.
    #[error("cache: {0}")]
    Cache(#[from] kommit_cache::Error),
    /// An action's object has no valid key.
    #[error(transparent)]
    Object(#[from] crate::object::ObjectError),
}

/// What became of one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Written at this revision (deletes of keys already gone report the current one).
    Done(i64),
    /// The compare failed: someone else wrote the key since it was read.
    Conflict,
}

/// What one pass did.
#[derive(Debug, Default, Clone)]
pub struct PassReport {
    /// Revision the observed state was read at.
    pub read_revision: i64,
    /// Actions the controllers asked for.
    pub actions: usize,
    /// Actions written.
    pub applied: usize,
    /// Actions dropped on a compare failure.
    pub conflicts: usize,
    /// Events not written (their write conflicted, or the event name was taken).
    pub events_dropped: usize,
    /// Stored values that could not be decoded (skipped), with their keys.
    pub undecodable: Vec<String>,
    /// Objects the controllers could not reconcile.
    pub errors: Vec<(String, ReconcileError)>,
    /// When the controllers want to run again without a change.
    pub requeue: Requeue,
    /// Descriptions of the applied actions (`create Pod default/web-x`), in order.
    pub log: Vec<String>,
}

/// Kinds the controllers read, by etcd prefix.
const READ_KINDS: &[&str] = &[
    "Pod",
    "ReplicaSet",
    "Node",
    "Lease",
    "Namespace",
    "Deployment",
    "Event",
    "Job",
    "CronJob",
    "DaemonSet",
    "Service",
    "Endpoints",
    "EndpointSlice",
];

/// Runs the controllers against a cache.
#[derive(Clone)]
pub struct Executor {
    cache: Cache,
    clock: Arc<dyn Clock>,
    config: Config,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("cache", &self.cache)
            .finish()
    }
}

fn encode(object: &Object) -> Vec<u8> {
    let mut o = object.clone();
    o.metadata_mut().resource_version = None;
    serde_json::to_vec(&o.to_json()).expect("JSON values serialise")
}

impl Executor {
    /// An executor over `cache` with the system clock and default settings.
    pub fn new(cache: Cache) -> Self {
        Executor {
            cache,
            clock: Arc::new(SystemClock),
            config: Config::default(),
        }
    }

    /// Uses another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses other controller settings.
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The cache written to.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Reads every object the controllers need, at one revision. Values that do not
    /// decode are skipped and reported by key.
    pub async fn read_observed(&self) -> Result<(Observed, i64, Vec<String>), ExecError> {
        // One revision for all prefixes: read the first at the current revision and the
        // others at the revision it returned.
        let mut revision = 0;
        let mut objects = Vec::new();
        let mut bad = Vec::new();
        for kind in READ_KINDS {
            let info = keys::by_kind(kind).expect("READ_KINDS are in the resource table");
            let resp = self
                .cache
                .range(RangeRequest::prefix(info.prefix()).with_revision(revision))
                .await?;
            revision = resp.revision;
            for kv in resp.kvs {
                let key = String::from_utf8_lossy(&kv.key).into_owned();
                match Object::from_json(kind, &key, &kv.value) {
                    Ok(mut o) => {
                        o.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
                        objects.push(o);
                    }
                    Err(e) => {
                        tracing::warn!(%key, error = %e, "skipping undecodable object");
                        bad.push(key);
                    }
                }
            }
        }
        Ok((Observed::from_objects(objects), revision, bad))
    }

    /// Applies one action as a transaction with its compare.
    pub async fn apply(&self, action: &Action) -> Result<Applied, ExecError> {
        let (key, compare, op) = match action {
            Action::Create(o) => {
                let key = o.key()?.to_key();
                let cmp = Compare::new(
                    key.clone(),
                    CompareResult::Equal,
                    CompareTarget::CreateRevision(0),
                );
                (
                    key.clone(),
                    cmp,
                    RequestOp::Put(PutRequest::new(key, encode(o))),
                )
            }
            Action::Update(o) | Action::WriteStatus(o) => {
                let key = o.key()?.to_key();
                let cmp = match o.mod_revision() {
                    Some(rev) => Compare::new(
                        key.clone(),
                        CompareResult::Equal,
                        CompareTarget::ModRevision(rev),
                    ),
                    None => Compare::new(
                        key.clone(),
                        CompareResult::Equal,
                        CompareTarget::CreateRevision(0),
                    ),
                };
                (
                    key.clone(),
                    cmp,
                    RequestOp::Put(PutRequest::new(key, encode(o))),
                )
            }
            Action::Delete { key, mod_revision } => {
                let k = key.to_key();
                let op = RequestOp::DeleteRange(DeleteRangeRequest::key(k.clone()));
                match mod_revision {
                    Some(rev) => (
                        k.clone(),
                        Compare::new(k, CompareResult::Equal, CompareTarget::ModRevision(*rev)),
                        op,
                    ),
                    None => {
                        let resp = self.cache.delete_range(DeleteRangeRequest::key(k)).await?;
                        return Ok(Applied::Done(resp.revision));
                    }
                }
            }
        };
        let resp = self
            .cache
            .txn(TxnRequest {
                compare: vec![compare],
                success: vec![op],
                failure: vec![],
            })
            .await?;
        if resp.succeeded {
            return Ok(Applied::Done(resp.revision));
        }
        // A delete whose key is already gone did what it wanted.
        if matches!(action, Action::Delete { .. }) && self.cache.get(key).await?.is_none() {
            return Ok(Applied::Done(resp.revision));
        }
        Ok(Applied::Conflict)
    }

    /// Applies actions: writes in order (consecutive writes on distinct keys go
    /// together), then the events whose write succeeded (see [`Action`]).
    pub async fn apply_all(
        &self,
        actions: &[Action],
        report: &mut PassReport,
    ) -> Result<(), ExecError> {
        let anchors = crate::action::event_anchors(actions);
        let writes: Vec<usize> = (0..actions.len())
            .filter(|&i| !actions[i].is_event())
            .collect();
        let mut ok = vec![false; actions.len()];
        let mut k = 0;
        while k < writes.len() {
            let mut seen: HashSet<Option<ObjectKey>> = HashSet::new();
            let mut end = k;
            while end < writes.len() && seen.insert(actions[writes[end]].key()) {
                end += 1;
            }
            let batch = &writes[k..end];
            let results =
                futures::future::join_all(batch.iter().map(|&i| self.apply(&actions[i]))).await;
            for (&i, r) in batch.iter().zip(results) {
                match r? {
                    Applied::Done(_) => {
                        ok[i] = true;
                        report.applied += 1;
                        report.log.push(actions[i].describe());
                    }
                    Applied::Conflict => {
                        tracing::debug!(action = %actions[i].describe(), "conflict; will retry on fresh state");
                        report.conflicts += 1;
                    }
                }
            }
            k = end;
        }
        let events: Vec<usize> = (0..actions.len())
            .filter(|&i| actions[i].is_event() && anchors[i].is_none_or(|j| ok[j]))
            .collect();
        let results =
            futures::future::join_all(events.iter().map(|&i| self.apply(&actions[i]))).await;
        for (&i, r) in events.iter().zip(results) {
            match r {
                Ok(Applied::Done(_)) => {
                    report.applied += 1;
                    report.log.push(actions[i].describe());
                }
                Ok(Applied::Conflict) | Err(_) => report.events_dropped += 1,
            }
        }
        report.events_dropped += (0..actions.len())
            .filter(|&i| actions[i].is_event())
            .count()
            - events.len();
        Ok(())
    }

    /// One pass: read, reconcile everything, apply.
    pub async fn run_once(&self, desired: &Desired) -> Result<PassReport, ExecError> {
        let (observed, read_revision, undecodable) = self.read_observed().await?;
        let ctx = Context::new(self.clock.now());
        let pass = reconcile_all(&ctx, desired, &observed, &self.config);
        let mut report = PassReport {
            read_revision,
            actions: pass.outcome.actions.len(),
            undecodable,
            errors: pass.errors,
            requeue: pass.outcome.requeue,
            ..Default::default()
        };
        self.apply_all(&pass.outcome.actions, &mut report).await?;
        for line in &report.log {
            tracing::debug!(target: "kommit_reconciler::applied", "{line}");
        }
        Ok(report)
    }

    /// Runs passes until `shutdown` turns true: after any change under `/registry/`
    /// (Events excepted), a new desired state, the earliest requeue, or the back-off of
    /// a failed pass. `on_pass` sees every report (for progress output and tests).
    pub async fn run(
        &self,
        mut desired: watch::Receiver<Arc<Desired>>,
        mut shutdown: watch::Receiver<bool>,
        mut on_pass: impl FnMut(&PassReport) + Send,
    ) -> Result<(), ExecError> {
        let mut watcher = self.cache.watch(WatchRequest::prefix("/registry/"), 0);
        let events_prefix = keys::by_kind("Event")
            .expect("Event is in the resource table")
            .prefix();
        let mut failures: u32 = 0;
        let mut desired_open = true;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let snapshot = desired.borrow_and_update().clone();
            let wait = match self.run_once(&snapshot).await {
                Ok(report) => {
                    on_pass(&report);
                    let retry = report.conflicts > 0 || !report.errors.is_empty();
                    if report.conflicts > 0 {
                        failures += 1;
                        Some(error_policy(
                            &ReconcileError::Conflict(String::new()),
                            failures,
                        ))
                    } else if !retry {
                        failures = 0;
                        match report.requeue {
                            Requeue::AwaitChange => None,
                            Requeue::After(d) => Some(d),
                        }
                    } else {
                        // Invalid objects: only a new revision (or the slow retry) helps.
                        let (_, e) = &report.errors[0];
                        let slow = error_policy(e, 1);
                        Some(match report.requeue {
                            Requeue::After(d) => d.min(slow),
                            Requeue::AwaitChange => slow,
                        })
                    }
                }
                Err(e) => {
                    failures += 1;
                    let back_off = error_policy(&ReconcileError::Store(e.to_string()), failures);
                    tracing::warn!(error = %e, ?back_off, "reconcile pass failed");
                    Some(back_off)
                }
            };
            // Wait for a reason to run again.
            let sleep = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    changed = desired.changed(), if desired_open => {
                        if changed.is_err() {
                            // The desired-state source is gone: keep running on the last one.
                            desired_open = false;
                            continue;
                        }
                        break;
                    }
                    _ = shutdown.changed() => break,
                    batch = watcher.recv() => {
                        match batch {
                            Some(b) if b.canceled => {
                                tracing::warn!(reason = %b.cancel_reason, "watch ended; watching again");
                                watcher = self.cache.watch(WatchRequest::prefix("/registry/"), 0);
                                break;
                            }
                            Some(b) => {
                                let relevant = b.events.iter().any(|e| !e.kv.key.starts_with(events_prefix.as_bytes()));
                                if relevant {
                                    // Let a burst of writes land before the next pass.
                                    tokio::time::sleep(Duration::from_millis(2)).await;
                                    break;
                                }
                            }
                            None => return Ok(()),
                        }
                    }
                }
            }
        }
    }
}
