//! The [`Cache`] handle and its committer thread.
//!
//! Writes go through one committer thread: it takes every request that arrived
//! while it was busy, applies them in order to the in-memory store, writes their
//! records to the WAL with one `fdatasync`, then publishes the new durable
//! revision and answers. Readers and watchers never see a revision before it is
//! durable: they read the store at the durable revision.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::error::{Error, OpenError};
use crate::mvcc::{self, Limits, Record, Store};
use crate::types::*;
use crate::wal::{DirLock, Wal};
use crate::watch::{self, Watcher};

/// Largest lease TTL accepted, in seconds (etcd's limit).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Settings of a cache. `Options::default()` matches etcd's defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest request (key + value of a put, sum over a txn), in bytes.
    /// etcd's default `--max-request-bytes`: 1.5 MiB.
    pub max_request_bytes: usize,
    /// Most operations in one txn branch (etcd's `--max-txn-ops`: 128).
    pub max_txn_ops: usize,
    /// Leases granted for less get this TTL, in seconds (etcd's is 2 s with its
    /// default election timeout).
    pub min_lease_ttl: i64,
    /// How often an idle watcher that asked for progress notifications gets one
    /// (etcd: 10 minutes).
    pub progress_notify_interval: Duration,
    /// Responses buffered per watcher before it counts as blocked.
    pub watch_buffer: usize,
    /// A blocked watcher (buffer full) that falls this many revisions behind
    /// the store is cancelled with a reason.
    pub watch_max_lag: i64,
    /// Most events per watch response (a revision is never split).
    pub watch_batch_events: usize,
    /// Write a snapshot and empty the WAL when it grows past this many bytes.
    pub snapshot_wal_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            min_lease_ttl: 2,
            progress_notify_interval: Duration::from_secs(600),
            watch_buffer: 256,
            watch_max_lag: 10_000,
            watch_batch_events: 1000,
            snapshot_wal_bytes: 64 * 1024 * 1024,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, Error>>;

enum Cmd {
    Put(PutRequest, Reply<PutResponse>),
    Delete(DeleteRangeRequest, Reply<DeleteRangeResponse>),
    Txn(TxnRequest, Reply<TxnResponse>),
    Compact(i64, Reply<CompactResponse>),
    LeaseGrant {
        id: i64,
        ttl: i64,
        reply: Reply<LeaseGrantResponse>,
    },
    LeaseRevoke(i64, Reply<i64>),
}

/// What readers, watchers and the committer share.
pub(crate) struct Core {
    pub store: RwLock<Store>,
    durable: AtomicI64,
    pub durable_tx: tokio::sync::watch::Sender<i64>,
    pub options: Options,
    pub member_id: u64,
    pub cluster_id: u64,
    failed: Mutex<Option<String>>,
    dir: Option<PathBuf>,
}

impl Core {
    /// The newest revision that is durable (visible to readers and watchers).
    pub fn durable(&self) -> i64 {
        self.durable.load(Ordering::Acquire)
    }

    fn publish(&self, rev: i64) {
        self.durable.store(rev, Ordering::Release);
        self.durable_tx.send_replace(rev);
    }
}

struct Inner {
    core: Arc<Core>,
    tx: mpsc::Sender<Cmd>,
}

/// A handle on the store; clones are cheap and share it. The store (and its
/// committer thread) stops when the last handle is dropped.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("revision", &self.inner.core.durable())
            .finish()
    }
}

impl Cache {
    /// Opens (creating if needed) a durable store in `dir`.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Cache, OpenError> {
        let dir = dir.as_ref();
        let (wal, store, lock) = Wal::open(dir, Instant::now())?;
        let meta = wal.meta();
        Ok(Self::start(
            store,
            Some(wal),
            Some(lock),
            options,
            meta.member_id,
            meta.cluster_id,
            Some(dir.to_path_buf()),
        ))
    }

    /// A store kept in memory only (lost when the last handle drops).
    pub fn in_memory() -> Cache {
        Self::in_memory_with(Options::default())
    }

    /// [`Cache::in_memory`] with settings.
    pub fn in_memory_with(options: Options) -> Cache {
        Self::start(
            Store::new(),
            None,
            None,
            options,
            rand::random::<u64>() | 1,
            rand::random::<u64>() | 1,
            None,
        )
    }

    fn start(
        store: Store,
        wal: Option<Wal>,
        lock: Option<DirLock>,
        options: Options,
        member_id: u64,
        cluster_id: u64,
        dir: Option<PathBuf>,
    ) -> Cache {
        let rev = store.rev;
        let (durable_tx, _) = tokio::sync::watch::channel(rev);
        let core = Arc::new(Core {
            store: RwLock::new(store),
            durable: AtomicI64::new(rev),
            durable_tx,
            options,
            member_id,
            cluster_id,
            failed: Mutex::new(None),
            dir,
        });
        let (tx, rx) = mpsc::channel();
        let c = core.clone();
        std::thread::Builder::new()
            .name("kommit-cache-commit".into())
            .spawn(move || committer(c, wal, lock, rx))
            .expect("the OS can start a thread");
        Cache {
            inner: Arc::new(Inner { core, tx }),
        }
    }

    fn core(&self) -> &Core {
        &self.inner.core
    }

    fn limits(&self) -> Limits {
        let o = &self.core().options;
        Limits {
            max_request_bytes: o.max_request_bytes,
            max_txn_ops: o.max_txn_ops,
        }
    }

    async fn submit<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, Error> {
        if let Some(msg) = self.core().failed.lock().clone() {
            return Err(Error::Storage(msg));
        }
        let (tx, rx) = oneshot::channel();
        self.inner.tx.send(make(tx)).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// The newest revision (every write up to it is durable).
    pub fn current_revision(&self) -> i64 {
        self.core().durable()
    }

    /// The revision history is compacted up to (reads before it fail).
    pub fn compact_revision(&self) -> i64 {
        self.core().store.read().compact_rev
    }

    /// The settings this cache runs with.
    pub fn options(&self) -> &Options {
        &self.core().options
    }

    /// Reads keys (see [`RangeRequest`]).
    pub async fn range(&self, r: RangeRequest) -> Result<RangeResponse, Error> {
        mvcc::check_range(&r)?;
        let store = self.core().store.read();
        store.range(&r, self.core().durable())
    }

    /// Shorthand: the current value of one key.
    pub async fn get(&self, key: impl Into<bytes::Bytes>) -> Result<Option<KeyValue>, Error> {
        Ok(self
            .range(RangeRequest::key(key))
            .await?
            .kvs
            .into_iter()
            .next())
    }

    /// Writes a key: one new revision.
    pub async fn put(&self, p: PutRequest) -> Result<PutResponse, Error> {
        mvcc::check_put(&p, &self.limits())?;
        self.submit(|r| Cmd::Put(p, r)).await
    }

    /// Deletes a key or range: one new revision when anything was deleted.
    pub async fn delete_range(&self, d: DeleteRangeRequest) -> Result<DeleteRangeResponse, Error> {
        mvcc::check_delete(&d)?;
        self.submit(|r| Cmd::Delete(d, r)).await
    }

    /// Runs a transaction: one new revision when it changes anything.
    pub async fn txn(&self, t: TxnRequest) -> Result<TxnResponse, Error> {
        mvcc::check_txn(&t, &self.limits())?;
        self.submit(|r| Cmd::Txn(t, r)).await
    }

    /// Drops history before `revision` (reads and watches from earlier
    /// revisions then fail with [`Error::Compacted`]).
    pub async fn compact(&self, revision: i64) -> Result<CompactResponse, Error> {
        self.submit(|r| Cmd::Compact(revision, r)).await
    }

    /// Grants a lease of `ttl` seconds; `id` 0 lets the store choose the id.
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<LeaseGrantResponse, Error> {
        if ttl > MAX_LEASE_TTL {
            return Err(Error::LeaseTtlTooLarge(ttl));
        }
        let ttl = ttl.max(self.core().options.min_lease_ttl);
        self.submit(|reply| Cmd::LeaseGrant { id, ttl, reply })
            .await
    }

    /// Revokes a lease and deletes its keys (in one revision). Returns the
    /// store's revision after it.
    pub async fn lease_revoke(&self, id: i64) -> Result<i64, Error> {
        self.submit(|r| Cmd::LeaseRevoke(id, r)).await
    }

    /// Restarts a lease's TTL.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeepAliveResponse, Error> {
        let mut store = self.core().store.write();
        match store.lessor.renew(id, Instant::now()) {
            Some(ttl) => Ok(LeaseKeepAliveResponse {
                revision: self.core().durable(),
                id,
                ttl,
            }),
            None => Err(Error::LeaseNotFound(id)),
        }
    }

    /// A lease's remaining and granted TTL and (if `keys`) its keys. A lease
    /// that does not exist answers `ttl == -1`, as etcd does.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, Error> {
        let store = self.core().store.read();
        let revision = self.core().durable();
        let now = Instant::now();
        Ok(match store.lessor.leases.get(&id) {
            Some(l) if l.expiry > now => LeaseTimeToLiveResponse {
                revision,
                id,
                ttl: l.remaining(now).as_secs() as i64,
                granted_ttl: l.ttl,
                keys: if keys {
                    l.keys.iter().cloned().collect()
                } else {
                    Vec::new()
                },
            },
            _ => LeaseTimeToLiveResponse {
                revision,
                id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        })
    }

    /// Every lease's id.
    pub async fn lease_leases(&self) -> Result<Vec<i64>, Error> {
        let store = self.core().store.read();
        let mut ids: Vec<i64> = store.lessor.leases.keys().copied().collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Watches a key or range. Must be called inside a Tokio runtime (the
    /// watcher runs as a task). See [`Watcher`] for what it delivers.
    pub fn watch(&self, req: WatchRequest, watch_id: i64) -> Watcher {
        watch::spawn(self.inner.core.clone(), req, watch_id)
    }

    /// Numbers about the store.
    pub fn status(&self) -> Status {
        let core = self.core();
        let store = core.store.read();
        let (_, in_use) = store.live_size();
        let db_size = core
            .dir
            .as_ref()
            .map(|d| {
                ["snapshot", "wal"]
                    .iter()
                    .map(|f| d.join(f).metadata().map(|m| m.len()).unwrap_or(0))
                    .sum::<u64>()
            })
            .unwrap_or(0);
        Status {
            revision: core.durable(),
            compact_revision: store.compact_rev,
            db_size: db_size as i64,
            db_size_in_use: in_use as i64,
            applied_index: store.applied_index,
            member_id: core.member_id,
            cluster_id: core.cluster_id,
        }
    }
}

enum Done {
    Put(Reply<PutResponse>, Result<PutResponse, Error>),
    Delete(
        Reply<DeleteRangeResponse>,
        Result<DeleteRangeResponse, Error>,
    ),
    Txn(Reply<TxnResponse>, Result<TxnResponse, Error>),
    Compact(Reply<CompactResponse>, Result<CompactResponse, Error>),
    Grant(Reply<LeaseGrantResponse>, Result<LeaseGrantResponse, Error>),
    Revoke(Reply<i64>, Result<i64, Error>),
    Internal,
}

impl Done {
    fn send(self, failure: Option<&Error>) {
        fn out<T>(r: Result<T, Error>, failure: Option<&Error>) -> Result<T, Error> {
            match failure {
                Some(e) => Err(e.clone()),
                None => r,
            }
        }
        // A requester that went away no longer wants its answer.
        match self {
            Done::Put(tx, r) => drop(tx.send(out(r, failure))),
            Done::Delete(tx, r) => drop(tx.send(out(r, failure))),
            Done::Txn(tx, r) => drop(tx.send(out(r, failure))),
            Done::Compact(tx, r) => drop(tx.send(out(r, failure))),
            Done::Grant(tx, r) => drop(tx.send(out(r, failure))),
            Done::Revoke(tx, r) => drop(tx.send(out(r, failure))),
            Done::Internal => {}
        }
    }
}

const MAX_BATCH: usize = 4096;

fn apply(
    store: &mut Store,
    cmd: Cmd,
    recs: &mut Vec<(u64, Record)>,
    compactions: &mut Vec<i64>,
) -> Done {
    let mut keep = |store: &mut Store, rec: Record| {
        if !rec.is_empty() {
            store.applied_index += 1;
            if rec.compact != 0 {
                compactions.push(rec.compact);
            }
            recs.push((store.applied_index, rec));
        }
    };
    match cmd {
        Cmd::Put(p, tx) => {
            let r = store.put(&p).map(|(resp, rec)| {
                keep(store, rec);
                resp
            });
            Done::Put(tx, r)
        }
        Cmd::Delete(d, tx) => {
            let (resp, rec) = store.delete_range(&d);
            keep(store, rec);
            Done::Delete(tx, Ok(resp))
        }
        Cmd::Txn(t, tx) => {
            let r = store.txn(&t).map(|(resp, rec)| {
                keep(store, rec);
                resp
            });
            Done::Txn(tx, r)
        }
        Cmd::Compact(rev, tx) => {
            let r = store.schedule_compact(rev).map(|rec| {
                let revision = rec.revision;
                keep(store, rec);
                CompactResponse { revision }
            });
            Done::Compact(tx, r)
        }
        Cmd::LeaseGrant { id, ttl, reply } => {
            let id = if id != 0 {
                id
            } else {
                loop {
                    let candidate = rand::random::<i64>() & i64::MAX;
                    if candidate != 0 && !store.lessor.contains(candidate) {
                        break candidate;
                    }
                }
            };
            let r = store.lease_grant(id, ttl, Instant::now()).map(|rec| {
                let revision = rec.revision;
                keep(store, rec);
                LeaseGrantResponse { revision, id, ttl }
            });
            Done::Grant(reply, r)
        }
        Cmd::LeaseRevoke(id, tx) => {
            let r = store.lease_revoke(id).map(|rec| {
                let revision = rec.revision;
                keep(store, rec);
                revision
            });
            Done::Revoke(tx, r)
        }
    }
}

fn committer(
    core: Arc<Core>,
    mut wal: Option<Wal>,
    _lock: Option<DirLock>,
    rx: mpsc::Receiver<Cmd>,
) {
    let mut batch: Vec<Cmd> = Vec::new();
    let mut next_expiry = core.store.read().lessor.next_expiry();
    loop {
        let now = Instant::now();
        let wait = next_expiry
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(3600))
            .min(Duration::from_secs(1));
        match rx.recv_timeout(wait) {
            Ok(cmd) => batch.push(cmd),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        let failed = core.failed.lock().clone();
        if let Some(msg) = failed {
            let e = Error::Storage(msg);
            for cmd in batch.drain(..) {
                fail(cmd, &e);
            }
            continue;
        }
        let mut recs: Vec<(u64, Record)> = Vec::new();
        let mut compactions = Vec::new();
        let mut done = Vec::with_capacity(batch.len() + 1);
        let new_rev;
        {
            let mut store = core.store.write();
            // Expired leases are revoked like any other write, in order.
            let now = Instant::now();
            if next_expiry.is_some_and(|t| t <= now) {
                for id in store.lessor.expired(now) {
                    tracing::debug!(lease = id, "lease expired");
                    let (tx, _) = oneshot::channel();
                    apply(
                        &mut store,
                        Cmd::LeaseRevoke(id, tx),
                        &mut recs,
                        &mut compactions,
                    );
                    done.push(Done::Internal);
                }
            }
            for cmd in batch.drain(..) {
                done.push(apply(&mut store, cmd, &mut recs, &mut compactions));
            }
            new_rev = store.rev;
            next_expiry = store.lessor.next_expiry();
        }
        let mut failure = None;
        if let Some(w) = wal.as_mut()
            && !recs.is_empty()
        {
            let refs: Vec<(u64, &Record)> = recs.iter().map(|(i, r)| (*i, r)).collect();
            if let Err(e) = w.append(&refs) {
                let msg = format!("writing the write-ahead log failed: {e}");
                tracing::error!("{msg}; the cache refuses writes from now on");
                *core.failed.lock() = Some(msg.clone());
                failure = Some(Error::Storage(msg));
            }
        }
        if failure.is_none() {
            if !compactions.is_empty() {
                let mut store = core.store.write();
                for c in compactions {
                    store.compact(c);
                }
            }
            if new_rev != core.durable() {
                core.publish(new_rev);
            }
        }
        for d in done {
            d.send(failure.as_ref());
        }
        if failure.is_none()
            && let Some(w) = wal.as_mut()
            && w.size() > core.options.snapshot_wal_bytes
        {
            let store = core.store.read();
            if let Err(e) = w.snapshot(&store) {
                // The WAL still holds everything: keep going, try again later.
                tracing::error!("writing a snapshot failed: {e}");
            }
        }
    }
    tracing::debug!("cache committer stopped");
}

fn fail(cmd: Cmd, e: &Error) {
    match cmd {
        Cmd::Put(_, tx) => drop(tx.send(Err(e.clone()))),
        Cmd::Delete(_, tx) => drop(tx.send(Err(e.clone()))),
        Cmd::Txn(_, tx) => drop(tx.send(Err(e.clone()))),
        Cmd::Compact(_, tx) => drop(tx.send(Err(e.clone()))),
        Cmd::LeaseGrant { reply, .. } => drop(reply.send(Err(e.clone()))),
        Cmd::LeaseRevoke(_, tx) => drop(tx.send(Err(e.clone()))),
    }
}
