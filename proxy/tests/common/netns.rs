//! Network namespaces for the real-iptables tests: created per test, always deleted
//! (a Drop guard, so also when the test fails), and entered per thread with setns(2)
//! so sockets can be opened inside them from the test process.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

/// Fails the test with a clear message unless it runs as root (CI does).
pub fn require_root() {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        uid, "0",
        "these tests drive real iptables in network namespaces and must run as root (uid is {uid}); \
         run them as root, as CI does (e.g. `sudo -E cargo test -p kommit-proxy`)"
    );
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace named `kommit-test-<random>`, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Self {
        require_root();
        let name = format!("kommit-test-{:08x}", rand::random::<u32>());
        run(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        run(&all);
    }

    /// Runs a command inside the namespace and returns its standard output.
    pub fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `iptables-save` of both tables, without the timestamped comment lines.
    pub fn iptables_save(&self) -> String {
        let mut s = String::new();
        for table in ["filter", "nat"] {
            for line in self.exec(&["iptables-save", "-t", table]).lines() {
                if !line.starts_with('#') {
                    s.push_str(line);
                    s.push('\n');
                }
            }
        }
        s
    }

    /// Runs `f` on a thread that has entered the namespace; sockets it opens stay there.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A TCP server in a namespace that answers every connection with its name and
/// counts the connections and their peers.
#[derive(Clone)]
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub peers: Arc<Mutex<Vec<IpAddr>>>,
}

impl Backend {
    pub fn start(ns: &Netns, addr: SocketAddr, name: &str) -> Self {
        let listener = ns.run(move || TcpListener::bind(addr).unwrap());
        let b = Backend {
            name: name.to_owned(),
            addr,
            hits: Arc::new(AtomicUsize::new(0)),
            peers: Arc::new(Mutex::new(Vec::new())),
        };
        let served = b.clone();
        // Serves until the test process ends (the thread holds the namespace open until
        // then; its name is already gone).
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                served.hits.fetch_add(1, Ordering::SeqCst);
                if let Ok(peer) = conn.peer_addr() {
                    served.peers.lock().unwrap().push(peer.ip());
                }
                let _ = conn.write_all(format!("{}\n", served.name).as_bytes());
            }
        });
        b
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Makes `n` connections to `addr` from inside `ns`, one after another, and returns
/// each answer (or the error).
pub fn requests(ns: &Netns, addr: SocketAddr, n: usize) -> Vec<Result<String, String>> {
    ns.run(move || {
        (0..n)
            .map(|_| {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    .map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).map_err(|e| e.to_string())?;
                Ok(out.trim().to_owned())
            })
            .collect()
    })
}
