#![allow(clippy::unwrap_used)]
//! The in-process API: etcd's semantics for KV, txn, compaction, leases, watch
//! and durability across a reopen.

use std::time::Duration;

use bytes::Bytes;
use kommit_cache::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn put(c: &Cache, k: &str, v: &str) -> PutResponse {
    c.put(PutRequest::new(b(k), b(v))).await.unwrap()
}

#[tokio::test]
async fn put_range_versions_and_past_revisions() {
    let c = Cache::in_memory();
    assert_eq!(c.current_revision(), 0);
    let r1 = put(&c, "/registry/pods/default/a", "1").await;
    let r2 = put(&c, "/registry/pods/default/b", "2").await;
    let r3 = put(&c, "/registry/pods/default/a", "3").await;
    assert_eq!((r1.revision, r2.revision, r3.revision), (1, 2, 3));

    let a = c.get("/registry/pods/default/a").await.unwrap().unwrap();
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version, &a.value[..]),
        (1, 3, 2, &b"3"[..])
    );

    let all = c
        .range(RangeRequest::prefix("/registry/pods/"))
        .await
        .unwrap();
    assert_eq!(all.count, 2);
    assert_eq!(all.revision, 3);
    assert_eq!(
        all.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        vec![b("/registry/pods/default/a"), b("/registry/pods/default/b")]
    );

    let old = c
        .range(RangeRequest::key("/registry/pods/default/a").with_revision(2))
        .await
        .unwrap();
    assert_eq!(&old.kvs[0].value[..], b"1");
    assert_eq!(
        old.revision, 3,
        "the header carries the current revision, as etcd's"
    );

    let limited = c
        .range(RangeRequest::prefix("/registry/").with_limit(1))
        .await
        .unwrap();
    assert_eq!(
        (limited.kvs.len(), limited.more, limited.count),
        (1, true, 2)
    );

    let mut sorted = RangeRequest::prefix("/registry/");
    sorted.sort_target = SortTarget::Mod;
    sorted.sort_order = SortOrder::Descend;
    let s = c.range(sorted).await.unwrap();
    assert_eq!(s.kvs[0].key, b("/registry/pods/default/a"));

    let mut count = RangeRequest::prefix("/registry/");
    count.count_only = true;
    let n = c.range(count).await.unwrap();
    assert_eq!((n.count, n.kvs.len()), (2, 0));

    let mut ko = RangeRequest::prefix("/registry/");
    ko.keys_only = true;
    assert!(
        c.range(ko)
            .await
            .unwrap()
            .kvs
            .iter()
            .all(|kv| kv.value.is_empty())
    );

    // A range whose end is before its start is empty, as in etcd.
    assert_eq!(
        c.range(RangeRequest::range("b", "a")).await.unwrap().count,
        0
    );

    assert_eq!(
        c.range(RangeRequest::key("x").with_revision(99))
            .await
            .unwrap_err(),
        Error::FutureRevision {
            requested: 99,
            current: 3
        }
    );
    assert_eq!(
        c.range(RangeRequest::key("")).await.unwrap_err(),
        Error::EmptyKey
    );
}

#[tokio::test]
async fn delete_and_prev_kv() {
    let c = Cache::in_memory();
    put(&c, "k1", "a").await;
    put(&c, "k2", "b").await;
    let none = c
        .delete_range(DeleteRangeRequest::key("nope"))
        .await
        .unwrap();
    assert_eq!(
        (none.deleted, none.revision),
        (0, 2),
        "deleting nothing makes no revision"
    );
    let d = c
        .delete_range(DeleteRangeRequest::prefix("k").with_prev_kv())
        .await
        .unwrap();
    assert_eq!((d.deleted, d.revision, d.prev_kvs.len()), (2, 3, 2));
    assert!(c.get("k1").await.unwrap().is_none());
    // Re-creating starts a new generation.
    let p = c
        .put(PutRequest::new("k1", "c").with_prev_kv())
        .await
        .unwrap();
    assert!(p.prev_kv.is_none());
    let kv = c.get("k1").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version), (4, 1));

    let mut iv = PutRequest::new("missing", "");
    iv.ignore_value = true;
    assert_eq!(c.put(iv).await.unwrap_err(), Error::KeyNotFound);
    let mut iv = PutRequest::new("k1", "");
    iv.ignore_value = true;
    c.put(iv).await.unwrap();
    assert_eq!(&c.get("k1").await.unwrap().unwrap().value[..], b"c");
    let mut bad = PutRequest::new("k1", "v");
    bad.ignore_value = true;
    assert_eq!(c.put(bad).await.unwrap_err(), Error::ValueProvided);
}

#[tokio::test]
async fn txn_compares_branches_and_one_revision() {
    let c = Cache::in_memory();
    put(&c, "/registry/pods/ns/p", "v1").await;
    let kv = c.get("/registry/pods/ns/p").await.unwrap().unwrap();
    // Optimistic update as kube-apiserver does it: compare mod_revision.
    let t = TxnRequest {
        compare: vec![Compare::new(
            "/registry/pods/ns/p",
            CompareResult::Equal,
            CompareTarget::ModRevision(kv.mod_revision),
        )],
        success: vec![
            RequestOp::Put(PutRequest::new("/registry/pods/ns/p", "v2")),
            RequestOp::Put(PutRequest::new("/registry/pods/ns/q", "q1")),
            RequestOp::Range(RangeRequest::prefix("/registry/pods/ns/")),
        ],
        failure: vec![RequestOp::Range(RangeRequest::key("/registry/pods/ns/p"))],
    };
    let r = c.txn(t.clone()).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, 2);
    let ResponseOp::Range(rr) = &r.responses[2] else {
        panic!("range response")
    };
    assert_eq!(rr.count, 2, "a range in a txn sees the txn's own writes");
    assert!(rr.kvs.iter().all(|kv| kv.mod_revision == 2));

    // The same txn again fails its compare and runs the failure branch.
    let r = c.txn(t).await.unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.revision, 2, "a read-only branch makes no revision");

    // A missing key compares as zero (version == 0 means "absent").
    let create = TxnRequest {
        compare: vec![Compare::new(
            "new",
            CompareResult::Equal,
            CompareTarget::Version(0),
        )],
        success: vec![RequestOp::Put(PutRequest::new("new", "x"))],
        failure: vec![],
    };
    assert!(c.txn(create.clone()).await.unwrap().succeeded);
    assert!(!c.txn(create).await.unwrap().succeeded);

    // Nested txn: inner compares see the state before the outer txn.
    let nested = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(PutRequest::new("a", "1")),
            RequestOp::Txn(TxnRequest {
                compare: vec![Compare::new(
                    "a",
                    CompareResult::Equal,
                    CompareTarget::Version(0),
                )],
                success: vec![RequestOp::Put(PutRequest::new("b", "inner-success"))],
                failure: vec![RequestOp::Put(PutRequest::new("b", "inner-failure"))],
            }),
        ],
        failure: vec![],
    };
    let r = c.txn(nested).await.unwrap();
    let ResponseOp::Txn(inner) = &r.responses[1] else {
        panic!("txn response")
    };
    assert!(inner.succeeded);
    assert_eq!(
        &c.get("b").await.unwrap().unwrap().value[..],
        b"inner-success"
    );
    assert_eq!(
        c.get("a").await.unwrap().unwrap().mod_revision,
        c.get("b").await.unwrap().unwrap().mod_revision
    );

    let dup = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(PutRequest::new("d", "1")),
            RequestOp::Put(PutRequest::new("d", "2")),
        ],
        failure: vec![],
    };
    assert!(matches!(
        c.txn(dup).await.unwrap_err(),
        Error::DuplicateKey(_)
    ));

    let bad_lease = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(PutRequest::new("z", "1")),
            RequestOp::Put(PutRequest::new("y", "1").with_lease(42)),
        ],
        failure: vec![],
    };
    let before = c.current_revision();
    assert_eq!(
        c.txn(bad_lease).await.unwrap_err(),
        Error::LeaseNotFound(42)
    );
    assert_eq!(c.current_revision(), before, "a failed txn changes nothing");
    assert!(c.get("z").await.unwrap().is_none());
}

#[tokio::test]
async fn compaction() {
    let c = Cache::in_memory();
    for i in 0..5 {
        put(&c, "k", &i.to_string()).await;
    }
    put(&c, "gone", "x").await; // 6
    c.delete_range(DeleteRangeRequest::key("gone"))
        .await
        .unwrap(); // 7
    c.compact(4).await.unwrap();
    assert_eq!(c.compact_revision(), 4);
    assert_eq!(
        c.range(RangeRequest::key("k").with_revision(3))
            .await
            .unwrap_err(),
        Error::Compacted {
            compact_revision: 4
        }
    );
    assert_eq!(
        &c.range(RangeRequest::key("k").with_revision(4))
            .await
            .unwrap()
            .kvs[0]
            .value[..],
        b"3"
    );
    assert_eq!(
        c.compact(4).await.unwrap_err(),
        Error::Compacted {
            compact_revision: 4
        }
    );
    assert_eq!(
        c.compact(100).await.unwrap_err(),
        Error::FutureRevision {
            requested: 100,
            current: 7
        }
    );
    c.compact(7).await.unwrap();
    assert!(c.get("gone").await.unwrap().is_none());
    assert_eq!(c.get("k").await.unwrap().unwrap().version, 5);
}

#[tokio::test]
async fn request_limits() {
    let c = Cache::in_memory();
    let big = vec![b'x'; Options::default().max_request_bytes + 1];
    assert!(matches!(
        c.put(PutRequest::new("k", big)).await.unwrap_err(),
        Error::RequestTooLarge { .. }
    ));
    let many = TxnRequest {
        compare: vec![],
        success: (0..200)
            .map(|i| RequestOp::Put(PutRequest::new(format!("k{i}"), "v")))
            .collect(),
        failure: vec![],
    };
    assert!(matches!(
        c.txn(many).await.unwrap_err(),
        Error::TooManyOps { .. }
    ));
}

#[tokio::test]
async fn leases_grant_keepalive_revoke_expire() {
    let c = Cache::in_memory();
    let l = c.lease_grant(1, 0).await.unwrap();
    assert_eq!(
        l.ttl, 2,
        "TTLs below the minimum are raised to it, as etcd does"
    );
    c.put(PutRequest::new("/registry/leases/a", "1").with_lease(l.id))
        .await
        .unwrap();
    c.put(PutRequest::new("/registry/leases/b", "1").with_lease(l.id))
        .await
        .unwrap();
    let ttl = c.lease_time_to_live(l.id, true).await.unwrap();
    assert_eq!((ttl.granted_ttl, ttl.keys.len()), (2, 2));
    assert!(ttl.ttl >= 1);
    assert_eq!(c.lease_leases().await.unwrap(), vec![l.id]);
    assert_eq!(
        c.lease_grant(10, l.id).await.unwrap_err(),
        Error::LeaseExists(l.id)
    );

    let mut w = c.watch(WatchRequest::prefix("/registry/leases/"), 7);
    // Expiry deletes both keys in one revision.
    let before = c.current_revision();
    let resp = tokio::time::timeout(Duration::from_secs(10), w.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.events.len(), 2);
    assert!(
        resp.events
            .iter()
            .all(|e| e.kind == EventType::Delete && e.revision() == before + 1)
    );
    assert_eq!(c.lease_time_to_live(l.id, false).await.unwrap().ttl, -1);
    assert_eq!(
        c.lease_keep_alive(l.id).await.unwrap_err(),
        Error::LeaseNotFound(l.id)
    );

    let l2 = c.lease_grant(60, 1234).await.unwrap();
    assert_eq!(l2.id, 1234);
    assert_eq!(c.lease_keep_alive(1234).await.unwrap().ttl, 60);
    c.put(PutRequest::new("x", "1").with_lease(1234))
        .await
        .unwrap();
    let rev = c.lease_revoke(1234).await.unwrap();
    assert_eq!(rev, c.current_revision());
    assert!(c.get("x").await.unwrap().is_none());
    assert_eq!(
        c.lease_revoke(1234).await.unwrap_err(),
        Error::LeaseNotFound(1234)
    );
    assert_eq!(
        c.put(PutRequest::new("y", "1").with_lease(99))
            .await
            .unwrap_err(),
        Error::LeaseNotFound(99)
    );
    assert!(matches!(
        c.lease_grant(MAX_LEASE_TTL + 1, 0).await.unwrap_err(),
        Error::LeaseTtlTooLarge(_)
    ));
}

async fn next(w: &mut Watcher) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), w.recv())
        .await
        .expect("a response in time")
        .expect("watcher open")
}

#[tokio::test]
async fn watch_from_revision_prev_kv_filters() {
    let c = Cache::in_memory();
    put(&c, "/registry/pods/a", "1").await; // 1
    put(&c, "/registry/svc/x", "1").await; // 2
    put(&c, "/registry/pods/a", "2").await; // 3
    c.delete_range(DeleteRangeRequest::key("/registry/pods/a"))
        .await
        .unwrap(); // 4

    let mut w = c.watch(
        WatchRequest::prefix("/registry/pods/")
            .from_revision(1)
            .with_prev_kv(),
        1,
    );
    let mut events = Vec::new();
    while events.len() < 3 {
        let r = next(&mut w).await;
        assert_eq!(r.watch_id, 1);
        events.extend(r.events);
    }
    assert_eq!(
        events.iter().map(|e| e.revision()).collect::<Vec<_>>(),
        vec![1, 3, 4]
    );
    assert_eq!(events[1].prev_kv.as_ref().unwrap().value, b("1"));
    assert_eq!(events[2].kind, EventType::Delete);
    assert_eq!(events[2].prev_kv.as_ref().unwrap().value, b("2"));

    // Live events, filtered: only deletes.
    let mut req = WatchRequest::prefix("/registry/pods/");
    req.filters = vec![WatchFilter::NoPut];
    let mut dels = c.watch(req, 2);
    put(&c, "/registry/pods/b", "1").await; // 5
    c.delete_range(DeleteRangeRequest::key("/registry/pods/b"))
        .await
        .unwrap(); // 6
    let r = next(&mut dels).await;
    assert_eq!(r.events.len(), 1);
    assert_eq!(
        (r.events[0].kind, r.events[0].revision()),
        (EventType::Delete, 6)
    );
    assert!(r.events[0].prev_kv.is_none(), "no prev_kv unless asked");

    // Progress: an empty response telling how far delivery has gone.
    dels.request_progress();
    let p = next(&mut dels).await;
    assert!(p.is_progress_notify());
    assert_eq!(p.revision, 6);

    dels.cancel();
    let end = next(&mut dels).await;
    assert!(end.canceled);
    assert_eq!(end.cancel_reason, CANCELED_BY_CLIENT);
    assert!(dels.recv().await.is_none());
}

#[tokio::test]
async fn watch_txn_events_share_a_revision_in_order() {
    let c = Cache::in_memory();
    let mut w = c.watch(WatchRequest::prefix("t/"), 0);
    c.txn(TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(PutRequest::new("t/b", "1")),
            RequestOp::Put(PutRequest::new("t/a", "1")),
            RequestOp::Put(PutRequest::new("t/c", "1")),
        ],
        failure: vec![],
    })
    .await
    .unwrap();
    let r = next(&mut w).await;
    let keys: Vec<_> = r.events.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(
        keys,
        vec![b("t/b"), b("t/a"), b("t/c")],
        "events follow the txn's op order"
    );
    assert!(r.events.iter().all(|e| e.revision() == 1));
}

#[tokio::test]
async fn watch_from_compacted_revision_is_canceled_with_the_revision() {
    let c = Cache::in_memory();
    for i in 0..5 {
        put(&c, "k", &i.to_string()).await;
    }
    c.compact(3).await.unwrap();
    let mut w = c.watch(WatchRequest::key("k").from_revision(2), 9);
    let r = next(&mut w).await;
    assert!(r.canceled);
    assert_eq!(r.compact_revision, 3);
    assert!(w.recv().await.is_none());
    // From the compaction revision itself, history is still there.
    let mut w = c.watch(WatchRequest::key("k").from_revision(3), 10);
    let r = next(&mut w).await;
    assert_eq!(
        r.events.iter().map(|e| e.revision()).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
}

#[tokio::test]
async fn slow_watcher_is_canceled_with_a_reason_and_others_keep_going() {
    let opts = Options {
        watch_buffer: 2,
        watch_max_lag: 50,
        watch_batch_events: 1,
        ..Options::default()
    };
    let c = Cache::in_memory_with(opts);
    let mut slow = c.watch(WatchRequest::prefix("k"), 1);
    let mut fast = c.watch(WatchRequest::prefix("k"), 2);
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 200 {
            let r = next(&mut fast).await;
            n += r.events.len();
        }
        n
    });
    for i in 0..200 {
        put(&c, &format!("k{i}"), "v").await;
    }
    assert_eq!(
        reader.await.unwrap(),
        200,
        "the fast watcher got everything"
    );
    // The slow one gets what was buffered, in order, then a cancellation.
    let mut seen = Vec::new();
    let end = loop {
        let r = next(&mut slow).await;
        if r.canceled {
            break r;
        }
        seen.extend(r.events.iter().map(|e| e.revision()));
    };
    assert!(
        end.cancel_reason.contains("too slow"),
        "{}",
        end.cancel_reason
    );
    assert_eq!(
        seen,
        (1..=seen.len() as i64).collect::<Vec<_>>(),
        "no gap before the cancellation"
    );
    assert!(seen.len() < 200);
}

#[tokio::test]
async fn progress_notify_when_idle() {
    let opts = Options {
        progress_notify_interval: Duration::from_millis(100),
        ..Options::default()
    };
    let c = Cache::in_memory_with(opts);
    put(&c, "a", "1").await;
    let mut req = WatchRequest::key("b");
    req.progress_notify = true;
    let mut w = c.watch(req, 3);
    let r = next(&mut w).await;
    assert!(r.is_progress_notify());
    assert_eq!(r.revision, 1);
}

#[tokio::test]
async fn reopen_keeps_writes_leases_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let lease_id;
    {
        let c = Cache::open(dir.path(), Options::default()).unwrap();
        put(&c, "/registry/pods/a", "1").await;
        put(&c, "/registry/pods/a", "2").await;
        c.txn(TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::Put(PutRequest::new("t1", "x")),
                RequestOp::Put(PutRequest::new("t2", "y")),
            ],
            failure: vec![],
        })
        .await
        .unwrap();
        lease_id = c.lease_grant(300, 0).await.unwrap().id;
        c.put(PutRequest::new("leased", "v").with_lease(lease_id))
            .await
            .unwrap();
        c.delete_range(DeleteRangeRequest::key("t1")).await.unwrap();
        c.compact(2).await.unwrap();
        assert!(matches!(
            Cache::open(dir.path(), Options::default()),
            Err(OpenError::Locked { .. })
        ));
    }
    // The committer thread releases the directory once the last handle is gone.
    let c = reopen(dir.path());
    assert_eq!(c.current_revision(), 5);
    assert_eq!(c.compact_revision(), 2);
    let a = c.get("/registry/pods/a").await.unwrap().unwrap();
    assert_eq!((a.version, a.mod_revision, &a.value[..]), (2, 2, &b"2"[..]));
    assert!(c.get("t1").await.unwrap().is_none());
    assert_eq!(
        c.lease_time_to_live(lease_id, true).await.unwrap().keys,
        vec![b("leased")]
    );
    // History after the compaction is still watchable, with prev_kv.
    let mut w = c.watch(WatchRequest::prefix("").from_revision(2).with_prev_kv(), 0);
    let mut revs = Vec::new();
    while revs.len() < 5 {
        revs.extend(next(&mut w).await.events.iter().map(|e| e.revision()));
    }
    assert_eq!(revs, vec![2, 3, 3, 4, 5]);
    assert_eq!(put(&c, "after", "1").await.revision, 6);
}

#[tokio::test]
async fn snapshot_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Cache::open(
            dir.path(),
            Options {
                snapshot_wal_bytes: 2000,
                ..Options::default()
            },
        )
        .unwrap();
        for i in 0..200 {
            put(
                &c,
                &format!("/registry/pods/ns/p{}", i % 20),
                &format!("{{\"n\":{i}}}"),
            )
            .await;
        }
        c.compact(150).await.unwrap();
        for i in 0..10 {
            put(&c, "/registry/pods/ns/p0", &format!("late{i}")).await;
        }
    }
    let wal_len = std::fs::metadata(dir.path().join("wal")).unwrap().len();
    assert!(
        wal_len < 4000,
        "the log was emptied by snapshots ({wal_len} bytes)"
    );
    let c = reopen(dir.path());
    assert_eq!(c.current_revision(), 210);
    assert_eq!(
        c.range(RangeRequest::prefix("/registry/pods/"))
            .await
            .unwrap()
            .count,
        20
    );
    let p0 = c.get("/registry/pods/ns/p0").await.unwrap().unwrap();
    assert_eq!((p0.version, &p0.value[..]), (20, &b"late9"[..]));
    let mut w = c.watch(
        WatchRequest::key("/registry/pods/ns/p0")
            .from_revision(150)
            .with_prev_kv(),
        0,
    );
    let r = next(&mut w).await;
    assert_eq!(r.events[0].revision(), 161);
    assert_eq!(r.events[0].prev_kv.as_ref().unwrap().mod_revision, 141);
}

fn reopen(dir: &std::path::Path) -> Cache {
    for _ in 0..100 {
        match Cache::open(dir, Options::default()) {
            Ok(c) => return c,
            Err(OpenError::Locked { .. }) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the data directory stayed locked")
}
