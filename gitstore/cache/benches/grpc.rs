//! Benchmark: kommit's etcd v3 endpoint against a real etcd, same client.
//!
//! Starts a real etcd (Debian's etcd-server, default settings, fsync on) and
//! kommit's cache server (this binary re-executed with `--serve-kommit DIR`, so
//! it runs in its own process like etcd), both on loopback, then drives each
//! with the same tonic client (kommit's own protos) and prints put and range
//! throughput and p50/p99 latency at 1 and 64 concurrent clients, with the
//! ratios kommit/etcd.
//!
//!     cargo bench -p kommit-cache --bench grpc
//!
//! Optional: `--seconds N` per measurement (default 5).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kommit_cache::grpc::pb::etcdserverpb as epb;
use tonic::transport::Channel;

const CONNECTIONS: usize = 8;
const KEYS: usize = 10_000;

fn value(i: usize) -> bytes::Bytes {
    // A Kubernetes-like object, about 1 KiB of JSON.
    let pad = "x".repeat(800);
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"pod-{i}","namespace":"bench","labels":{{"app":"web"}}}},"spec":{{"nodeName":"node-1","containers":[{{"name":"web","image":"web:1","args":["{pad}"]}}]}}}}"#
    )
    .into()
}

fn key(i: usize) -> bytes::Bytes {
    format!("/registry/pods/bench/pod-{}", i % KEYS).into()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_etcd(dir: &std::path::Path) -> (Proc, SocketAddr) {
    let (c, p) = (free_port(), free_port());
    let curl = format!("http://127.0.0.1:{c}");
    let purl = format!("http://127.0.0.1:{p}");
    let child = Command::new("etcd")
        .args(["--name", "bench", "--data-dir"])
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &curl,
            "--advertise-client-urls",
            &curl,
        ])
        .args([
            "--listen-peer-urls",
            &purl,
            "--initial-advertise-peer-urls",
            &purl,
        ])
        .args([
            "--initial-cluster",
            &format!("bench={purl}"),
            "--log-level",
            "error",
            "--logger",
            "zap",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd is installed (apt-get install etcd-server)");
    (Proc(child), format!("127.0.0.1:{c}").parse().unwrap())
}

fn start_kommit(dir: &std::path::Path) -> (Proc, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--serve-kommit")
        .arg(dir.join("kommit"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (
        Proc(child),
        line.trim().parse().expect("the server prints its address"),
    )
}

fn serve_kommit(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = kommit_cache::Cache::open(dir, kommit_cache::Options::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        let opts = kommit_cache::grpc::ServeOptions::for_listener(&listener).unwrap();
        kommit_cache::grpc::serve(cache, listener, opts, std::future::pending())
            .await
            .unwrap();
    });
}

async fn channels(addr: SocketAddr) -> Vec<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < CONNECTIONS {
        match Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
        {
            Ok(c) => out.push(c),
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Wait until the server answers (etcd elects itself leader first).
    let mut kv = epb::kv_client::KvClient::new(out[0].clone());
    while kv
        .range(epb::RangeRequest {
            key: key(0),
            ..Default::default()
        })
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{addr} does not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Put,
    Range,
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

async fn measure(chans: &[Channel], op: Op, clients: usize, secs: f64) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let mut kv = epb::kv_client::KvClient::new(chans[c % chans.len()].clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(4096);
                let mut i = c * 7919;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let t = Instant::now();
                    match op {
                        Op::Put => {
                            kv.put(epb::PutRequest {
                                key: key(i),
                                value: value(i),
                                ..Default::default()
                            })
                            .await
                            .unwrap();
                        }
                        Op::Range => {
                            let r = kv
                                .range(epb::RangeRequest {
                                    key: key(i),
                                    ..Default::default()
                                })
                                .await
                                .unwrap();
                            assert_eq!(r.into_inner().kvs.len(), 1);
                        }
                    }
                    lat.push(t.elapsed().as_micros() as u32);
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p) as usize] as f64;
    Figures {
        ops_per_sec: all.len() as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

async fn fill(chans: &[Channel]) {
    let mut tasks = Vec::new();
    for c in 0..32 {
        let mut kv = epb::kv_client::KvClient::new(chans[c % chans.len()].clone());
        tasks.push(tokio::spawn(async move {
            for i in (c..KEYS).step_by(32) {
                kv.put(epb::PutRequest {
                    key: key(i),
                    value: value(i),
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-kommit") {
        serve_kommit(&args[i + 1]);
        return;
    }
    let secs: f64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(5.0);
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, etcd_addr) = start_etcd(dir.path());
    let (_kommit, kommit_addr) = start_kommit(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let etcd = channels(etcd_addr).await;
        let kommit = channels(kommit_addr).await;
        fill(&etcd).await;
        fill(&kommit).await;
        println!("kommit cache vs etcd {} — same tonic client, {CONNECTIONS} connections, {secs} s per figure, ~1 KiB JSON values over {KEYS} keys", etcd_version());
        println!();
        println!(
            "{:<16} {:>12} {:>12} {:>7} | {:>9} {:>9} {:>7} | {:>9} {:>9} {:>7}",
            "workload", "etcd op/s", "kommit op/s", "ratio", "etcd p50", "kommit", "ratio", "etcd p99", "kommit", "ratio"
        );
        for (op, name) in [(Op::Put, "put"), (Op::Range, "range (get)")] {
            for clients in [1, 64] {
                let e = measure(&etcd, op, clients, secs).await;
                let k = measure(&kommit, op, clients, secs).await;
                println!(
                    "{:<16} {:>12.0} {:>12.0} {:>7.2} | {:>7.0}us {:>7.0}us {:>7.2} | {:>7.0}us {:>7.0}us {:>7.2}",
                    format!("{name} x{clients}"),
                    e.ops_per_sec,
                    k.ops_per_sec,
                    k.ops_per_sec / e.ops_per_sec,
                    e.p50_us,
                    k.p50_us,
                    k.p50_us / e.p50_us,
                    e.p99_us,
                    k.p99_us,
                    k.p99_us / e.p99_us,
                );
            }
        }
        println!();
        println!("ratio = kommit/etcd: >= 1 is better for op/s, <= 1 is better for latency");
    });
}

fn etcd_version() -> String {
    Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_default()
}
