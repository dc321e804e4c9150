//! Request and response types of the in-process API. They mirror etcd's v3 API
//! (`etcdserverpb` / `mvccpb`) field for field; keys and values are bytes.

use bytes::Bytes;

/// A key's state at one revision (etcd's `mvccpb.KeyValue`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    pub key: Bytes,
    /// Revision of the last creation of this key (0 in delete events).
    pub create_revision: i64,
    /// Revision of the last modification of this key.
    pub mod_revision: i64,
    /// Number of modifications since creation (1 after creation; 0 in delete events).
    pub version: i64,
    pub value: Bytes,
    /// Lease attached to the key (0: none).
    pub lease: i64,
}

/// Kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
}

/// One change in the history (etcd's `mvccpb.Event`). For a delete, `kv` carries
/// only the key and the deletion revision as `mod_revision`, as etcd does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventType,
    pub kv: KeyValue,
    /// The key's previous state, when the watch asked for it and it existed.
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// Revision of the change.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// How range results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

/// Which field range results are ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// A key range as etcd spells it: `range_end` empty means the single `key`;
/// `range_end == [0]` means every key `>= key`; otherwise `[key, range_end)`.
/// `prefix_end(p)` gives the end that selects every key starting with `p`.
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    // Every byte was 0xff (or the prefix is empty): the range has no upper bound.
    Bytes::from_static(&[0])
}

/// Range (get) request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeRequest {
    pub key: Bytes,
    pub range_end: Bytes,
    /// At most this many keys (0: no limit).
    pub limit: i64,
    /// Read at this revision (0 or less: the current one).
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

impl RangeRequest {
    /// One key.
    pub fn key(key: impl Into<Bytes>) -> Self {
        RangeRequest {
            key: key.into(),
            ..Default::default()
        }
    }
    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let key: Bytes = prefix.into();
        let (key, range_end) = if key.is_empty() {
            (Bytes::from_static(&[0]), Bytes::from_static(&[0]))
        } else {
            (key.clone(), prefix_end(&key))
        };
        RangeRequest {
            key,
            range_end,
            ..Default::default()
        }
    }
    /// Keys in `[key, range_end)`.
    pub fn range(key: impl Into<Bytes>, range_end: impl Into<Bytes>) -> Self {
        RangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            ..Default::default()
        }
    }
    /// Read at a past revision.
    pub fn with_revision(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }
    /// Return at most `limit` keys.
    pub fn with_limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }
}

/// Answer to a [`RangeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResponse {
    /// The store's revision when the read was served.
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` let through.
    pub more: bool,
    /// Number of keys in the range (ignores `limit`).
    pub count: i64,
}

/// Put request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutRequest {
    pub key: Bytes,
    pub value: Bytes,
    /// Lease to attach (0: none).
    pub lease: i64,
    /// Return the previous state of the key.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

impl PutRequest {
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }
    }
    /// Attach the key to a lease.
    pub fn with_lease(mut self, lease: i64) -> Self {
        self.lease = lease;
        self
    }
    /// Return the previous key-value.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// Answer to a [`PutRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutResponse {
    /// Revision of the put.
    pub revision: i64,
    pub prev_kv: Option<KeyValue>,
}

/// Delete request over a key or range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRangeRequest {
    pub key: Bytes,
    pub range_end: Bytes,
    pub prev_kv: bool,
}

impl DeleteRangeRequest {
    pub fn key(key: impl Into<Bytes>) -> Self {
        DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        }
    }
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let r = RangeRequest::prefix(prefix);
        DeleteRangeRequest {
            key: r.key,
            range_end: r.range_end,
            prev_kv: false,
        }
    }
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// Answer to a [`DeleteRangeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRangeResponse {
    /// The store's revision after the delete (unchanged when nothing was deleted).
    pub revision: i64,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

/// How a compare checks its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompareResult {
    #[default]
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// What a compare checks, with the operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Value(Bytes),
    Lease(i64),
}

/// One guard of a transaction: every key in `[key, range_end)` (or `key` alone)
/// must satisfy `target <result> operand`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Bytes,
    pub range_end: Bytes,
    pub result: CompareResult,
    pub target: CompareTarget,
}

impl Compare {
    pub fn new(key: impl Into<Bytes>, result: CompareResult, target: CompareTarget) -> Self {
        Compare {
            key: key.into(),
            range_end: Bytes::new(),
            result,
            target,
        }
    }
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

/// The answer to one [`RequestOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

/// A transaction: if every compare holds, `success` runs, else `failure`. All of
/// its changes share one revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

/// Answer to a [`TxnRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnResponse {
    /// The store's revision after the transaction.
    pub revision: i64,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

/// Answer to a compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactResponse {
    pub revision: i64,
}

/// Server-side filter of watch events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFilter {
    NoPut,
    NoDelete,
}

/// Watch request: events on `[key, range_end)` from `start_revision` on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchRequest {
    pub key: Bytes,
    pub range_end: Bytes,
    /// First revision to deliver (inclusive); 0 or less: the next revision.
    pub start_revision: i64,
    /// Send an empty response now and then (every `Options::progress_notify_interval`)
    /// when the watcher is idle and caught up, so the client learns the revision.
    pub progress_notify: bool,
    pub filters: Vec<WatchFilter>,
    /// Attach the previous key-value to each event.
    pub prev_kv: bool,
}

impl WatchRequest {
    pub fn key(key: impl Into<Bytes>) -> Self {
        WatchRequest {
            key: key.into(),
            ..Default::default()
        }
    }
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let r = RangeRequest::prefix(prefix);
        WatchRequest {
            key: r.key,
            range_end: r.range_end,
            ..Default::default()
        }
    }
    pub fn from_revision(mut self, rev: i64) -> Self {
        self.start_revision = rev;
        self
    }
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// One batch delivered to a watcher. Events are in revision order, never split
/// inside one revision. A response with no events and not canceled is a progress
/// notification: every event up to `revision` has been delivered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchResponse {
    pub watch_id: i64,
    /// Every event with a revision `<=` this one has been delivered.
    pub revision: i64,
    pub events: Vec<Event>,
    /// The watcher ended: no further responses follow.
    pub canceled: bool,
    /// Set when the watcher ended because the revisions it needed were compacted.
    pub compact_revision: i64,
    pub cancel_reason: String,
}

impl WatchResponse {
    /// A response with no events that is not a cancellation.
    pub fn is_progress_notify(&self) -> bool {
        self.events.is_empty() && !self.canceled
    }
}

/// Answer to a lease grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseGrantResponse {
    pub revision: i64,
    pub id: i64,
    /// The TTL granted (raised to the minimum TTL when asked for less).
    pub ttl: i64,
}

/// Answer to a lease keep-alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseKeepAliveResponse {
    pub revision: i64,
    pub id: i64,
    pub ttl: i64,
}

/// Answer to a lease time-to-live query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseTimeToLiveResponse {
    pub revision: i64,
    pub id: i64,
    /// Remaining seconds (-1: the lease does not exist or expired).
    pub ttl: i64,
    pub granted_ttl: i64,
    /// Keys attached, when asked for.
    pub keys: Vec<Bytes>,
}

/// Numbers about the store, for `etcdctl endpoint status` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    pub revision: i64,
    pub compact_revision: i64,
    /// Bytes of the data directory's files (0 in memory).
    pub db_size: i64,
    /// Bytes of live keys and values.
    pub db_size_in_use: i64,
    /// Number of log records applied since the store was created.
    pub applied_index: u64,
    pub member_id: u64,
    pub cluster_id: u64,
}
