//! Observed state: an etcd-compatible multi-version key-value cache.
//!
//! Everything the cluster makes or measures lives here, keyed like Kubernetes
//! keys etcd (`/registry/<resource>/<namespace>/<name>`), with etcd's semantics:
//!
//! - one global revision; every key has `create_revision`, `mod_revision` and
//!   `version`; keys and values are bytes;
//! - [`Cache::range`] (one key, a range, a prefix; at a past revision; limit,
//!   count-only, keys-only, sort, revision filters), [`Cache::put`] (prev_kv,
//!   lease, ignore_value / ignore_lease), [`Cache::delete_range`] (prev_kv),
//!   [`Cache::txn`] (compares on value, version, create/mod revision, lease;
//!   success/failure branches of puts, deletes, ranges and nested txns; one
//!   revision for the whole txn);
//! - [`Cache::watch`] from any retained revision over a key or range: events in
//!   revision order, each exactly once, prev_kv on request, progress
//!   notifications, filters; a watch from a compacted revision ends with a
//!   canceled response carrying `compact_revision` (etcd's ErrCompacted); a
//!   watcher that blocks too far behind is cancelled with a reason, never
//!   silently skipped (see [`watch`](crate::Watcher));
//! - [`Cache::compact`]; leases ([`Cache::lease_grant`], [`Cache::lease_revoke`],
//!   [`Cache::lease_keep_alive`], [`Cache::lease_time_to_live`],
//!   [`Cache::lease_leases`]) whose expiry deletes the attached keys in one
//!   revision;
//! - errors are typed ([`Error`]), one variant per etcd error class, with the
//!   exact etcd wire text in [`Error::etcd_message`].
//!
//! # Durability
//!
//! [`Cache::open`] keeps the store in a data directory as a write-ahead log plus
//! a snapshot (see the `wal` module's notes for the file format). Every
//! acknowledged write was `fdatasync`ed first; concurrent writers share fsyncs
//! (group commit). A restart replays the log and keeps every acknowledged write
//! and the revision counter. Leases get their full TTL again after a restart
//! (as in etcd: remaining time is not persisted). The whole retained history is
//! held in memory (as etcd keeps its index in memory); compaction frees it.
//!
//! Why a WAL of our own rather than an embedded B-tree engine (redb, sled):
//! the store is append-only by nature (every write is a new revision), the
//! in-memory MVCC index serves reads, so the disk only needs an ordered,
//! checksummed log and periodic snapshots. One sequential `write` + one
//! `fdatasync` per group of requests is the least a durable write can cost;
//! a B-tree engine would add page copies and a second fsync per commit.
//!
//! # The etcd v3 gRPC API
//!
//! [`grpc::serve`] serves a cache as etcd's KV, Watch, Lease, Cluster
//! (MemberList) and Maintenance (Status) services, so `etcdctl` works against
//! it. Other calls answer `Unimplemented` with a message.
//!
//! # Example
//!
//! ```
//! use kommit_cache::{Cache, PutRequest, RangeRequest, WatchRequest};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), kommit_cache::Error> {
//! let cache = Cache::in_memory(); // or Cache::open(dir, Options::default())?
//! let mut watcher = cache.watch(WatchRequest::prefix("/registry/pods/"), 0);
//!
//! let put = cache
//!     .put(PutRequest::new("/registry/pods/default/web-0", r#"{"kind":"Pod"}"#))
//!     .await?;
//! let got = cache.range(RangeRequest::prefix("/registry/pods/default/")).await?;
//! assert_eq!(got.kvs[0].mod_revision, put.revision);
//! assert_eq!(got.kvs[0].version, 1);
//!
//! let batch = watcher.recv().await.expect("the watcher runs");
//! assert_eq!(batch.events[0].kv.key, "/registry/pods/default/web-0");
//! # Ok(())
//! # }
//! ```

mod engine;
mod error;
pub mod grpc;
mod lease;
mod mvcc;
mod types;
mod wal;
mod watch;

pub use engine::{Cache, MAX_LEASE_TTL, Options};
pub use error::{Error, ErrorCode, OpenError};
pub use types::*;
pub use watch::{CANCELED_BY_CLIENT, Watcher};
