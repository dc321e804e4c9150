#![allow(clippy::unwrap_used)]
//! Real etcdctl (Debian's etcd-client, v3 API) against `kommit cache serve`.

mod cache_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cache_support::*;
use serde_json::Value;

fn b64(s: &str) -> String {
    // etcdctl -w json prints keys and values base64-encoded.
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("etcdctl printed non-JSON {s:?}: {e}"))
}

#[test]
fn etcdctl_kv_txn_watch_lease_compaction_status() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kommit::start(dir.path());
    let ep = k.endpoint();

    // put / get with prefix, JSON output, past revisions.
    assert_eq!(
        etcdctl_ok(
            &ep,
            &[
                "put",
                "/registry/pods/default/web-0",
                r#"{"kind":"Pod","v":1}"#
            ]
        )
        .trim(),
        "OK"
    );
    etcdctl_ok(
        &ep,
        &["put", "/registry/pods/default/web-1", r#"{"kind":"Pod"}"#],
    );
    etcdctl_ok(
        &ep,
        &[
            "put",
            "/registry/services/default/web",
            r#"{"kind":"Service"}"#,
        ],
    );
    etcdctl_ok(
        &ep,
        &[
            "put",
            "/registry/pods/default/web-0",
            r#"{"kind":"Pod","v":2}"#,
        ],
    );
    let got = json(&etcdctl_ok(
        &ep,
        &["get", "/registry/pods/", "--prefix", "-w", "json"],
    ));
    assert_eq!(got["header"]["revision"], 5);
    assert_eq!(got["count"], 2);
    let kvs = got["kvs"].as_array().unwrap();
    assert_eq!(kvs[0]["key"], b64("/registry/pods/default/web-0"));
    assert_eq!(kvs[0]["value"], b64(r#"{"kind":"Pod","v":2}"#));
    assert_eq!(
        (
            kvs[0]["create_revision"].as_i64(),
            kvs[0]["mod_revision"].as_i64(),
            kvs[0]["version"].as_i64()
        ),
        (Some(2), Some(5), Some(2))
    );
    let old = etcdctl_ok(
        &ep,
        &[
            "get",
            "/registry/pods/default/web-0",
            "--rev=2",
            "--print-value-only",
        ],
    );
    assert_eq!(old.trim(), r#"{"kind":"Pod","v":1}"#);
    let keys = etcdctl_ok(&ep, &["get", "/registry/", "--prefix", "--keys-only"]);
    assert_eq!(
        keys.split_whitespace().collect::<Vec<_>>(),
        vec![
            "/registry/pods/default/web-0",
            "/registry/pods/default/web-1",
            "/registry/services/default/web"
        ]
    );

    // del
    assert_eq!(
        etcdctl_ok(&ep, &["del", "/registry/pods/default/web-1"]).trim(),
        "1"
    );
    assert_eq!(
        etcdctl_ok(&ep, &["del", "/registry/pods/default/nope"]).trim(),
        "0"
    );
    let n = json(&etcdctl_ok(
        &ep,
        &["get", "/registry/pods/", "--prefix", "-w", "json"],
    ));
    assert_eq!(n["count"], 1);

    // txn, interactive form on stdin: compare-and-swap on the value.
    let script = "value(\"/registry/pods/default/web-0\") = \"{\\\"kind\\\":\\\"Pod\\\",\\\"v\\\":2}\"\n\nput /registry/pods/default/web-0 v3\nput /registry/pods/default/web-2 new\n\nget /registry/pods/default/web-0\n\n";
    let out = etcdctl(&ep, &["txn", "-i", "-w", "json"], Some(script));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The interactive prompts come first; the JSON answer is the last line.
    let text = String::from_utf8(out.stdout).unwrap();
    let t = json(text.lines().last().unwrap());
    assert_eq!(t["succeeded"], true);
    assert_eq!(t["header"]["revision"], 7);
    // The same compare now fails and the failure branch (a get) runs.
    let out = etcdctl(&ep, &["txn", "-i"], Some(script));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\nFAILURE\n"), "{text}");
    assert!(text.contains("/registry/pods/default/web-0\nv3"), "{text}");

    // watch from revision 1 over a prefix with prev_kv: the whole history, in order.
    let mut w = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .args([
            "watch",
            "--rev=2",
            "--prefix",
            "/registry/pods/",
            "--prev-kv",
            "-w",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = w.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let mut events: Vec<Value> = Vec::new();
    while events.len() < 6 {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("watch output");
        let resp = json(&line);
        events.extend(resp["Events"].as_array().cloned().unwrap_or_default());
    }
    let revs: Vec<i64> = events
        .iter()
        .map(|e| e["kv"]["mod_revision"].as_i64().unwrap())
        .collect();
    assert_eq!(revs, vec![2, 3, 5, 6, 7, 7]);
    assert_eq!(events[3]["type"], 1, "revision 6 is a delete");
    assert_eq!(events[3]["prev_kv"]["value"], b64(r#"{"kind":"Pod"}"#));
    assert_eq!(
        events[2]["prev_kv"]["value"],
        b64(r#"{"kind":"Pod","v":1}"#)
    );
    // A live event arrives too.
    etcdctl_ok(&ep, &["put", "/registry/pods/default/live", "x"]);
    let resp = json(
        &rx.recv_timeout(Duration::from_secs(10))
            .expect("live event"),
    );
    assert_eq!(resp["Events"][0]["kv"]["mod_revision"], 8);
    let _ = w.kill();
    let _ = w.wait();

    // leases: grant, attach, keep-alive, timetolive --keys, revoke deletes the keys.
    let granted = etcdctl_ok(&ep, &["lease", "grant", "60"]);
    let id = granted.split_whitespace().nth(1).unwrap().to_string();
    assert!(granted.contains("granted with TTL(60s)"), "{granted}");
    etcdctl_ok(
        &ep,
        &["put", "/registry/leases/a", "1", &format!("--lease={id}")],
    );
    etcdctl_ok(
        &ep,
        &["put", "/registry/leases/b", "1", &format!("--lease={id}")],
    );
    let ka = etcdctl_ok(&ep, &["lease", "keep-alive", "--once", &id]);
    assert!(ka.contains("keepalived with TTL(60)"), "{ka}");
    let ttl = etcdctl_ok(&ep, &["lease", "timetolive", "--keys", &id]);
    assert!(
        ttl.contains("attached keys([/registry/leases/a /registry/leases/b])"),
        "{ttl}"
    );
    assert!(etcdctl_ok(&ep, &["lease", "list"]).contains(&id));
    let rev_before = json(&etcdctl_ok(&ep, &["get", "x", "-w", "json"]))["header"]["revision"]
        .as_i64()
        .unwrap();
    assert!(etcdctl_ok(&ep, &["lease", "revoke", &id]).contains("revoked"));
    assert_eq!(
        etcdctl_ok(&ep, &["get", "/registry/leases/", "--prefix"]),
        "",
        "the lease's keys are gone"
    );
    let rev_after = json(&etcdctl_ok(&ep, &["get", "x", "-w", "json"]))["header"]["revision"]
        .as_i64()
        .unwrap();
    assert_eq!(rev_after, rev_before + 1, "both keys go in one revision");
    assert!(etcdctl_ok(&ep, &["lease", "timetolive", &id]).contains("already expired"));
    let missing = etcdctl(&ep, &["lease", "revoke", &id], None);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("requested lease not found"));

    // compaction
    assert_eq!(
        etcdctl_ok(&ep, &["compaction", "5"]).trim(),
        "compacted revision 5"
    );
    let old = etcdctl(
        &ep,
        &["get", "/registry/pods/default/web-0", "--rev=4"],
        None,
    );
    assert!(!old.status.success());
    assert!(String::from_utf8_lossy(&old.stderr).contains("required revision has been compacted"));
    assert!(
        etcdctl_ok(&ep, &["get", "/registry/pods/default/web-0", "--rev=5"])
            .contains(r#"{"kind":"Pod","v":2}"#)
    );

    // endpoint status and member list
    let st = json(&etcdctl_ok(&ep, &["endpoint", "status", "-w", "json"]));
    assert_eq!(st[0]["Status"]["header"]["revision"], rev_after);
    assert!(st[0]["Status"]["dbSize"].as_i64().unwrap() > 0);
    assert_eq!(
        st[0]["Status"]["leader"],
        st[0]["Status"]["header"]["member_id"]
    );
    let ml = json(&etcdctl_ok(&ep, &["member", "list", "-w", "json"]));
    assert_eq!(ml["members"][0]["name"], "kommit");
    assert_eq!(ml["members"][0]["clientURLs"][0], format!("http://{ep}"));

    // Unsupported calls say so.
    let auth = etcdctl(&ep, &["auth", "enable"], None);
    assert!(String::from_utf8_lossy(&auth.stderr).contains("Unimplemented"));
}
