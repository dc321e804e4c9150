//! The demo workloads as a user runs them (`kommit demo ...`), on the host.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_kommit-node-demo");

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path`, retrying while the server starts; returns (status code, body).
async fn get(port: u16, path: &str) -> (u16, String) {
    for _ in 0..100 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut buf = String::new();
            s.read_to_string(&mut buf).await.unwrap();
            let code = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
            let body = buf
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default();
            return (code, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server on {port} never answered");
}

#[tokio::test]
async fn http_answers_pod_name_payload_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload");
    std::fs::write(&file, "from a file\n").unwrap();
    let p = port();
    let _s = Kill(
        Command::new(BIN)
            .args([
                "http",
                "--port",
                &p.to_string(),
                "--payload-file",
                file.to_str().unwrap(),
            ])
            .env("POD_NAME", "web-7")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert_eq!(
        get(p, "/").await,
        (200, "pod: web-7\npayload: from a file\n".into())
    );
    assert_eq!(get(p, "/healthz").await, (200, "ok".into()));
    assert_eq!(get(p, "/hostname").await, (200, "web-7".into()));
    // The file is read on every request (a ConfigMap volume update shows).
    std::fs::write(&file, "changed").unwrap();
    assert_eq!(get(p, "/payload").await, (200, "changed".into()));

    let p2 = port();
    let _s2 = Kill(
        Command::new(BIN)
            .args(["http"])
            .env("PORT", p2.to_string())
            .env("PAYLOAD", "from env")
            .env("HOSTNAME", "host-name")
            .env_remove("POD_NAME")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert_eq!(
        get(p2, "/").await,
        (200, "pod: host-name\npayload: from env\n".into())
    );
}

#[tokio::test]
async fn flip_health_turns_unhealthy_on_request_and_after_a_delay() {
    let p = port();
    let _s = Kill(
        Command::new(BIN)
            .args(["flip-health", "--port", &p.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert_eq!(get(p, "/healthz").await.0, 200);
    get(p, "/flip").await;
    assert_eq!(get(p, "/healthz").await, (500, "unhealthy".into()));
    get(p, "/flip").await;
    assert_eq!(get(p, "/healthz").await.0, 200);

    let p = port();
    let _s = Kill(
        Command::new(BIN)
            .args(["flip-health", "--port", &p.to_string(), "--after", "0.5"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert_eq!(get(p, "/healthz").await.0, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(get(p, "/healthz").await.0, 500);
}

#[test]
fn exit_and_sleep_and_bad_usage() {
    let s = Command::new(BIN)
        .args(["exit", "--code", "7", "--after", "0.1"])
        .output()
        .unwrap();
    assert_eq!(s.status.code(), Some(7));
    let s = Command::new(BIN).args(["sleep", "0.1"]).output().unwrap();
    assert_eq!(s.status.code(), Some(0));
    let s = Command::new(BIN)
        .args(["no-such-workload"])
        .output()
        .unwrap();
    assert_eq!(s.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&s.stderr).contains("no-such-workload"));
    let s = Command::new(BIN)
        .args(["exit", "--after", "-1"])
        .output()
        .unwrap();
    assert_ne!(s.status.code(), Some(0));
}

fn spawn(args: &[&str]) -> Kill {
    Kill(
        Command::new(BIN)
            .args(args)
            .env("POD_NAME", args[0])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// POST `body` to `path`; (status code, body).
async fn post(port: u16, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        format!(
            "POST {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn dockercoins_on_the_host_mines_and_reports_a_rate() {
    let (rng, hasher, webui) = (port(), port(), port());
    let _r = spawn(&["rng", "--port", &rng.to_string(), "--delay-ms", "0"]);
    let _h = spawn(&["hasher", "--port", &hasher.to_string(), "--delay-ms", "0"]);
    let _w = spawn(&["webui", "--port", &webui.to_string()]);
    assert_eq!(get(rng, "/healthz").await, (200, "ok".into()));
    assert_eq!(get(hasher, "/healthz").await, (200, "ok".into()));
    assert_eq!(get(webui, "/healthz").await, (200, "ok".into()));

    // rng: n random bytes (as raw bytes, so count them over the wire).
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", rng))
        .await
        .unwrap();
    s.write_all(b"GET /100 HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(raw.len() - head_end, 100);
    assert_eq!(get(rng, "/0").await.0, 400);
    assert_eq!(get(rng, "/lots").await.0, 400);
    // hasher: SHA-256 of "abc" (FIPS 180-2 test vector).
    assert_eq!(
        post(hasher, "/", "abc").await,
        (
            200,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()
        )
    );
    // webui: refuses a bad report; nothing mined yet.
    assert_eq!(post(webui, "/report", "{\"nope\": 1}").await.0, 400);
    let (code, json) = get(webui, "/json").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["hashes"], 0);
    let (_, page) = get(webui, "/").await;
    assert!(page.contains("hashes/second"), "{page}");

    // A worker given the three addresses mines and reports.
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let _k = spawn(&[
        "worker",
        "--rng",
        &url(rng),
        "--hasher",
        &url(hasher),
        "--webui",
        &url(webui),
        "--report-every",
        "0.2",
    ]);
    let mut last = serde_json::Value::Null;
    for _ in 0..600 {
        let (_, json) = get(webui, "/json").await;
        last = serde_json::from_str(&json).unwrap();
        if last["hashes"].as_u64().unwrap() > 0 && last["rate"].as_f64().unwrap() > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last["hashes"].as_u64().unwrap() > 0, "{last}");
    assert!(last["rate"].as_f64().unwrap() > 0.0, "{last}");
    assert_eq!(last["workers"], 1, "{last}");

    // fetch: prints a body; a refused connection is exit 1 with the reason.
    let out = Command::new(BIN)
        .args(["fetch", &format!("{}/", url(hasher))])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HASHER running on hasher\n"
    );
    let dead = port();
    let out = Command::new(BIN)
        .args(["fetch", &url(dead), "--timeout", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GET http://127.0.0.1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// webui's `/json` as (hashes, rate).
async fn tally(webui: u16) -> (u64, f64) {
    let (_, json) = get(webui, "/json").await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    (v["hashes"].as_u64().unwrap(), v["rate"].as_f64().unwrap())
}

/// Polls webui until its total passes `above`; the last total.
async fn hashes_pass(webui: u16, above: u64, within: Duration) -> u64 {
    let start = std::time::Instant::now();
    loop {
        let (hashes, _) = tally(webui).await;
        if hashes > above || start.elapsed() > within {
            return hashes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A worker that starts before its Services, and sees them go away and come back, keeps
/// trying: it says why on stderr and mines again once they answer.
#[tokio::test]
async fn a_worker_outlives_its_services_going_and_coming_back() {
    let (rng, hasher, webui) = (port(), port(), port());
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let log = tempfile::NamedTempFile::new().unwrap();
    let _k = Kill(
        Command::new(BIN)
            .args(["worker", "--rng", &url(rng), "--hasher", &url(hasher)])
            .args([
                "--webui",
                &url(webui),
                "--report-every",
                "0.2",
                "--timeout",
                "1",
            ])
            .env("POD_NAME", "worker")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    let started =
        |what: &str, port: u16| spawn(&[what, "--port", &port.to_string(), "--delay-ms", "0"]);
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(log.path())
        .unwrap()
        .contains(&format!("GET {}/32", url(rng)))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no complaint about rng"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The Services come up: mining starts.
    let mut r = started("rng", rng);
    let _h = started("hasher", hasher);
    let mut w = spawn(&["webui", "--port", &webui.to_string()]);
    let mined = hashes_pass(webui, 0, Duration::from_secs(20)).await;
    assert!(mined > 0, "nothing mined once the Services answered");

    // rng and webui go away (their connections with them) and come back on the same
    // ports: the worker mines and reports again.
    drop((r, w));
    tokio::time::sleep(Duration::from_secs(2)).await;
    r = started("rng", rng);
    w = spawn(&["webui", "--port", &webui.to_string()]);
    let again = hashes_pass(webui, 0, Duration::from_secs(20)).await;
    assert!(again > 0, "the worker did not come back to the new webui");
    assert!(tally(webui).await.1 > 0.0);
    let complaints = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        complaints.contains(&format!("POST {}/report", url(webui))),
        "{complaints}"
    );
    drop((r, w));
}
