//! Shared by the cache's end-to-end tests: start the real `kommit cache serve`
//! and a real etcd (Debian's etcd-server) on loopback, run real etcdctl, and
//! connect gRPC clients made from kommit's own protos.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use kommit_cache::grpc::pb::etcdserverpb as epb;
#[allow(unused_imports)]
pub use kommit_cache::grpc::pb::mvccpb;
use tonic::transport::Channel;

pub const KOMMIT: &str = env!("CARGO_BIN_EXE_kommit");

/// A running `kommit cache serve`, killed on drop.
pub struct Kommit {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl Kommit {
    pub fn start(data_dir: &Path) -> Kommit {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Kommit {
        let mut child = Command::new(KOMMIT)
            .args(["cache", "serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("KOMMIT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kommit starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("kommit printed {line:?} instead of its address"))
            .parse()
            .unwrap();
        Kommit {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Kommit {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real etcd (single member) in a temp dir on loopback ports, killed on drop.
pub struct Etcd {
    pub child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let client = free_port();
        let peer = free_port();
        let curl = format!("http://127.0.0.1:{client}");
        let purl = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "differential", "--data-dir"])
            .arg(dir.path().join("etcd"))
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
            .args(["--initial-cluster", &format!("differential={purl}")])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is installed (Debian package etcd-server; tests/run installs it)");
        let addr: SocketAddr = format!("127.0.0.1:{client}").parse().unwrap();
        let etcd = Etcd {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = etcdctl(&etcd.endpoint(), &["endpoint", "health"], None);
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        etcd
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs real etcdctl (v3 API) against `endpoint`.
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl is installed (Debian package etcd-client; tests/run installs it)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// etcdctl that must succeed; returns stdout.
pub fn etcdctl_ok(endpoint: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoint, args, None);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub struct Clients {
    pub kv: epb::kv_client::KvClient<Channel>,
    pub watch: epb::watch_client::WatchClient<Channel>,
    pub lease: epb::lease_client::LeaseClient<Channel>,
}

pub async fn connect(addr: SocketAddr) -> Clients {
    let deadline = Instant::now() + Duration::from_secs(20);
    let channel = loop {
        match Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    Clients {
        kv: epb::kv_client::KvClient::new(channel.clone()).max_decoding_message_size(64 << 20),
        watch: epb::watch_client::WatchClient::new(channel.clone()),
        lease: epb::lease_client::LeaseClient::new(channel),
    }
}

pub fn put(key: &str, value: &str) -> epb::PutRequest {
    epb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

pub fn range(key: &str) -> epb::RangeRequest {
    epb::RangeRequest {
        key: key.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

pub fn prefix_range(prefix: &str) -> epb::RangeRequest {
    let end = kommit_cache::prefix_end(prefix.as_bytes());
    epb::RangeRequest {
        key: prefix.as_bytes().to_vec().into(),
        range_end: end,
        ..Default::default()
    }
}
