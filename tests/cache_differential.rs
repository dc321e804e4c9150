#![allow(clippy::unwrap_used)]
//! Differential test: one scripted sequence of etcd v3 calls, run against a real
//! etcd (Debian's etcd-server, started here on loopback) and against
//! `kommit cache serve`, through the same gRPC client. Revisions, values,
//! versions, txn results, watch event streams and error classes must match.

mod cache_support;

use std::time::Duration;

use cache_support::*;
use tonic::Request;

/// Keeps what must match: the revision of headers, everything else as is.
fn hdr(h: &mut Option<epb::ResponseHeader>) {
    if let Some(h) = h {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
}

/// Only the top header names the server; headers inside are compared whole.
fn norm_txn(t: &mut epb::TxnResponse) {
    hdr(&mut t.header);
}

fn err(s: tonic::Status) -> String {
    format!("error {:?}: {}", s.code(), s.message())
}

fn txn(
    compare: Vec<epb::Compare>,
    success: Vec<epb::RequestOp>,
    failure: Vec<epb::RequestOp>,
) -> epb::TxnRequest {
    epb::TxnRequest {
        compare,
        success,
        failure,
    }
}

fn op_put(k: &str, v: &str) -> epb::RequestOp {
    epb::RequestOp {
        request: Some(epb::request_op::Request::RequestPut(put(k, v))),
    }
}

fn op_get(r: epb::RangeRequest) -> epb::RequestOp {
    epb::RequestOp {
        request: Some(epb::request_op::Request::RequestRange(r)),
    }
}

fn op_del(k: &str) -> epb::RequestOp {
    epb::RequestOp {
        request: Some(epb::request_op::Request::RequestDeleteRange(
            epb::DeleteRangeRequest {
                key: k.as_bytes().to_vec().into(),
                ..Default::default()
            },
        )),
    }
}

fn op_txn(t: epb::TxnRequest) -> epb::RequestOp {
    epb::RequestOp {
        request: Some(epb::request_op::Request::RequestTxn(t)),
    }
}

fn cmp(
    key: &str,
    result: epb::compare::CompareResult,
    target: epb::compare::TargetUnion,
) -> epb::Compare {
    use epb::compare::{CompareTarget as T, TargetUnion as U};
    let t = match target {
        U::Version(_) => T::Version,
        U::CreateRevision(_) => T::Create,
        U::ModRevision(_) => T::Mod,
        U::Value(_) => T::Value,
        U::Lease(_) => T::Lease,
    };
    epb::Compare {
        result: result as i32,
        target: t as i32,
        key: key.as_bytes().to_vec().into(),
        range_end: Default::default(),
        target_union: Some(target),
    }
}

/// Runs the script; each step's outcome as a line.
async fn script(c: &mut Clients) -> Vec<String> {
    use epb::compare::{CompareResult as CR, TargetUnion as U};
    let mut out: Vec<String> = Vec::new();
    macro_rules! step {
        ($name:expr, $call:expr, $norm:expr) => {{
            let line = match $call.await {
                Ok(r) => {
                    let mut r = r.into_inner();
                    #[allow(clippy::redundant_closure_call)]
                    ($norm)(&mut r);
                    format!("{r:?}")
                }
                Err(s) => err(s),
            };
            out.push(format!("{}: {line}", $name));
        }};
    }
    let kv_put = |r: &mut epb::PutResponse| hdr(&mut r.header);
    let kv_rng = |r: &mut epb::RangeResponse| hdr(&mut r.header);
    let kv_del = |r: &mut epb::DeleteRangeResponse| hdr(&mut r.header);

    // Puts, versions, prev_kv.
    step!(
        "put a",
        c.kv.put(put("/registry/pods/ns/a", r#"{"v":1}"#)),
        kv_put
    );
    step!(
        "put b",
        c.kv.put(put("/registry/pods/ns/b", r#"{"v":1}"#)),
        kv_put
    );
    step!(
        "put svc",
        c.kv.put(put("/registry/services/ns/s", "{}")),
        kv_put
    );
    let mut p = put("/registry/pods/ns/a", r#"{"v":2}"#);
    p.prev_kv = true;
    step!("put a prev_kv", c.kv.put(p), kv_put);
    let mut p = put("/registry/pods/ns/a", "");
    p.ignore_value = true;
    p.prev_kv = true;
    step!("put a ignore_value", c.kv.put(p), kv_put);

    // Ranges.
    step!(
        "get prefix",
        c.kv.range(prefix_range("/registry/pods/")),
        kv_rng
    );
    step!(
        "get all",
        c.kv.range(epb::RangeRequest {
            key: vec![0].into(),
            range_end: vec![0].into(),
            ..Default::default()
        }),
        kv_rng
    );
    step!(
        "get a at 1",
        c.kv.range(epb::RangeRequest {
            revision: 1,
            ..range("/registry/pods/ns/a")
        }),
        kv_rng
    );
    step!(
        "get limit",
        c.kv.range(epb::RangeRequest {
            limit: 1,
            ..prefix_range("/registry/")
        }),
        kv_rng
    );
    step!(
        "get count_only",
        c.kv.range(epb::RangeRequest {
            count_only: true,
            ..prefix_range("/registry/")
        }),
        kv_rng
    );
    step!(
        "get keys_only",
        c.kv.range(epb::RangeRequest {
            keys_only: true,
            ..prefix_range("/registry/")
        }),
        kv_rng
    );
    step!(
        "get sort mod desc",
        c.kv.range(epb::RangeRequest {
            sort_order: 2,
            sort_target: 3,
            ..prefix_range("/registry/")
        }),
        kv_rng
    );
    step!(
        "get sort version",
        c.kv.range(epb::RangeRequest {
            sort_target: 1,
            limit: 2,
            ..prefix_range("/registry/")
        }),
        kv_rng
    );
    step!(
        "get min_mod",
        c.kv.range(epb::RangeRequest {
            min_mod_revision: 3,
            ..prefix_range("/registry/")
        }),
        kv_rng
    );
    step!("get missing", c.kv.range(range("/nope")), kv_rng);
    step!(
        "get end<key",
        c.kv.range(epb::RangeRequest {
            range_end: "/a".as_bytes().to_vec().into(),
            ..range("/z")
        }),
        kv_rng
    );
    step!(
        "get future",
        c.kv.range(epb::RangeRequest {
            revision: 1000,
            ..range("/x")
        }),
        kv_rng
    );
    step!("get empty key", c.kv.range(range("")), kv_rng);

    // Deletes.
    step!(
        "del missing",
        c.kv.delete_range(epb::DeleteRangeRequest {
            key: "/nope".as_bytes().to_vec().into(),
            ..Default::default()
        }),
        kv_del
    );
    step!(
        "del b prev_kv",
        c.kv.delete_range(epb::DeleteRangeRequest {
            key: "/registry/pods/ns/b".as_bytes().to_vec().into(),
            prev_kv: true,
            ..Default::default()
        }),
        kv_del
    );
    step!(
        "put b again",
        c.kv.put(put("/registry/pods/ns/b", "reborn")),
        kv_put
    );
    let mut p = put("/registry/pods/ns/zz", "");
    p.ignore_lease = true;
    step!("put ignore_lease missing key", c.kv.put(p), kv_put);

    // Txns: kube-apiserver's optimistic update, create-if-absent, nested, errors.
    let t = txn(
        vec![cmp("/registry/pods/ns/a", CR::Equal, U::ModRevision(5))],
        vec![
            op_put("/registry/pods/ns/a", r#"{"v":3}"#),
            op_get(range("/registry/pods/ns/a")),
        ],
        vec![op_get(range("/registry/pods/ns/a"))],
    );
    step!("txn cas ok", c.kv.txn(t.clone()), norm_txn);
    step!("txn cas stale", c.kv.txn(t), norm_txn);
    let create = txn(
        vec![cmp("/registry/pods/ns/c", CR::Equal, U::Version(0))],
        vec![
            op_put("/registry/pods/ns/c", "c"),
            op_put("/registry/pods/ns/d", "d"),
        ],
        vec![],
    );
    step!("txn create", c.kv.txn(create.clone()), norm_txn);
    step!("txn create again", c.kv.txn(create), norm_txn);
    step!(
        "txn value compare on missing key",
        c.kv.txn(txn(
            vec![cmp("/nope", CR::NotEqual, U::Value("x".into()))],
            vec![op_put("/nope", "1")],
            vec![op_get(range("/nope"))]
        )),
        norm_txn
    );
    step!(
        "txn greater/less",
        c.kv.txn(txn(
            vec![
                cmp("/registry/pods/ns/a", CR::Greater, U::Version(1)),
                cmp("/registry/pods/ns/a", CR::Less, U::CreateRevision(2))
            ],
            vec![op_get(range("/registry/pods/ns/a"))],
            vec![]
        )),
        norm_txn
    );
    let nested = txn(
        vec![],
        vec![
            op_put("/n/outer", "1"),
            op_txn(txn(
                vec![cmp("/n/outer", CR::Equal, U::Version(0))],
                vec![op_put("/n/inner", "s"), op_get(prefix_range("/n/"))],
                vec![op_put("/n/inner", "f")],
            )),
            op_del("/registry/pods/ns/d"),
        ],
        vec![],
    );
    step!("txn nested", c.kv.txn(nested), norm_txn);
    step!(
        "txn duplicate put",
        c.kv.txn(txn(
            vec![],
            vec![op_put("/d", "1"), op_put("/d", "2")],
            vec![]
        )),
        norm_txn
    );
    step!(
        "txn put+del same key",
        c.kv.txn(txn(vec![], vec![op_put("/d", "1"), op_del("/d")], vec![])),
        norm_txn
    );
    step!(
        "txn read-only",
        c.kv.txn(txn(
            vec![],
            vec![op_get(prefix_range("/registry/"))],
            vec![]
        )),
        norm_txn
    );
    step!(
        "txn delete nothing",
        c.kv.txn(txn(vec![], vec![op_del("/nothing")], vec![])),
        norm_txn
    );
    step!(
        "txn range future",
        c.kv.txn(txn(
            vec![],
            vec![op_get(epb::RangeRequest {
                revision: 999,
                ..range("/x")
            })],
            vec![]
        )),
        norm_txn
    );
    let mut leased = put("/l/x", "1");
    leased.lease = 4242;
    step!(
        "txn put missing lease",
        c.kv.txn(txn(
            vec![],
            vec![
                op_put("/l/ok", "1"),
                epb::RequestOp {
                    request: Some(epb::request_op::Request::RequestPut(leased.clone()))
                }
            ],
            vec![]
        )),
        norm_txn
    );
    step!("put missing lease", c.kv.put(leased), kv_put);

    // Size limit: a value over 1.5 MiB (within the gRPC envelope allowance).
    step!(
        "put too large",
        c.kv.put(put("/big", &"x".repeat(1_600_000))),
        kv_put
    );

    // Leases with explicit ids so both sides agree.
    let grant = |id: i64, ttl: i64| epb::LeaseGrantRequest { id, ttl };
    step!(
        "lease grant short",
        c.lease.lease_grant(grant(0x1001, 1)),
        |r: &mut epb::LeaseGrantResponse| hdr(&mut r.header)
    );
    step!(
        "lease grant",
        c.lease.lease_grant(grant(0x1002, 600)),
        |r: &mut epb::LeaseGrantResponse| hdr(&mut r.header)
    );
    step!(
        "lease grant dup",
        c.lease.lease_grant(grant(0x1002, 600)),
        |r: &mut epb::LeaseGrantResponse| hdr(&mut r.header)
    );
    step!(
        "lease grant too large",
        c.lease.lease_grant(grant(0x1003, 9_000_000_001)),
        |r: &mut epb::LeaseGrantResponse| hdr(&mut r.header)
    );
    let mut p = put("/registry/leases/x", "1");
    p.lease = 0x1002;
    step!("put leased x", c.kv.put(p.clone()), kv_put);
    p.key = "/registry/leases/y".as_bytes().to_vec().into();
    step!("put leased y", c.kv.put(p), kv_put);
    step!(
        "lease ttl keys",
        c.lease.lease_time_to_live(epb::LeaseTimeToLiveRequest {
            id: 0x1002,
            keys: true
        }),
        |r: &mut epb::LeaseTimeToLiveResponse| {
            hdr(&mut r.header);
            assert!(r.ttl > 590, "remaining {}", r.ttl);
            r.ttl = 0;
            // etcd lists a lease's keys in no particular order.
            r.keys.sort();
        }
    );
    step!(
        "lease ttl missing",
        c.lease.lease_time_to_live(epb::LeaseTimeToLiveRequest {
            id: 0x9999,
            keys: true
        }),
        |r: &mut epb::LeaseTimeToLiveResponse| hdr(&mut r.header)
    );
    step!(
        "lease revoke",
        c.lease.lease_revoke(epb::LeaseRevokeRequest { id: 0x1002 }),
        |r: &mut epb::LeaseRevokeResponse| hdr(&mut r.header)
    );
    step!(
        "lease revoke missing",
        c.lease.lease_revoke(epb::LeaseRevokeRequest { id: 0x1002 }),
        |r: &mut epb::LeaseRevokeResponse| hdr(&mut r.header)
    );
    step!(
        "get leases gone",
        c.kv.range(prefix_range("/registry/leases/")),
        kv_rng
    );
    // The short lease (2 s granted) expires on its own; its (empty) expiry makes no revision.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    step!(
        "lease short expired",
        c.lease.lease_time_to_live(epb::LeaseTimeToLiveRequest {
            id: 0x1001,
            keys: false
        }),
        |r: &mut epb::LeaseTimeToLiveResponse| hdr(&mut r.header)
    );

    // Compaction.
    let compact = |r: &mut epb::CompactionResponse| hdr(&mut r.header);
    step!(
        "compact 4",
        c.kv.compact(epb::CompactionRequest {
            revision: 4,
            physical: true
        }),
        compact
    );
    step!(
        "compact 3 again",
        c.kv.compact(epb::CompactionRequest {
            revision: 3,
            physical: true
        }),
        compact
    );
    step!(
        "compact future",
        c.kv.compact(epb::CompactionRequest {
            revision: 10_000,
            physical: true
        }),
        compact
    );
    step!(
        "get at compacted",
        c.kv.range(epb::RangeRequest {
            revision: 3,
            ..range("/registry/pods/ns/a")
        }),
        kv_rng
    );
    step!(
        "get at compaction rev",
        c.kv.range(epb::RangeRequest {
            revision: 4,
            ..prefix_range("/registry/")
        }),
        kv_rng
    );

    // Watch: the whole retained history from the compaction revision, with prev_kv.
    out.push(format!("watch history: {}", watch_history(c, 4).await));
    out.push(format!("watch compacted: {}", watch_compacted(c, 2).await));
    out
}

async fn watch_history(c: &mut Clients, from: i64) -> String {
    let current =
        c.kv.range(range("/x"))
            .await
            .unwrap()
            .into_inner()
            .header
            .unwrap()
            .revision;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let create = epb::WatchRequest {
        request_union: Some(epb::watch_request::RequestUnion::CreateRequest(
            epb::WatchCreateRequest {
                key: vec![0].into(),
                range_end: vec![0].into(),
                start_revision: from,
                prev_kv: true,
                ..Default::default()
            },
        )),
    };
    tx.send(create).await.unwrap();
    let mut stream = c
        .watch
        .watch(Request::new(tokio_stream_from(rx)))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.created);
    let mut events = Vec::new();
    while events
        .last()
        .map(|e: &mvccpb::Event| e.kv.as_ref().unwrap().mod_revision)
        != Some(current)
    {
        let r = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("watch events in time")
            .unwrap()
            .unwrap();
        events.extend(r.events);
    }
    drop(tx);
    events
        .iter()
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join("\n    ")
}

async fn watch_compacted(c: &mut Clients, from: i64) -> String {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let create = epb::WatchRequest {
        request_union: Some(epb::watch_request::RequestUnion::CreateRequest(
            epb::WatchCreateRequest {
                key: "/registry/".as_bytes().to_vec().into(),
                range_end: kommit_cache::prefix_end(b"/registry/"),
                start_revision: from,
                ..Default::default()
            },
        )),
    };
    tx.send(create).await.unwrap();
    let mut stream = c
        .watch
        .watch(Request::new(tokio_stream_from(rx)))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let r = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("in time")
            .unwrap()
            .unwrap();
        seen.push(format!(
            "created={} canceled={} compact_revision={} events={}",
            r.created,
            r.canceled,
            r.compact_revision,
            r.events.len()
        ));
    }
    drop(tx);
    seen.join("; ")
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kommit_answers_like_etcd() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let kommit = Kommit::start(dir.path());
    let mut ce = connect(etcd.addr).await;
    let mut ck = connect(kommit.addr).await;
    let (want, got) = tokio::join!(script(&mut ce), script(&mut ck));
    assert_eq!(want.len(), got.len());
    let mut diffs = Vec::new();
    for (w, g) in want.iter().zip(&got) {
        if w != g {
            diffs.push(format!("etcd:   {w}\nkommit: {g}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} steps differ:\n\n{}",
        diffs.len(),
        want.len(),
        diffs.join("\n\n")
    );
}
