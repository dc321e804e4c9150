//! Network namespaces for the real-iptables tests: created per test, always deleted
//! (a Drop guard, so also when the test fails), and entered per thread with setns(2)
//! so sockets can be opened inside them from the test process.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kommit_proxy::ProxyState;
use nix::sched::{CloneFlags, setns};

use super::{set_endpoints, tcp_service};

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

/// Three namespaces: the node (where the rules go), a client pod and backend pods;
/// see the layout in iptables_netns.rs.
pub struct Cluster {
    pub node: Netns,
    pub client: Netns,
    pub _backend_ns: Netns,
    pub backends: Vec<Backend>,
}

pub fn setup() -> Cluster {
    let node = Netns::new();
    let client = Netns::new();
    let backend_ns = Netns::new();
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    node.ip(&["addr", "add", "10.250.0.1/32", "dev", "lo"]);
    node.ip(&[
        "link",
        "add",
        "vclient",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &client.name,
    ]);
    node.ip(&[
        "link",
        "add",
        "vbackend",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &backend_ns.name,
    ]);
    node.ip(&["addr", "add", "10.244.1.1/24", "dev", "vclient"]);
    node.ip(&["addr", "add", "10.244.2.1/24", "dev", "vbackend"]);
    node.ip(&["link", "set", "vclient", "up"]);
    node.ip(&["link", "set", "vbackend", "up"]);
    // Cluster IPs exist nowhere: like a real node's default route, this one lets
    // connect() reach the OUTPUT chain and pods' packets reach FORWARD.
    node.ip(&["route", "add", "10.96.0.0/16", "via", "10.244.2.254"]);
    client.ip(&["addr", "add", "10.244.1.2/24", "dev", "eth0"]);
    client.ip(&["link", "set", "eth0", "up"]);
    client.ip(&["route", "add", "default", "via", "10.244.1.1"]);
    backend_ns.ip(&["addr", "add", "10.244.2.11/24", "dev", "eth0"]);
    backend_ns.ip(&["addr", "add", "10.244.2.12/24", "dev", "eth0"]);
    backend_ns.ip(&["addr", "add", "10.244.2.13/24", "dev", "eth0"]);
    backend_ns.ip(&["link", "set", "eth0", "up"]);
    backend_ns.ip(&["route", "add", "default", "via", "10.244.2.1"]);
    let backends = (1..=3)
        .map(|i| {
            Backend::start(
                &backend_ns,
                format!("10.244.2.1{i}:8080").parse().unwrap(),
                &format!("backend-{i}"),
            )
        })
        .collect();
    Cluster {
        node,
        client,
        _backend_ns: backend_ns,
        backends,
    }
}

/// web (NodePort 30080, endpoints on :8080) and empty (no endpoints).
pub fn state(endpoints: &[&str]) -> ProxyState {
    let mut state = ProxyState::new();
    state.upsert_service(tcp_service("default", "web", "", "10.96.0.10", Some(30080)));
    state.upsert_service(tcp_service("default", "empty", "", "10.96.0.12", None));
    let eps: Vec<(&str, u16)> = endpoints.iter().map(|ip| (*ip, 8080)).collect();
    set_endpoints(&mut state, "default", "web", "", &eps);
    state
}

pub fn tally(answers: &[Result<String, String>]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for a in answers {
        let key = a.clone().unwrap_or_else(|e| panic!("request failed: {e}"));
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

pub const CLUSTER_IP: &str = "10.96.0.10:80";
