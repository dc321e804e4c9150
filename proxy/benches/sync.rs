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

use kommit_proxy::iptables::{Backend, IptablesConfig, IptablesProxier, SyncReport, SystemRunner};
use kommit_proxy::{
    Endpoint, Protocol, ProxyState, Service, ServiceName, ServicePort, ServiceType,
};

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

fn ms(d: Duration) -> String {
    format!("{:9.1} ms", d.as_secs_f64() * 1000.0)
}

fn line(what: &str, r: &SyncReport) {
    println!(
        "{what:<44} generate {} restore {} save {} total {}   ({} chains, {} rules, {} KiB)",
        ms(r.generate),
        ms(r.restore),
        ms(r.save),
        ms(r.generate + r.restore + r.save),
        r.chains_written.len(),
        r.rules_written,
        r.input_bytes / 1024
    );
}

fn median(mut v: Vec<SyncReport>) -> SyncReport {
    v.sort_by_key(|r| r.generate + r.restore + r.save);
    v.swap_remove(v.len() / 2)
}

/// One run: full syncs for each size and, at the largest, partial syncs.
fn run(backend: Backend, sizes: &[u32]) {
    let config = IptablesConfig {
        cluster_cidr: Some("10.244.0.0/15".into()),
        ..IptablesConfig::default()
    };
    println!("backend {backend:?}:");
    let largest = sizes.iter().copied().max().unwrap_or(0);
    for &n in sizes {
        let ns = Netns::new();
        let runner = SystemRunner::in_netns(&ns.0).with_backend(backend);
        let mut proxier = IptablesProxier::new(runner, config.clone()).unwrap();
        let mut st = state(n);
        let r = proxier.sync(&st).unwrap();
        assert!(r.full);
        line(&format!("full sync, {n} services, empty tables"), &r);
        proxier.force_full_sync();
        let r = proxier.sync(&st).unwrap();
        line(&format!("full sync, {n} services, rules in place"), &r);
        if n != largest {
            continue;
        }
        // One Service's endpoint changes (a pod replaced): partial syncs.
        let mut reports = Vec::new();
        for round in 1..=9u32 {
            let i = round * 997 % n;
            st.set_endpoints(service(i).name, endpoints(i, round));
            let r = proxier.sync(&st).unwrap();
            assert!(!r.full && r.ports_regenerated == 1, "{r:?}");
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
            let r = proxier.sync(&st).unwrap();
            assert!(!r.full, "{r:?}");
            reports.push(r);
        }
        line(
            &format!("partial sync, 1 service added to {n} (median of 5)"),
            &median(reports),
        );
        let r = proxier.sync(&st).unwrap();
        line("partial sync, nothing changed", &r);
    }
}

/// `-- --backend legacy|nft|installed --sizes 1000,5000,10000`; without arguments:
/// iptables-legacy for 1,000 / 5,000 / 10,000 Services, then the installed iptables for
/// 1,000 and 2,000 (iptables-nft 1.8.9's --noflush restore grows quadratically with the
/// rules written, so 10,000 takes minutes there).
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
    match backend {
        Some(b) => run(b, sizes.as_deref().unwrap_or(&[1_000, 5_000, 10_000])),
        None => {
            run(
                Backend::Legacy,
                sizes.as_deref().unwrap_or(&[1_000, 5_000, 10_000]),
            );
            run(Backend::Installed, &[1_000, 2_000]);
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
