//! The nftables proxier against the real `nft` and kernel, in network namespaces the
//! tests create and always delete (the layout of iptables_netns.rs). Must run as root
//! (CI does); fails with a clear message otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::netns::{CLUSTER_IP, requests, setup, state, tally};
use common::{Recording, set_endpoints, tcp_service};
use kommit_proxy::ServiceName;
use kommit_proxy::iptables::{IpFamily, SystemRunner};
use kommit_proxy::nftables::{Nft, NftablesConfig, NftablesProxier, cleanup};

fn config() -> NftablesConfig {
    NftablesConfig {
        cluster_cidr: Some("10.244.0.0/16".into()),
        ..NftablesConfig::default()
    }
}

fn table(runner: &impl Nft) -> String {
    runner.list_table(IpFamily::V4).unwrap().unwrap_or_default()
}

/// The blocks (chains, sets, maps) whose text differs between two listings.
fn changed_blocks(a: &str, b: &str) -> Vec<String> {
    fn blocks(s: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut current: Option<(String, String)> = None;
        for line in s.lines() {
            let t = line.trim();
            if line.starts_with('\t') && !line.starts_with("\t\t") && t.ends_with('{') {
                current = Some((t.trim_end_matches(" {").to_owned(), String::new()));
            } else if line == "\t}" {
                out.extend(current.take());
            } else if let Some((_, body)) = current.as_mut() {
                body.push_str(t);
                body.push('\n');
            }
        }
        out
    }
    let (ba, bb) = (blocks(a), blocks(b));
    let mut out: Vec<String> = ba
        .iter()
        .filter(|x| !bb.contains(x))
        .chain(bb.iter().filter(|x| !ba.contains(x)))
        .map(|(name, _)| name.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn cluster_ip_spreads_over_endpoints_follows_changes_and_cleans_up() {
    let c = setup();
    let runner = Recording::new(SystemRunner::in_netns(&c.node.name));
    let mut proxier = NftablesProxier::new(&runner, config()).unwrap();
    let mut st = state(&["10.244.2.11", "10.244.2.12", "10.244.2.13"]);
    let report = proxier.sync(&st).unwrap();
    assert!(report.full);
    let listed = table(&runner);
    assert!(listed.contains("map service-ips"), "{listed}");

    // From the node itself (nat output): 300 connections over three endpoints,
    // masqueraded to the node's address toward the pods.
    let cluster_ip: SocketAddr = CLUSTER_IP.parse().unwrap();
    let counts = tally(&requests(&c.node, cluster_ip, 300));
    for b in &c.backends {
        let n = counts.get(&b.name).copied().unwrap_or(0);
        assert!(
            n >= 50,
            "{} got {n} of 300 connections (expected about 100): {counts:?}",
            b.name
        );
        let mut peers = b.peers.lock().unwrap();
        assert!(
            peers.iter().all(|p| p.to_string() == "10.244.2.1"),
            "{peers:?}"
        );
        peers.clear();
    }

    // From a pod (nat prerouting): its own address is kept.
    let counts = tally(&requests(&c.client, cluster_ip, 60));
    assert_eq!(counts.values().sum::<usize>(), 60);
    for b in &c.backends {
        let mut peers = b.peers.lock().unwrap();
        assert!(
            peers.iter().all(|p| p.to_string() == "10.244.1.2"),
            "{peers:?}"
        );
        peers.clear();
    }

    // NodePort on the node address from the pod (masqueraded), and on 127.0.0.1.
    let counts = tally(&requests(
        &c.client,
        "10.250.0.1:30080".parse().unwrap(),
        30,
    ));
    assert_eq!(counts.values().sum::<usize>(), 30);
    for b in &c.backends {
        let peers = b.peers.lock().unwrap();
        assert!(
            peers.iter().all(|p| p.to_string() == "10.244.2.1"),
            "{peers:?}"
        );
    }
    let counts = tally(&requests(&c.node, "127.0.0.1:30080".parse().unwrap(), 30));
    assert_eq!(counts.values().sum::<usize>(), 30);

    // A Service without endpoints is refused at once, from the node and from a pod.
    for ns in [&c.node, &c.client] {
        let empty = requests(ns, "10.96.0.12:80".parse().unwrap(), 1);
        assert!(
            empty[0].as_ref().is_err_and(|e| e.contains("refused")),
            "{empty:?}"
        );
    }

    // backend-3 stops being ready: a partial sync changes map and set elements only
    // (web now goes to the 2-endpoint chains, its third endpoint and backend-3's hairpin
    // element go); nothing reaches backend-3 after.
    let before = table(&runner);
    st = state(&["10.244.2.11", "10.244.2.12"]);
    let report = proxier.sync(&st).unwrap();
    assert!(!report.full);
    assert!(report.chains_written.is_empty(), "{report:?}");
    assert!(report.chains_deleted.is_empty(), "{report:?}");
    assert_eq!((report.elements_added, report.elements_deleted), (2, 5));
    let script = runner.last_input().unwrap();
    assert!(!script.contains("chain"), "{script}");
    let after = table(&runner);
    assert_eq!(
        changed_blocks(&before, &after),
        [
            "map endpoints",
            "map nodeport-endpoints",
            "map service-ips",
            "map service-nodeports",
            "set hairpin"
        ]
    );
    assert!(
        after.contains("10.96.0.10 . tcp . 80 : goto endpoints-2"),
        "{after}"
    );
    let hits3 = c.backends[2].hits();
    let counts = tally(&requests(&c.node, cluster_ip, 100));
    assert_eq!(
        c.backends[2].hits(),
        hits3,
        "no connection may reach the removed endpoint: {counts:?}"
    );
    assert!(
        counts.get("backend-1").is_some_and(|n| *n >= 20)
            && counts.get("backend-2").is_some_and(|n| *n >= 20),
        "{counts:?}"
    );

    // A Service added: map elements only; it answers at once.
    st.upsert_service(tcp_service("default", "api", "", "10.96.0.20", None));
    set_endpoints(&mut st, "default", "api", "", &[("10.244.2.11", 8080)]);
    let report = proxier.sync(&st).unwrap();
    assert!(report.chains_written.is_empty(), "{report:?}");
    assert_eq!(
        report.elements_added, 2,
        "its map element and endpoint; the hairpin element exists already"
    );
    let counts = tally(&requests(&c.node, "10.96.0.20:80".parse().unwrap(), 20));
    assert_eq!(counts.get("backend-1"), Some(&20), "{counts:?}");

    // ... and removed again: its elements are gone, web still answers.
    st.remove_service(&ServiceName::new("default", "api"));
    let report = proxier.sync(&st).unwrap();
    assert_eq!(report.elements_deleted, 2, "{report:?}");
    let listed = table(&runner);
    assert!(!listed.contains("10.96.0.20"), "{listed}");
    assert!(listed.contains("10.244.2.11 . 10.244.2.11"), "{listed}");
    assert_eq!(
        tally(&requests(&c.node, cluster_ip, 10))
            .values()
            .sum::<usize>(),
        10
    );
    // A sync without changes writes nothing.
    let n = runner.inputs.lock().unwrap().len();
    assert!(!proxier.sync(&st).unwrap().changed());
    assert_eq!(runner.inputs.lock().unwrap().len(), n);

    // Cleanup: the table is gone and the cluster IP no longer answers; a second
    // cleanup finds nothing.
    let system = SystemRunner::in_netns(&c.node.name);
    assert!(cleanup(&system, IpFamily::V4).unwrap());
    assert_eq!(system.list_table(IpFamily::V4).unwrap(), None);
    assert!(requests(&c.node, cluster_ip, 1)[0].is_err());
    assert!(!cleanup(&system, IpFamily::V4).unwrap());

    // A fresh proxier starts with a full sync and works again; a second full sync over
    // the table replaces it with the same content.
    let mut proxier = NftablesProxier::new(&system, config()).unwrap();
    assert!(proxier.sync(&st).unwrap().full);
    let first = table(&system);
    proxier.force_full_sync();
    assert!(proxier.sync(&st).unwrap().full);
    assert_eq!(table(&system), first);
    assert_eq!(
        tally(&requests(&c.node, cluster_ip, 10))
            .values()
            .sum::<usize>(),
        10
    );
    cleanup(&system, IpFamily::V4).unwrap();
}

#[test]
fn a_failed_apply_leaves_the_old_table_intact() {
    let c = setup();
    let runner = Recording::new(SystemRunner::in_netns(&c.node.name));
    let mut proxier = NftablesProxier::new(&runner, config()).unwrap();
    let three = state(&["10.244.2.11", "10.244.2.12", "10.244.2.13"]);
    proxier.sync(&three).unwrap();
    let before = table(&runner);

    // A full sync for another state, with one bad rule near its end: nft rejects the
    // script and nothing of it is applied, although it deleted and rewrote the table
    // before the bad line.
    let mut probe = NftablesProxier::new(
        Recording::new(SystemRunner::in_netns("no-such-namespace")),
        config(),
    )
    .unwrap();
    assert!(probe.sync(&state(&["10.244.2.11"])).is_err());
    let good = probe.nft().last_input().unwrap();
    let at = good.rfind("\t}\n}\n").unwrap();
    let bad = format!(
        "{}\tchain broken {{\n\t\tgoto no-such-chain\n\t}}\n{}",
        &good[..at + 3],
        &good[at + 3..]
    );
    let err = runner.apply(&bad).unwrap_err();
    assert!(err.to_string().contains("nft"), "{err}");
    assert_eq!(table(&runner), before, "a failed apply must change nothing");

    let answers = requests(&c.node, CLUSTER_IP.parse().unwrap(), 150);
    let mut seen: Vec<String> = answers.into_iter().map(Result::unwrap).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["backend-1", "backend-2", "backend-3"]);
}

/// The golden scripts (nftables_golden.rs) in the order they were made, applied by the
/// real nft to a fresh namespace: the kernel accepts every one.
#[test]
fn the_golden_scripts_apply_for_real() {
    let ns = common::netns::Netns::new();
    let system = SystemRunner::in_netns(&ns.name);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for name in [
        "nft-full-sync.txt",
        "nft-partial-endpoint.txt",
        "nft-partial-add-remove.txt",
    ] {
        let script = std::fs::read_to_string(dir.join(name)).unwrap();
        system
            .apply(&script)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let listed = table(&system);
    assert!(
        listed.contains("10.96.0.30 . tcp . 80 : goto endpoints-1"),
        "{listed}"
    );
    assert!(!listed.contains("10.96.0.13"), "{listed}");
}

/// Rules removed behind kommit's back (a firewall reload flushing the ruleset) are seen
/// by the canary check and written again by the next sync.
#[test]
fn a_flushed_ruleset_is_noticed_and_written_again() {
    let c = setup();
    let system = SystemRunner::in_netns(&c.node.name);
    let mut proxier = NftablesProxier::new(&system, config()).unwrap();
    let st = state(&["10.244.2.11", "10.244.2.12"]);
    proxier.sync(&st).unwrap();
    assert!(proxier.rules_intact().unwrap());
    let cluster_ip: SocketAddr = CLUSTER_IP.parse().unwrap();
    assert!(requests(&c.node, cluster_ip, 1)[0].is_ok());

    c.node.exec(&["nft", "flush", "ruleset"]);
    assert!(requests(&c.node, cluster_ip, 1)[0].is_err());
    assert!(!proxier.rules_intact().unwrap());
    assert!(proxier.sync(&st).unwrap().full);
    assert!(proxier.rules_intact().unwrap());
    assert_eq!(
        tally(&requests(&c.node, cluster_ip, 10))
            .values()
            .sum::<usize>(),
        10
    );
    cleanup(&system, IpFamily::V4).unwrap();
}

/// The IPv6 table (`ip6 kommit`) is accepted by the real nft, full and partial.
#[test]
fn an_ipv6_table_applies_for_real() {
    let ns = common::netns::Netns::new();
    let system = SystemRunner::in_netns(&ns.name);
    let mut proxier = NftablesProxier::new(
        &system,
        NftablesConfig {
            family: IpFamily::V6,
            cluster_cidr: Some("fd00:10:244::/56".into()),
            ..NftablesConfig::default()
        },
    )
    .unwrap();
    let mut st = kommit_proxy::ProxyState::new();
    st.upsert_service(tcp_service(
        "default",
        "v6",
        "",
        "fd00:10:96::10",
        Some(30080),
    ));
    set_endpoints(&mut st, "default", "v6", "", &[("fd00:10:244::5", 8080)]);
    assert!(proxier.sync(&st).unwrap().full);
    set_endpoints(
        &mut st,
        "default",
        "v6",
        "",
        &[("fd00:10:244::5", 8080), ("fd00:10:244::6", 8080)],
    );
    assert!(!proxier.sync(&st).unwrap().full);
    let listed = system.list_table(IpFamily::V6).unwrap().unwrap();
    assert!(
        listed.contains("fd00:10:96::10 . tcp . 80 : goto endpoints-2"),
        "{listed}"
    );
    assert!(cleanup(&system, IpFamily::V6).unwrap());
}
