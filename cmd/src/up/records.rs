//! Rollout records: every commit `kommit up` detects gets a `kommit.dev/v1` `Commit`
//! record in the cache at `/registry/commits/<sha>` (see
//! [`kommit_reconciler::rollout`]): rejected commits with their errors, applied ones with
//! the objects they change and their rollout's progress until it converges, fails or is
//! superseded by a newer commit. `kommit status` and `kubectl get commits` read them.
//!
//! One task writes every record, in the order commits were detected, so a rollout's
//! last progress can never overwrite its "Superseded".

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kommit_cache::{Cache, PutRequest, WatchRequest};
use kommit_desired::Plan;
use kommit_desired::gix::Repository;
use kommit_reconciler::Desired;
use kommit_reconciler::executor::{Clock, SystemClock};
use kommit_reconciler::rollout::{
    ChangedObject, CommitRecord, CommitSpec, RECORD_PREFIX, RolloutState, assess, record_key,
};
use tokio::sync::{mpsc, watch};

use super::progress;

/// Name of the file in the data directory that holds the etcd API's address
/// (`127.0.0.1:2379`), for `kommit status`.
pub const ETCD_ENDPOINT_FILE: &str = "etcd-endpoint";

enum Command {
    Applied {
        spec: CommitSpec,
        changes: Vec<ChangedObject>,
        desired: Arc<Desired>,
    },
    Resumed {
        commit: String,
        desired: Arc<Desired>,
    },
    Rejected {
        spec: CommitSpec,
        errors: Vec<String>,
    },
}

/// The handle `kommit up` tells about commits.
#[derive(Clone)]
pub struct Records {
    tx: mpsc::UnboundedSender<Command>,
}

fn now() -> Timestamp {
    SystemClock.now()
}

/// Who made `commit` and what it says, read from `repo`.
pub fn commit_spec(
    repo: &Repository,
    commit: kommit_desired::ObjectId,
    branch: &str,
    previous: Option<kommit_desired::ObjectId>,
) -> CommitSpec {
    let mut spec = CommitSpec {
        commit: commit.to_string(),
        branch: branch.to_owned(),
        previous: previous.map(|p| p.to_string()),
        ..CommitSpec::default()
    };
    if let Ok(c) = repo.find_commit(commit) {
        if let Ok(a) = c.author() {
            spec.author = format!("{} <{}>", a.name, a.email);
        }
        if let Ok(m) = c.message_raw() {
            spec.message = String::from_utf8_lossy(m).trim_end().to_owned();
        }
        if let Ok(t) = c.time()
            && let Ok(ts) = Timestamp::from_second(t.seconds)
        {
            spec.committed = Some(Time(ts));
        }
    }
    spec
}

/// The objects a plan changes, with what the rollout does to each.
pub fn changes(plan: &Plan) -> Vec<ChangedObject> {
    plan.changes
        .iter()
        .map(|c| ChangedObject {
            action: format!("{:?}", c.action),
            kind: c.key.kind.to_string(),
            namespace: c.key.namespace.as_deref().unwrap_or("").to_owned(),
            name: c.key.name.to_string(),
            summary: plan
                .rollout
                .iter()
                .find(|s| s.key == c.key)
                .map(|s| s.summary.clone())
                .unwrap_or_default(),
        })
        .collect()
}

impl Records {
    /// Starts the writer; it stops with `shutdown`.
    pub fn start(
        cache: Cache,
        shutdown: watch::Receiver<bool>,
    ) -> (Records, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            if let Err(e) = run(cache, rx, shutdown).await {
                tracing::error!("rollout records stopped: {e:#}");
            }
        });
        (Records { tx }, task)
    }

    /// A commit was applied: the rollout in progress (if any) is superseded and this
    /// one's starts.
    pub fn applied(&self, spec: CommitSpec, changes: Vec<ChangedObject>, desired: Arc<Desired>) {
        let _ = self.tx.send(Command::Applied {
            spec,
            changes,
            desired,
        });
    }

    /// `kommit up` restarted on an applied commit: its rollout goes on being followed.
    pub fn resumed(&self, commit: String, desired: Arc<Desired>) {
        let _ = self.tx.send(Command::Resumed { commit, desired });
    }

    /// A commit was rejected with these errors.
    pub fn rejected(&self, spec: CommitSpec, errors: Vec<String>) {
        let _ = self.tx.send(Command::Rejected { spec, errors });
    }
}

async fn put(cache: &Cache, record: &CommitRecord) -> anyhow::Result<()> {
    let value = serde_json::to_vec(record).context("encoding a commit record")?;
    cache
        .put(PutRequest::new(record.key(), value))
        .await
        .with_context(|| format!("writing {}", record.key()))?;
    Ok(())
}

async fn read(cache: &Cache, commit: &str) -> anyhow::Result<Option<CommitRecord>> {
    let kv = cache.get(record_key(commit)).await?;
    Ok(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
}

async fn run(
    cache: Cache,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut watcher = cache.watch(WatchRequest::prefix("/registry/"), 0);
    let mut current: Option<(CommitRecord, Arc<Desired>)> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return Ok(()) };
                match cmd {
                    Command::Applied { spec, changes, desired } => {
                        if let Some((mut old, _)) = current.take()
                            && old.supersede(&spec.commit, now())
                        {
                            put(&cache, &old).await?;
                            println!(
                                "rollout of {} superseded by {}",
                                old.spec.short(),
                                spec.short()
                            );
                        }
                        let record = CommitRecord::applied(spec, changes, now());
                        put(&cache, &record).await?;
                        current = Some((record, desired));
                    }
                    Command::Resumed { commit, desired } => {
                        current = match read(&cache, &commit).await? {
                            Some(r) if r.status.state.is_final() => None,
                            Some(r) => Some((r, desired)),
                            None => {
                                let spec = CommitSpec { commit, ..CommitSpec::default() };
                                let record = CommitRecord::applied(spec, Vec::new(), now());
                                put(&cache, &record).await?;
                                Some((record, desired))
                            }
                        };
                    }
                    Command::Rejected { spec, errors } => {
                        put(&cache, &CommitRecord::rejected(spec, errors, now())).await?;
                    }
                }
            }
            // A rollout in progress is looked at every second as well: settling is
            // a matter of time, not of a change.
            _ = tokio::time::sleep(Duration::from_secs(1)), if current.is_some() => {}
            batch = watcher.recv() => {
                match batch {
                    Some(b) if !b.canceled => {
                        // Only changes outside the records wake the assessment; bursts
                        // are read once (at most 50 ms later).
                        let mut relevant = b.events.iter().any(|e| !e.kv.key.starts_with(RECORD_PREFIX.as_bytes()));
                        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
                        while let Ok(Some(b)) = tokio::time::timeout_at(deadline, watcher.recv()).await {
                            if b.canceled { break; }
                            relevant |= b.events.iter().any(|e| !e.kv.key.starts_with(RECORD_PREFIX.as_bytes()));
                        }
                        if !relevant { continue; }
                    }
                    _ => watcher = cache.watch(WatchRequest::prefix("/registry/"), 0),
                }
            }
        }
        if let Some((record, desired)) = &mut current {
            match progress::observe(&cache).await {
                Ok(observed) => {
                    if record.observe(&assess(desired, &observed), now()) {
                        put(&cache, record).await?;
                        if record.status.state == RolloutState::Failed {
                            println!(
                                "rollout of {} failed: {}: {}",
                                record.spec.short(),
                                record.status.reason,
                                record.status.message
                            );
                        }
                    }
                }
                Err(e) => tracing::warn!("cannot read the rollout's state: {e}"),
            }
            if record.status.state.is_final() {
                current = None;
            }
        }
    }
}
