//! Proxy sync figures: full syncs of 1,000 / 5,000 / 10,000 Services with two
//! endpoints each, and partial syncs of one changed Service among 10,000, applied with
//! the real iptables-restore or nft inside a fresh network namespace (root needed).
//!
//! `cargo bench -p kommit-proxy --bench sync -- --mode nftables` (or see `main`)
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use nix::sys::resource::{UsageWho, getrusage};

use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use kommit_proxy::iptables::{
    Backend, IpFamily, IptablesConfig, IptablesProxier, Runner, RunnerError, SystemRunner,
};
use kommit_proxy::nftables::{Nft, NftablesConfig, NftablesProxier};
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

impl Nft for NullRunner {
    fn apply(&self, _: &str) -> Result<(), RunnerError> {
        Ok(())
    }
    fn list_table(&self, _: IpFamily) -> Result<Option<String>, RunnerError> {
        Ok(None)
    }
    fn set_sysctl(&self, _: &str, _: &str) -> Result<(), RunnerError> {
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
        external_ips: Vec::new(),
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

/// One sync's figures, whichever mode wrote it.
struct Timed {
    full: bool,
    ports_regenerated: usize,
    generate: Duration,
    /// iptables-restore or nft.
    apply: Duration,
    /// iptables-save (full iptables syncs).
    save: Duration,
    /// What was written, e.g. "2 chains, 5 rules".
    written: String,
    bytes: usize,
    cpu_self: Duration,
    cpu_children: Duration,
}

impl Timed {
    fn total(&self) -> Duration {
        self.generate + self.apply + self.save
    }
}

/// A proxier under measurement.
trait Bench {
    fn sync_timed(&mut self, st: &ProxyState) -> Timed;
    fn force_full_sync(&mut self);
}

fn measured<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (s0, c0) = cpu();
    let out = f();
    let (s1, c1) = cpu();
    (out, s1 - s0, c1 - c0)
}

impl<R: Runner> Bench for IptablesProxier<R> {
    fn sync_timed(&mut self, st: &ProxyState) -> Timed {
        let (r, cpu_self, cpu_children) = measured(|| self.sync(st).unwrap());
        Timed {
            full: r.full,
            ports_regenerated: r.ports_regenerated,
            generate: r.generate,
            apply: r.restore,
            save: r.save,
            written: format!(
                "{} chains, {} rules",
                r.chains_written.len(),
                r.rules_written
            ),
            bytes: r.input_bytes,
            cpu_self,
            cpu_children,
        }
    }
    fn force_full_sync(&mut self) {
        IptablesProxier::force_full_sync(self)
    }
}

impl<N: Nft> Bench for NftablesProxier<N> {
    fn sync_timed(&mut self, st: &ProxyState) -> Timed {
        let (r, cpu_self, cpu_children) = measured(|| self.sync(st).unwrap());
        Timed {
            full: r.full,
            ports_regenerated: r.ports_regenerated,
            generate: r.generate,
            apply: r.apply,
            save: Duration::ZERO,
            written: format!(
                "{} chains, {} elements",
                r.chains_written.len(),
                r.elements_added + r.elements_deleted
            ),
            bytes: r.script_bytes,
            cpu_self,
            cpu_children,
        }
    }
    fn force_full_sync(&mut self) {
        NftablesProxier::force_full_sync(self)
    }
}

fn ms(d: Duration) -> String {
    format!("{:9.1} ms", d.as_secs_f64() * 1000.0)
}

fn line(what: &str, t: &Timed) {
    println!(
        "{what:<50} wall: generate {} apply {} save {} total {} | cpu: kommit {} tools {} | {}, {} KiB",
        ms(t.generate),
        ms(t.apply),
        ms(t.save),
        ms(t.total()),
        ms(t.cpu_self),
        ms(t.cpu_children),
        t.written,
        t.bytes / 1024
    );
}

fn median(mut v: Vec<Timed>) -> Timed {
    v.sort_by_key(Timed::total);
    v.swap_remove(v.len() / 2)
}

fn config() -> IptablesConfig {
    IptablesConfig {
        cluster_cidr: Some("10.244.0.0/15".into()),
        ..IptablesConfig::default()
    }
}

fn nft_config() -> NftablesConfig {
    NftablesConfig {
        cluster_cidr: Some("10.244.0.0/15".into()),
        ..NftablesConfig::default()
    }
}

/// Full syncs of `n` Services (from empty tables, then over the rules in place).
fn full(proxier: &mut impl Bench, st: &ProxyState, n: u32) {
    let r = proxier.sync_timed(st);
    assert!(r.full);
    line(&format!("full sync, {n} services, empty tables"), &r);
    proxier.force_full_sync();
    let r = proxier.sync_timed(st);
    line(&format!("full sync, {n} services, rules in place"), &r);
}

/// Partial syncs on top of the `n` Services in place.
fn partial(proxier: &mut impl Bench, st: &mut ProxyState, n: u32) {
    // One Service's endpoint changes (a pod replaced).
    let mut reports = Vec::new();
    for round in 1..=9u32 {
        let i = round * 997 % n;
        st.set_endpoints(service(i).name, endpoints(i, round));
        let r = proxier.sync_timed(st);
        assert!(!r.full && r.ports_regenerated == 1);
        reports.push(r);
    }
    line(
        &format!("partial sync, 1 endpoint changed of {n} (median of 9)"),
        &median(reports),
    );
    // One Service added.
    let mut reports = Vec::new();
    for round in 0..5u32 {
        let svc = service(n + round);
        let name = svc.name.clone();
        st.upsert_service(svc);
        st.set_endpoints(name, endpoints(n + round, 0));
        let r = proxier.sync_timed(st);
        assert!(!r.full);
        reports.push(r);
    }
    line(
        &format!("partial sync, 1 service added to {n} (median of 5)"),
        &median(reports),
    );
    let r = proxier.sync_timed(st);
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
    println!("nftables generation only (no nft):");
    for &n in sizes {
        let mut proxier = NftablesProxier::new(NullRunner, nft_config()).unwrap();
        let mut st = state(n);
        full(&mut proxier, &st, n);
        if n == largest {
            partial(&mut proxier, &mut st, n);
        }
    }
}

/// nftables mode: full syncs for each size and, at the largest, partial syncs.
fn run_nft(sizes: &[u32]) {
    println!("nftables mode ({}):", nft_version());
    let largest = sizes.iter().copied().max().unwrap_or(0);
    for &n in sizes {
        let ns = Netns::new();
        // nft runs as kommit runs it, without `ip netns exec` in front (which costs a
        // process and ~20 ms per sync): this thread enters the namespace instead.
        let path = format!("/run/netns/{}", ns.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
            let mut proxier = NftablesProxier::new(SystemRunner::new(), nft_config()).unwrap();
            let mut st = state(n);
            full(&mut proxier, &st, n);
            if n == largest {
                partial(&mut proxier, &mut st, n);
            }
        })
        .join()
        .unwrap();
    }
}

fn nft_version() -> String {
    Command::new("nft")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "nft not found".into())
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
    let r = proxier.sync_timed(&st);
    line(&format!("preload, {n} services (flush mode)"), &r);
    partial(&mut proxier, &mut st, n);
}

/// `-- [--dry] [--mode nftables] [--backend legacy|nft|installed] [--sizes 1000,5000,10000]`.
///
/// `--mode nftables`: the nftables mode with the real nft, full syncs for each size and
/// partial syncs among the largest. Without arguments: generation alone (both modes), then
/// the nftables mode, then iptables-legacy for 1,000 / 5,000 / 10,000
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
    if arg("--mode").as_deref() == Some("nftables") {
        return run_nft(sizes.as_deref().unwrap_or(&all));
    }
    match backend {
        Some(b) => run(b, sizes.as_deref().unwrap_or(&all)),
        None => {
            dry(&all);
            run_nft(&all);
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
