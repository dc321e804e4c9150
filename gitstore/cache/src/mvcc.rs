//! The multi-version store: per-key history, the revision-ordered event log, and
//! the semantics of Range, Put, DeleteRange, Txn, Compact and lease revocation.
//!
//! This module is synchronous and knows nothing of durability or threads: the
//! committer (`engine`) applies requests to it one at a time, readers read it at
//! the durable revision.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::time::Instant;

use bytes::Bytes;

use crate::error::Error;
use crate::lease::Lessor;
use crate::types::*;

/// One version of a key: `kv` is `None` for a deletion (tombstone).
#[derive(Debug, Clone)]
pub(crate) struct Rev {
    pub rev: i64,
    pub kv: Option<KeyValue>,
}

/// One key change, as written to the log and the WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub key: Bytes,
    pub kv: Option<KeyValue>,
}

/// Everything one applied request changed: what the WAL stores, and what replay
/// applies again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Record {
    /// The store's revision after this record.
    pub revision: i64,
    /// Key changes, all at `revision`, in order.
    pub changes: Vec<Change>,
    pub lease_grants: Vec<(i64, i64)>,
    pub lease_revokes: Vec<i64>,
    /// Compaction revision (0: none).
    pub compact: i64,
}

impl Record {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.lease_grants.is_empty()
            && self.lease_revokes.is_empty()
            && self.compact == 0
    }
}

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
}

/// A write in progress at revision `rev` (the store's revision + 1).
struct Pending {
    rev: i64,
    changes: Vec<Change>,
}

impl Pending {
    /// The revision a read inside this write sees.
    fn read_rev(&self) -> i64 {
        if self.changes.is_empty() {
            self.rev - 1
        } else {
            self.rev
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    keys: BTreeMap<Bytes, Vec<Rev>>,
    log: VecDeque<Event>,
    /// Latest applied revision (may be ahead of the durable one).
    pub rev: i64,
    /// History before this revision is gone.
    pub compact_rev: i64,
    /// Highest compaction accepted (applied once durable).
    pub scheduled_compact: i64,
    pub lessor: Lessor,
    /// Records applied since the store was created.
    pub applied_index: u64,
}

/// Bounds of a key range in etcd's spelling.
type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

fn bounds<'a>(key: &'a [u8], range_end: &'a [u8]) -> Option<KeyBounds<'a>> {
    if range_end.is_empty() {
        return Some((Bound::Included(key), Bound::Included(key)));
    }
    if range_end == [0] {
        return Some((Bound::Included(key), Bound::Unbounded));
    }
    if range_end <= key {
        return None;
    }
    Some((Bound::Included(key), Bound::Excluded(range_end)))
}

/// Whether `key` lies in etcd's range `(start, range_end)`.
pub(crate) fn in_range(key: &[u8], start: &[u8], range_end: &[u8]) -> bool {
    if range_end.is_empty() {
        return key == start;
    }
    if range_end == [0] {
        return key >= start;
    }
    key >= start && key < range_end
}

fn at(hist: &[Rev], rev: i64) -> Option<&KeyValue> {
    if let Some(last) = hist.last()
        && last.rev <= rev
    {
        return last.kv.as_ref();
    }
    let i = hist.partition_point(|r| r.rev <= rev);
    if i == 0 {
        None
    } else {
        hist[i - 1].kv.as_ref()
    }
}

fn put_size(p: &PutRequest) -> usize {
    p.key.len() + p.value.len() + 16
}

fn txn_size(t: &TxnRequest) -> usize {
    let ops = |ops: &[RequestOp]| -> usize {
        ops.iter()
            .map(|op| match op {
                RequestOp::Put(p) => put_size(p),
                RequestOp::Range(r) => r.key.len() + r.range_end.len() + 16,
                RequestOp::DeleteRange(d) => d.key.len() + d.range_end.len() + 8,
                RequestOp::Txn(t) => txn_size(t),
            })
            .sum()
    };
    let cmp: usize = t
        .compare
        .iter()
        .map(|c| {
            c.key.len()
                + c.range_end.len()
                + match &c.target {
                    CompareTarget::Value(v) => v.len(),
                    _ => 8,
                }
        })
        .sum();
    cmp + ops(&t.success) + ops(&t.failure)
}

/// Static checks of a put (no state needed).
pub(crate) fn check_put(p: &PutRequest, limits: &Limits) -> Result<(), Error> {
    if p.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    let size = put_size(p);
    if size > limits.max_request_bytes {
        return Err(Error::RequestTooLarge {
            size,
            limit: limits.max_request_bytes,
        });
    }
    Ok(())
}

pub(crate) fn check_range(r: &RangeRequest) -> Result<(), Error> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

pub(crate) fn check_delete(d: &DeleteRangeRequest) -> Result<(), Error> {
    if d.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// Static checks of a transaction: sizes, empty keys, and that no key is written
/// twice in one branch (etcd's rule: one revision changes a key at most once).
pub(crate) fn check_txn(t: &TxnRequest, limits: &Limits) -> Result<(), Error> {
    let size = txn_size(t);
    if size > limits.max_request_bytes {
        return Err(Error::RequestTooLarge {
            size,
            limit: limits.max_request_bytes,
        });
    }
    check_txn_inner(t, limits)
}

fn check_txn_inner(t: &TxnRequest, limits: &Limits) -> Result<(), Error> {
    let ops = t.compare.len().max(t.success.len()).max(t.failure.len());
    if ops > limits.max_txn_ops {
        return Err(Error::TooManyOps {
            ops,
            limit: limits.max_txn_ops,
        });
    }
    for c in &t.compare {
        if c.key.is_empty() {
            return Err(Error::EmptyKey);
        }
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Range(r) => check_range(r)?,
            RequestOp::Put(p) => {
                if p.key.is_empty() {
                    return Err(Error::EmptyKey);
                }
                if p.ignore_value && !p.value.is_empty() {
                    return Err(Error::ValueProvided);
                }
                if p.ignore_lease && p.lease != 0 {
                    return Err(Error::LeaseProvided);
                }
            }
            RequestOp::DeleteRange(d) => check_delete(d)?,
            RequestOp::Txn(t) => check_txn_inner(t, limits)?,
        }
    }
    check_intervals(&t.success)?;
    check_intervals(&t.failure)?;
    Ok(())
}

/// The deletes and puts of one branch; an error if a key is put twice or put and
/// deleted in the same branch.
#[allow(clippy::type_complexity)]
fn check_intervals(ops: &[RequestOp]) -> Result<(Vec<(Bytes, Bytes)>, BTreeSet<Bytes>), Error> {
    let mut dels: Vec<(Bytes, Bytes)> = Vec::new();
    let mut puts: BTreeSet<Bytes> = BTreeSet::new();
    for op in ops {
        match op {
            RequestOp::Put(p) if !puts.insert(p.key.clone()) => {
                return Err(Error::DuplicateKey(p.key.clone()));
            }
            RequestOp::DeleteRange(d) => dels.push((d.key.clone(), d.range_end.clone())),
            _ => {}
        }
    }
    for op in ops {
        if let RequestOp::Txn(t) = op {
            let (sd, sp) = check_intervals(&t.success)?;
            let (fd, fp) = check_intervals(&t.failure)?;
            for k in sp.iter().chain(fp.iter()) {
                if puts.contains(k) {
                    return Err(Error::DuplicateKey(k.clone()));
                }
            }
            // The nested branches' puts may overlap each other (only one runs).
            for k in sp.into_iter().chain(fp) {
                puts.insert(k);
            }
            dels.extend(sd);
            dels.extend(fd);
        }
    }
    for (k, end) in &dels {
        if let Some(p) = puts.iter().find(|p| in_range(p, k, end)) {
            return Err(Error::DuplicateKey(p.clone()));
        }
    }
    Ok((dels, puts))
}

fn cmp_i64(a: i64, b: i64) -> std::cmp::Ordering {
    a.cmp(&b)
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match &c.target {
        CompareTarget::Version(v) => cmp_i64(kv.version, *v),
        CompareTarget::CreateRevision(v) => cmp_i64(kv.create_revision, *v),
        CompareTarget::ModRevision(v) => cmp_i64(kv.mod_revision, *v),
        CompareTarget::Lease(v) => cmp_i64(kv.lease, *v),
        CompareTarget::Value(v) => kv.value.as_ref().cmp(v.as_ref()),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

impl Store {
    pub fn new() -> Self {
        Store::default()
    }

    /// Live key-values in a range at `rev`, in key order.
    fn live_in_range<'a>(
        &'a self,
        key: &'a [u8],
        range_end: &'a [u8],
        rev: i64,
    ) -> impl Iterator<Item = &'a KeyValue> + 'a {
        let iter = bounds(key, range_end).map(|b| self.keys.range::<[u8], _>(b));
        iter.into_iter()
            .flatten()
            .filter_map(move |(_, h)| at(h, rev))
    }

    /// Range at the store's revision `current` (the durable one for readers).
    pub fn range(&self, r: &RangeRequest, current: i64) -> Result<RangeResponse, Error> {
        if r.revision > current {
            return Err(Error::FutureRevision {
                requested: r.revision,
                current,
            });
        }
        if r.revision > 0 && r.revision < self.compact_rev {
            return Err(Error::Compacted {
                compact_revision: self.compact_rev,
            });
        }
        let rev = if r.revision <= 0 { current } else { r.revision };
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        let sort_order = if r.sort_target != SortTarget::Key && r.sort_order == SortOrder::None {
            SortOrder::Ascend
        } else {
            r.sort_order
        };
        let fetch_all = sort_order != SortOrder::None || filtered;
        let mut count = 0i64;
        let mut kvs: Vec<KeyValue> = Vec::new();
        let keep = if r.count_only {
            0
        } else if r.limit > 0 && !fetch_all {
            usize::try_from(r.limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
        } else {
            usize::MAX
        };
        for kv in self.live_in_range(&r.key, &r.range_end, rev) {
            count += 1;
            if kvs.len() < keep {
                kvs.push(kv.clone());
            }
        }
        if r.max_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
        }
        if r.min_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
        }
        if r.max_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
        }
        if r.min_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
        }
        if sort_order != SortOrder::None {
            match r.sort_target {
                SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
                SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
                SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
                SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
                SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
            }
            if sort_order == SortOrder::Descend {
                kvs.reverse();
            }
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() as i64 > r.limit {
            kvs.truncate(usize::try_from(r.limit).unwrap_or(usize::MAX));
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value = Bytes::new();
            }
        }
        Ok(RangeResponse {
            revision: current,
            kvs,
            more,
            count,
        })
    }

    /// Writes one key version at `rev` (`None`: deletion), keeping lease
    /// attachments and the event log in step. Used by live writes and replay.
    fn set_key(&mut self, rev: i64, key: Bytes, kv: Option<KeyValue>) {
        let hist = self.keys.entry(key.clone()).or_default();
        let prev = hist.last().and_then(|r| r.kv.clone());
        if let Some(p) = &prev {
            self.lessor.detach(p.lease, &key);
        }
        if let Some(kv) = &kv {
            self.lessor.attach(kv.lease, &key);
        }
        let (kind, ev_kv) = match &kv {
            Some(kv) => (EventType::Put, kv.clone()),
            None => (
                EventType::Delete,
                KeyValue {
                    key: key.clone(),
                    mod_revision: rev,
                    ..Default::default()
                },
            ),
        };
        match hist.last_mut() {
            Some(last) if last.rev == rev => last.kv = kv,
            _ => hist.push(Rev { rev, kv }),
        }
        self.log.push_back(Event {
            kind,
            kv: ev_kv,
            prev_kv: prev,
        });
    }

    fn latest(&self, key: &[u8]) -> Option<&KeyValue> {
        self.keys
            .get(key)
            .and_then(|h| h.last())
            .and_then(|r| r.kv.as_ref())
    }

    fn begin(&self) -> Pending {
        Pending {
            rev: self.rev + 1,
            changes: Vec::new(),
        }
    }

    fn finish(&mut self, p: Pending) -> Record {
        if p.changes.is_empty() {
            return Record {
                revision: self.rev,
                ..Default::default()
            };
        }
        self.rev = p.rev;
        Record {
            revision: p.rev,
            changes: p.changes,
            ..Default::default()
        }
    }

    fn check_put_state(&self, p: &PutRequest) -> Result<(), Error> {
        if (p.ignore_value || p.ignore_lease) && self.latest(&p.key).is_none() {
            return Err(Error::KeyNotFound);
        }
        if p.lease != 0 && !self.lessor.contains(p.lease) {
            return Err(Error::LeaseNotFound(p.lease));
        }
        Ok(())
    }

    fn do_put(&mut self, pend: &mut Pending, p: &PutRequest) -> PutResponse {
        let cur = self.latest(&p.key).cloned();
        let value = match (&cur, p.ignore_value) {
            (Some(c), true) => c.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&cur, p.ignore_lease) {
            (Some(c), true) => c.lease,
            _ => p.lease,
        };
        let (create_revision, version) = match &cur {
            Some(c) => (c.create_revision, c.version + 1),
            None => (pend.rev, 1),
        };
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision,
            mod_revision: pend.rev,
            version,
            value,
            lease,
        };
        self.set_key(pend.rev, p.key.clone(), Some(kv.clone()));
        pend.changes.push(Change {
            key: p.key.clone(),
            kv: Some(kv),
        });
        PutResponse {
            revision: pend.rev,
            prev_kv: if p.prev_kv { cur } else { None },
        }
    }

    fn do_delete(&mut self, pend: &mut Pending, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let victims: Vec<KeyValue> = self
            .live_in_range(&d.key, &d.range_end, i64::MAX)
            .cloned()
            .collect();
        for kv in &victims {
            self.set_key(pend.rev, kv.key.clone(), None);
            pend.changes.push(Change {
                key: kv.key.clone(),
                kv: None,
            });
        }
        DeleteRangeResponse {
            revision: pend.read_rev(),
            deleted: victims.len() as i64,
            prev_kvs: if d.prev_kv { victims } else { Vec::new() },
        }
    }

    /// A single put, as its own revision.
    pub fn put(&mut self, p: &PutRequest) -> Result<(PutResponse, Record), Error> {
        self.check_put_state(p)?;
        let mut pend = self.begin();
        let resp = self.do_put(&mut pend, p);
        Ok((resp, self.finish(pend)))
    }

    /// A delete; no revision when nothing matched.
    pub fn delete_range(&mut self, d: &DeleteRangeRequest) -> (DeleteRangeResponse, Record) {
        let mut pend = self.begin();
        let resp = self.do_delete(&mut pend, d);
        let rec = self.finish(pend);
        (
            DeleteRangeResponse {
                revision: rec.revision,
                ..resp
            },
            rec,
        )
    }

    fn compares_hold(&self, cmps: &[Compare]) -> bool {
        cmps.iter().all(|c| {
            let mut any = false;
            for kv in self.live_in_range(&c.key, &c.range_end, i64::MAX) {
                any = true;
                if !compare_kv(c, kv) {
                    return false;
                }
            }
            if any {
                return true;
            }
            // A missing key compares as a zero key-value, except on value.
            match c.target {
                CompareTarget::Value(_) => false,
                _ => compare_kv(c, &KeyValue::default()),
            }
        })
    }

    /// Evaluates every compare of a transaction, nested ones included, on the
    /// state before it runs (as etcd does): the branch taken at each level.
    fn txn_path(&self, t: &TxnRequest, path: &mut Vec<bool>) {
        let ok = self.compares_hold(&t.compare);
        path.push(ok);
        let ops = if ok { &t.success } else { &t.failure };
        for op in ops {
            if let RequestOp::Txn(n) = op {
                self.txn_path(n, path);
            }
        }
    }

    fn check_txn_state(
        &self,
        t: &TxnRequest,
        path: &[bool],
        at: &mut usize,
        current: i64,
    ) -> Result<(), Error> {
        let ok = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        let ops = if ok { &t.success } else { &t.failure };
        for op in ops {
            match op {
                RequestOp::Put(p) => self.check_put_state(p)?,
                RequestOp::Range(r) => {
                    if r.revision > current {
                        return Err(Error::FutureRevision {
                            requested: r.revision,
                            current,
                        });
                    }
                    if r.revision > 0 && r.revision < self.compact_rev {
                        return Err(Error::Compacted {
                            compact_revision: self.compact_rev,
                        });
                    }
                }
                RequestOp::Txn(n) => self.check_txn_state(n, path, at, current)?,
                RequestOp::DeleteRange(_) => {}
            }
        }
        Ok(())
    }

    fn apply_txn(
        &mut self,
        pend: &mut Pending,
        t: &TxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> Result<TxnResponse, Error> {
        let ok = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        let ops = if ok { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let resp = match op {
                RequestOp::Range(r) => {
                    let cur = pend.read_rev();
                    ResponseOp::Range(self.range(r, cur)?)
                }
                RequestOp::Put(p) => ResponseOp::Put(self.do_put(pend, p)),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.do_delete(pend, d)),
                RequestOp::Txn(n) => ResponseOp::Txn(self.apply_txn(pend, n, path, at)?),
            };
            responses.push(resp);
        }
        Ok(TxnResponse {
            revision: pend.read_rev(),
            succeeded: ok,
            responses,
        })
    }

    /// A transaction, as one revision (none when it changes nothing).
    pub fn txn(&mut self, t: &TxnRequest) -> Result<(TxnResponse, Record), Error> {
        let mut path = Vec::new();
        self.txn_path(t, &mut path);
        self.check_txn_state(t, &path, &mut 0, self.rev)?;
        let mut pend = self.begin();
        let resp = self.apply_txn(&mut pend, t, &path, &mut 0);
        // Every check that can fail ran before the first write.
        let resp = resp.expect("txn checks precede its writes");
        let rec = self.finish(pend);
        Ok((
            TxnResponse {
                revision: rec.revision,
                ..resp
            },
            rec,
        ))
    }

    /// Accepts a compaction (applied with [`Store::compact`] once durable).
    pub fn schedule_compact(&mut self, rev: i64) -> Result<Record, Error> {
        if rev <= self.scheduled_compact {
            return Err(Error::Compacted {
                compact_revision: self.scheduled_compact,
            });
        }
        if rev > self.rev {
            return Err(Error::FutureRevision {
                requested: rev,
                current: self.rev,
            });
        }
        self.scheduled_compact = rev;
        Ok(Record {
            revision: self.rev,
            compact: rev,
            ..Default::default()
        })
    }

    /// Drops the history older than `rev`: each key keeps its latest version at
    /// or before `rev` (unless that is a deletion) and everything after.
    pub fn compact(&mut self, rev: i64) {
        if rev <= self.compact_rev {
            return;
        }
        self.compact_rev = rev;
        self.scheduled_compact = self.scheduled_compact.max(rev);
        self.keys.retain(|_, hist| {
            let i = hist.partition_point(|r| r.rev <= rev);
            if i > 0 {
                let keep_from = if hist[i - 1].kv.is_some() { i - 1 } else { i };
                hist.drain(..keep_from);
            }
            !hist.is_empty()
        });
        while self.log.front().is_some_and(|e| e.revision() < rev) {
            self.log.pop_front();
        }
    }

    /// Grants a lease (`id` already chosen and checked unused).
    pub fn lease_grant(&mut self, id: i64, ttl: i64, now: Instant) -> Result<Record, Error> {
        if self.lessor.contains(id) {
            return Err(Error::LeaseExists(id));
        }
        self.lessor.grant(id, ttl, now);
        Ok(Record {
            revision: self.rev,
            lease_grants: vec![(id, ttl)],
            ..Default::default()
        })
    }

    /// Revokes a lease, deleting its keys in one revision.
    pub fn lease_revoke(&mut self, id: i64) -> Result<Record, Error> {
        let lease = self.lessor.remove(id).ok_or(Error::LeaseNotFound(id))?;
        let mut pend = self.begin();
        for key in lease.keys {
            if self.latest(&key).is_some() {
                self.set_key(pend.rev, key.clone(), None);
                pend.changes.push(Change { key, kv: None });
            }
        }
        let mut rec = self.finish(pend);
        rec.lease_revokes.push(id);
        Ok(rec)
    }

    /// Replays a record read back from the WAL.
    pub fn replay(&mut self, rec: &Record, now: Instant) {
        for (id, ttl) in &rec.lease_grants {
            self.lessor.grant(*id, *ttl, now);
        }
        for ch in &rec.changes {
            self.set_key(rec.revision, ch.key.clone(), ch.kv.clone());
        }
        for id in &rec.lease_revokes {
            self.lessor.remove(*id);
        }
        self.rev = self.rev.max(rec.revision);
        if rec.compact != 0 {
            self.compact(rec.compact);
        }
        self.applied_index += 1;
    }

    /// Events with revisions in `[from, to]` that pass `keep`, at most about
    /// `max` of them (never splitting a revision). Returns the events and the
    /// last revision examined; `Err(compact_rev)` if `from` was compacted.
    pub fn events(
        &self,
        from: i64,
        to: i64,
        max: usize,
        keep: impl Fn(&Event) -> bool,
    ) -> Result<(Vec<Event>, i64), i64> {
        if from < self.compact_rev {
            return Err(self.compact_rev);
        }
        let start = self.log.partition_point(|e| e.revision() < from);
        let mut out = Vec::new();
        let mut last = to;
        for (examined, e) in self.log.range(start..).enumerate() {
            let r = e.revision();
            if r > to {
                break;
            }
            if examined >= max && r != last {
                // Stop at a revision boundary.
                last = r - 1;
                return Ok((out, last));
            }
            last = r;
            if keep(e) {
                out.push(e.clone());
            }
        }
        Ok((out, to))
    }

    /// Every key's history, for snapshots.
    pub fn histories(&self) -> impl Iterator<Item = (&Bytes, &Vec<Rev>)> {
        self.keys.iter()
    }

    /// Rebuilds the store from a snapshot's key histories: the event log is made
    /// again from the versions at or after the compaction revision.
    pub fn load(&mut self, keys: Vec<(Bytes, Vec<(Rev, u32)>)>, rev: i64, compact_rev: i64) {
        let mut events: Vec<(i64, u32, Event)> = Vec::new();
        for (key, hist) in keys {
            let mut prev: Option<KeyValue> = None;
            let mut out = Vec::with_capacity(hist.len());
            for (r, sub) in hist {
                if r.rev >= compact_rev {
                    let (kind, kv) = match &r.kv {
                        Some(kv) => (EventType::Put, kv.clone()),
                        None => (
                            EventType::Delete,
                            KeyValue {
                                key: key.clone(),
                                mod_revision: r.rev,
                                ..Default::default()
                            },
                        ),
                    };
                    events.push((
                        r.rev,
                        sub,
                        Event {
                            kind,
                            kv,
                            prev_kv: prev.clone(),
                        },
                    ));
                }
                if let Some(kv) = &r.kv {
                    self.lessor.attach(kv.lease, &key);
                }
                prev = r.kv.clone();
                out.push(r);
            }
            self.keys.insert(key, out);
        }
        events.sort_by_key(|(r, sub, _)| (*r, *sub));
        self.log = events.into_iter().map(|(_, _, e)| e).collect();
        self.rev = rev;
        self.compact_rev = compact_rev;
        self.scheduled_compact = compact_rev;
    }

    /// Position of each key version inside its revision (the order of the
    /// changes), for snapshots: `(key, mod_revision) -> sub`.
    pub fn sub_revisions(&self) -> std::collections::HashMap<(Bytes, i64), u32> {
        let mut m = std::collections::HashMap::new();
        let mut cur = i64::MIN;
        let mut sub = 0u32;
        for e in &self.log {
            if e.revision() != cur {
                cur = e.revision();
                sub = 0;
            }
            m.insert((e.kv.key.clone(), cur), sub);
            sub += 1;
        }
        m
    }

    /// Number of live keys and their bytes.
    pub fn live_size(&self) -> (usize, usize) {
        let mut n = 0;
        let mut bytes = 0;
        for (k, h) in &self.keys {
            if let Some(Some(kv)) = h.last().map(|r| r.kv.as_ref()) {
                n += 1;
                bytes += k.len() + kv.value.len();
            }
        }
        (n, bytes)
    }
}
