#![allow(clippy::unwrap_used)]
//! Ordering and exactly-once delivery under concurrent writers and watchers.
//!
//! Several writer tasks put, delete and run txns on a shared set of keys. From
//! their acknowledged answers alone a model of the history is built (revision ->
//! the changes made at it, in order). Several watchers read the history; some
//! stop now and then, keep the last revision they saw, and resume from the next
//! one on a new watcher. Every watcher must see exactly the model's events, in
//! revision order, none twice, none missing; the final state must be the model's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kommit_cache::*;

/// (key, Some(value) for a put / None for a delete)
type Change = (Bytes, Option<Bytes>);

#[derive(Default)]
struct Model {
    by_rev: BTreeMap<i64, Vec<Change>>,
}

impl Model {
    fn record(&mut self, rev: i64, changes: Vec<Change>) {
        let prev = self.by_rev.insert(rev, changes);
        assert!(
            prev.is_none(),
            "two acknowledged writes claim revision {rev}"
        );
    }
}

async fn writer(c: Cache, w: u64, model: Arc<Mutex<Model>>, ops: usize) {
    let mut seed = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for i in 0..ops {
        let key = Bytes::from(format!("/registry/pods/ns/p{}", rnd(12)));
        match rnd(10) {
            0..=5 => {
                let value = Bytes::from(format!(r#"{{"w":{w},"i":{i}}}"#));
                let r = c
                    .put(PutRequest::new(key.clone(), value.clone()))
                    .await
                    .unwrap();
                model
                    .lock()
                    .unwrap()
                    .record(r.revision, vec![(key, Some(value))]);
            }
            6 | 7 => {
                let r = c
                    .delete_range(DeleteRangeRequest::key(key.clone()).with_prev_kv())
                    .await
                    .unwrap();
                if r.deleted == 1 {
                    model.lock().unwrap().record(r.revision, vec![(key, None)]);
                }
            }
            _ => {
                // Create-if-absent plus a companion key, as one revision.
                let other = Bytes::from(format!("/registry/events/ns/w{w}"));
                let value = Bytes::from(format!("txn {w} {i}"));
                let t = TxnRequest {
                    compare: vec![Compare::new(
                        key.clone(),
                        CompareResult::Equal,
                        CompareTarget::Version(0),
                    )],
                    success: vec![
                        RequestOp::Put(PutRequest::new(key.clone(), value.clone())),
                        RequestOp::Put(PutRequest::new(other.clone(), value.clone())),
                    ],
                    failure: vec![RequestOp::Range(RangeRequest::key(key.clone()))],
                };
                let r = c.txn(t).await.unwrap();
                if r.succeeded {
                    model.lock().unwrap().record(
                        r.revision,
                        vec![(key, Some(value.clone())), (other, Some(value))],
                    );
                }
            }
        }
    }
}

/// Reads every event up to `until`; with `resume_every`, drops its watcher
/// every so many responses and resumes from the revision after the last seen.
async fn watcher(
    c: Cache,
    id: i64,
    until: Arc<tokio::sync::OnceCell<i64>>,
    resume_every: Option<usize>,
) -> Vec<(i64, Change)> {
    let mut seen: Vec<(i64, Change)> = Vec::new();
    let mut next_rev = 1;
    loop {
        let mut w = c.watch(
            WatchRequest::prefix("/registry/").from_revision(next_rev),
            id,
        );
        let mut responses = 0;
        loop {
            if let Some(end) = until.get()
                && next_rev > *end
            {
                return seen;
            }
            let r = match tokio::time::timeout(Duration::from_millis(200), w.recv()).await {
                Ok(r) => r.expect("the watcher stays open"),
                Err(_) => continue, // idle: check whether the writers are done
            };
            assert!(!r.canceled, "watcher {id} canceled: {}", r.cancel_reason);
            let floor = next_rev;
            let mut prev = floor;
            for e in r.events {
                let rev = e.revision();
                assert!(
                    rev >= floor,
                    "watcher {id}: revision {rev} again (already past {floor})"
                );
                assert!(rev >= prev, "watcher {id}: revision {rev} after {prev}");
                prev = rev;
                next_rev = rev + 1;
                let change = (
                    e.kv.key.clone(),
                    (e.kind == EventType::Put).then(|| e.kv.value.clone()),
                );
                seen.push((rev, change));
            }
            // Everything up to r.revision has been delivered (a revision's
            // events are never split over responses).
            next_rev = next_rev.max(r.revision + 1);
            responses += 1;
            if resume_every.is_some_and(|n| responses >= n) {
                break; // drop this watcher; resume from next_rev
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_resuming_watchers_match_the_model() {
    let c = Cache::in_memory_with(Options {
        watch_batch_events: 7,
        ..Options::default()
    });
    let model = Arc::new(Mutex::new(Model::default()));
    let until = Arc::new(tokio::sync::OnceCell::new());
    let watchers: Vec<_> = [None, Some(1), Some(3), Some(10)]
        .into_iter()
        .enumerate()
        .map(|(i, every)| tokio::spawn(watcher(c.clone(), i as i64, until.clone(), every)))
        .collect();
    let writers: Vec<_> = (0..6)
        .map(|w| tokio::spawn(writer(c.clone(), w, model.clone(), 300)))
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let last = c.current_revision();
    until.set(last).unwrap();

    let model = std::mem::take(&mut *model.lock().unwrap());
    // Every revision from 2 to the last was made by exactly one acknowledged write.
    assert_eq!(
        model.by_rev.keys().copied().collect::<Vec<_>>(),
        (2..=last).collect::<Vec<_>>()
    );
    let expected: Vec<(i64, Change)> = model
        .by_rev
        .iter()
        .flat_map(|(rev, ch)| ch.iter().map(move |c| (*rev, c.clone())))
        .collect();
    for (i, w) in watchers.into_iter().enumerate() {
        let got = w.await.unwrap();
        assert_eq!(got.len(), expected.len(), "watcher {i}: event count");
        assert!(got == expected, "watcher {i} saw a different history");
    }

    // The final state is the model's.
    let mut state: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    for changes in model.by_rev.values() {
        for (k, v) in changes {
            match v {
                Some(v) => state.insert(k.clone(), v.clone()),
                None => state.remove(k),
            };
        }
    }
    let got = c.range(RangeRequest::prefix("/registry/")).await.unwrap();
    let got: BTreeMap<Bytes, Bytes> = got.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
    assert_eq!(got, state);
}
