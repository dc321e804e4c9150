#![allow(clippy::unwrap_used)]
//! Crash safety: `kill -9` the real `kommit cache serve` while writers are
//! busy, restart it on the same data directory, and check that every write
//! acknowledged before the kill is there with its revision, and that the
//! revision counter never goes back. Twice, so the second crash also covers a
//! log replayed once already.

mod cache_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_support::*;

/// (key, value, revision) of every acknowledged put.
type Acked = Arc<Mutex<Vec<(String, String, i64)>>>;

async fn load(k: &Kommit, round: usize, acked: Acked) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for w in 0..16 {
        let c = connect(k.addr).await;
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mut kv = c.kv;
            for i in 0.. {
                let key = format!("/registry/pods/crash/r{round}-w{w}-{i}");
                let value = format!(r#"{{"kind":"Pod","metadata":{{"name":"w{w}-{i}"}}}}"#);
                match kv.put(put(&key, &value)).await {
                    Ok(r) => acked.lock().unwrap().push((
                        key,
                        value,
                        r.into_inner().header.unwrap().revision,
                    )),
                    // The server is gone: this write was never acknowledged.
                    Err(_) => return,
                }
            }
        }));
    }
    tasks
}

async fn check(k: &Kommit, acked: &[(String, String, i64)], floor: i64) -> i64 {
    let mut c = connect(k.addr).await;
    let current =
        c.kv.range(range("/"))
            .await
            .unwrap()
            .into_inner()
            .header
            .unwrap()
            .revision;
    let max_acked = acked.iter().map(|a| a.2).max().unwrap_or(0);
    assert!(
        current >= max_acked,
        "revision went back: {current} < acknowledged {max_acked}"
    );
    assert!(
        current >= floor,
        "revision went back: {current} < {floor} before the crash"
    );
    let all =
        c.kv.range(prefix_range("/registry/pods/crash/"))
            .await
            .unwrap()
            .into_inner();
    let stored: std::collections::HashMap<Vec<u8>, (Vec<u8>, i64)> = all
        .kvs
        .into_iter()
        .map(|kv| (kv.key.to_vec(), (kv.value.to_vec(), kv.mod_revision)))
        .collect();
    let mut revs = std::collections::HashSet::new();
    for (key, value, rev) in acked {
        assert!(
            revs.insert(*rev),
            "two acknowledged puts share revision {rev}"
        );
        let (v, r) = stored
            .get(key.as_bytes())
            .unwrap_or_else(|| panic!("acknowledged {key} at revision {rev} is lost"));
        assert_eq!((v.as_slice(), *r), (value.as_bytes(), *rev), "{key}");
    }
    current
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_write_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let acked: Acked = Arc::default();
    let mut floor = 0;
    for round in 0..2 {
        let mut k = Kommit::start(dir.path());
        let so_far = acked.lock().unwrap().clone();
        let before = check(&k, &so_far, floor).await;
        let tasks = load(&k, round, acked.clone()).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        k.kill();
        for t in tasks {
            t.await.unwrap();
        }
        let acked_now = acked.lock().unwrap().clone();
        assert!(
            acked_now.len() > 50 * (round + 1),
            "the load ran ({} writes)",
            acked_now.len()
        );
        floor = acked_now.iter().map(|a| a.2).max().unwrap_or(before);
        drop(k);
        let k = Kommit::start(dir.path());
        let after = check(&k, &acked_now, floor).await;
        // The restarted store goes on from where it was.
        let mut c = connect(k.addr).await;
        let next =
            c.kv.put(put("/registry/pods/crash/after", "x"))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(next.header.unwrap().revision, after + 1);
        floor = after + 1;
    }
}
