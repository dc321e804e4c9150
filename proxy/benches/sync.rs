//! iptables sync figures: full syncs of 1,000 / 5,000 / 10,000 Services with two
//! endpoints each, and partial syncs of one changed Service among 10,000, applied with
//! the real iptables-restore inside a fresh network namespace (root needed).
//!
//! `cargo bench -p kommit-proxy --bench sync`
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};

use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use kommit_proxy::iptables::{
    Backend, IpFamily, IptablesConfig, IptablesProxier, Runner, RunnerError, SyncReport,
    SystemRunner,
};
use kommit_proxy::{
    Endpoint, Protocol, ProxyState, Service, ServiceName, ServicePort, ServiceType,
};

/// Answers `iptables-save` with empty tables and drops restores: generation figures
/// without root.
struct NullRunner;

impl Runner for NullRunner {
    fn save(&self, _: IpFamily, table: &str) -> Result<String, RunnerError> {
        Ok(format!("*{table}\nCOMMIT\n"))
    }
    fn restore(&self, _: IpFamily, _: &[u8]) -> Result<(), RunnerError> {
        Ok(())
    }
    fn sysctl(&self, _: &str, _: &str) -> Result<(), RunnerError> {
        Ok(())
    }
}

/// The real runner, except that the first restore into the (fresh, empty) namespace runs
/// without --noflush: iptables-nft 1.8.9 needs minutes for 10,000 Services with
/// --noflush, and in an empty namespace both modes leave the same tables.
struct PreloadRunner {
    inner: SystemRunner,
    ns: String,
    program: &'static str,
    first: AtomicBool,
}

impl Runner for PreloadRunner {
    fn save(&self, family: IpFamily, table: &str) -> Result<String, RunnerError> {
        self.inner.save(family, table)
    }
    fn restore(&self, family: IpFamily, input: &[u8]) -> Result<(), RunnerError> {
        if !self.first.swap(false, Ordering::SeqCst) {
            return self.inner.restore(family, input);
        }
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, self.program])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        assert!(child.wait().unwrap().success(), "preload restore failed");
        Ok(())
    }
    fn sysctl(&self, key: &str, value: &str) -> Result<(), RunnerError> {
        self.inner.sysctl(key, value)
    }
}

struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = format!("kommit-bench-{:08x}", rand::random::<u32>());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name} failed: the benchmark needs root");
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(base: [u8; 2], i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(base[0], base[1], (i >> 8) as u8, i as u8))
}

fn endpoints(i: u32, generation: u32) -> BTreeMap<String, Vec<Endpoint>> {
    let a = ip([10, 244], (i * 2 + generation * 40_000) % 65_536);
    let b = ip([10, 245], i * 2 + 1);
    BTreeMap::from([(
        String::new(),
        vec![Endpoint::new(a, 8080), Endpoint::new(b, 8080)],
    )])
}

fn service(i: u32) -> Service {
    Service {
        name: ServiceName::new(format!("ns{}", i % 50), format!("svc-{i}")),
        cluster_ip: ip([10, 96], i + 1),
        service_type: ServiceType::ClusterIp,
        ports: vec![ServicePort {
            name: String::new(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
        }],
    }
}

fn state(n: u32) -> ProxyState {
    let mut s = ProxyState::new();
    for i in 0..n {
        let svc = service(i);
        let name = svc.name.clone();
        s.upsert_service(svc);
        s.set_endpoints(name, endpoints(i, 0));
    }
    s
}

/// CPU time (user + system) of this process and of its finished children, so figures
/// can be read apart from how busy the machine is.
fn cpu() -> (Duration, Duration) {
    let t = |who| {
        let u = getrusage(who).unwrap();
        let tv = |t: nix::sys::time::TimeVal| {
            Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000)
        };
        tv(u.user_time()) + tv(u.system_time())
    };
    (t(UsageWho::RUSAGE_SELF), t(UsageWho::RUSAGE_CHILDREN))
}

struct Timed {
    report: SyncReport,
    cpu_self: Duration,
    cpu_children: Duration,
}

fn sync<R: Runner>(proxier: &mut IptablesProxier<R>, st: &ProxyState) -> Timed {
    let (s0, c0) = cpu();
    let report = proxier.sync(st).unwrap();
    let (s1, c1) = cpu();
    Timed {
        report,
        cpu_self: s1 - s0,
        cpu_children: c1 - c0,
    }
}

fn ms(d: Duration) -> String {
    format!("{:9.1} ms", d.as_secs_f64() * 1000.0)
}

fn line(what: &str, t: &Timed) {
    let r = &t.report;
    println!(
        "{what:<50} wall: generate {} restore {} save {} total {} | cpu: kommit {} iptables {} | {} chains, {} rules, {} KiB",
        ms(r.generate),
        ms(r.restore),
        ms(r.save),
        ms(r.generate + r.restore + r.save),
        ms(t.cpu_self),
        ms(t.cpu_children),
        r.chains_written.len(),
        r.rules_written,
        r.input_bytes / 1024
    );
}

fn median(mut v: Vec<Timed>) -> Timed {
    v.sort_by_key(|t| t.report.generate + t.report.restore + t.report.save);
    v.swap_remove(v.len() / 2)
}

fn config() -> IptablesConfig {
    IptablesConfig {
        cluster_cidr: Some("10.244.0.0/15".into()),
        ..IptablesConfig::default()
    }
}

/// Full syncs of `n` Services (from empty tables, then over the rules in place).
fn full<R: Runner>(proxier: &mut IptablesProxier<R>, st: &ProxyState, n: u32) {
    let r = sync(proxier, st);
    assert!(r.report.full);
    line(&format!("full sync, {n} services, empty tables"), &r);
    proxier.force_full_sync();
    let r = sync(proxier, st);
    line(&format!("full sync, {n} services, rules in place"), &r);
}

/// Partial syncs on top of the `n` Services in place.
fn partial<R: Runner>(proxier: &mut IptablesProxier<R>, st: &mut ProxyState, n: u32) {
    // One Service's endpoint changes (a pod replaced).
    let mut reports = Vec::new();
    for round in 1..=9u32 {
        let i = round * 997 % n;
        st.set_endpoints(service(i).name, endpoints(i, round));
        let r = sync(proxier, st);
        assert!(
            !r.report.full && r.report.ports_regenerated == 1,
            "{:?}",
            r.report
        );
        reports.push(r);
    }
    line(
        &format!("partial sync, 1 endpoint changed of {n} (median of 9)"),
        &median(reports),
    );
    // One Service added: KOMMIT-SERVICES (one rule per Service) is rewritten too.
    let mut reports = Vec::new();
    for round in 0..5u32 {
        let svc = service(n + round);
        let name = svc.name.clone();
        st.upsert_service(svc);
        st.set_endpoints(name, endpoints(n + round, 0));
        let r = sync(proxier, st);
        assert!(!r.report.full, "{:?}", r.report);
        reports.push(r);
    }
    line(
        &format!("partial sync, 1 service added to {n} (median of 5)"),
        &median(reports),
    );
    let r = sync(proxier, st);
    line("partial sync, nothing changed", &r);
}

/// Generation only, no iptables.
fn dry(sizes: &[u32]) {
    println!("generation only (no iptables):");
    let largest = sizes.iter().copied().max().unwrap_or(0);
    for &n in sizes {
        let mut proxier = IptablesProxier::new(NullRunner, config()).unwrap();
        let mut st = state(n);
        full(&mut proxier, &st, n);
        if n == largest {
            partial(&mut proxier, &mut st, n);
        }
    }
}

/// Full syncs for each size and, at the largest, partial syncs.
fn run(backend: Backend, sizes: &[u32]) {
    println!("backend {backend:?}:");
    let largest = sizes.iter().copied().max().unwrap_or(0);
    for &n in sizes {
        let ns = Netns::new();
        let runner = SystemRunner::in_netns(&ns.0).with_backend(backend);
        let mut proxier = IptablesProxier::new(runner, config()).unwrap();
        let mut st = state(n);
        full(&mut proxier, &st, n);
        if n == largest {
            partial(&mut proxier, &mut st, n);
        }
    }
}

/// Partial syncs among `n` Services whose rules were loaded without --noflush.
fn run_preloaded(backend: Backend, n: u32) {
    println!("backend {backend:?}, {n} services loaded into an empty namespace without --noflush:");
    let ns = Netns::new();
    let program = match backend {
        Backend::Installed => "iptables-restore",
        Backend::Legacy => "iptables-legacy-restore",
        Backend::Nft => "iptables-nft-restore",
    };
    let runner = PreloadRunner {
        inner: SystemRunner::in_netns(&ns.0).with_backend(backend),
        ns: ns.0.clone(),
        program,
        first: AtomicBool::new(true),
    };
    let mut proxier = IptablesProxier::new(runner, config()).unwrap();
    let mut st = state(n);
    let r = sync(&mut proxier, &st);
    line(&format!("preload, {n} services (flush mode)"), &r);
    partial(&mut proxier, &mut st, n);
}

/// `-- [--dry] [--backend legacy|nft|installed] [--sizes 1000,5000,10000]`.
///
/// Without arguments: generation alone, then iptables-legacy for 1,000 / 5,000 / 10,000
/// Services, then the installed iptables (nft on Debian) for 1,000 and 2,000 full and
/// partial syncs among 10,000 preloaded (iptables-nft 1.8.9's --noflush restore grows
/// quadratically with the rules written, so a full 10,000 takes minutes there).
fn main() {
    println!(
        "iptables sync benchmark ({}), real iptables-restore in a fresh network namespace",
        iptables_version()
    );
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let backend = arg("--backend").map(|b| match b.as_str() {
        "legacy" => Backend::Legacy,
        "nft" => Backend::Nft,
        "installed" => Backend::Installed,
        other => panic!("--backend {other}: expected legacy, nft or installed"),
    });
    let sizes: Option<Vec<u32>> = arg("--sizes").map(|s| {
        s.split(',')
            .map(|n| n.trim().parse().expect("--sizes takes numbers"))
            .collect()
    });
    let all = [1_000, 5_000, 10_000];
    if args.iter().any(|a| a == "--dry") {
        return dry(sizes.as_deref().unwrap_or(&all));
    }
    match backend {
        Some(b) => run(b, sizes.as_deref().unwrap_or(&all)),
        None => {
            dry(&all);
            run(Backend::Legacy, &all);
            run(Backend::Installed, &[1_000, 2_000]);
            run_preloaded(Backend::Installed, 10_000);
        }
    }
}

fn iptables_version() -> String {
    Command::new("iptables-restore")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "iptables-restore not found".into())
}
