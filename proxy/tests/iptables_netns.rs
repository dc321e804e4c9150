//! The iptables proxier against real iptables, inside network namespaces the tests create
//! and always delete. Must run as root (CI does); fails with a clear message otherwise.
//!
//! Layout per test:
//! ```text
//!   client ns (a pod)        node ns (kommit's rules)            backend ns (pods)
//!   eth0 10.244.1.2/24 ─veth─ vclient 10.244.1.1/24
//!                             vbackend 10.244.2.1/24 ─veth─ eth0 10.244.2.11-13, servers on :8080
//!                             lo: 10.250.0.1 (node address); 10.96.0.0/16 via 10.244.2.254
//! ```
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::netns::{CLUSTER_IP, requests, setup, state, tally};
use common::{Recording, set_endpoints, tcp_service};
use kommit_proxy::iptables::{
    IptablesConfig, IptablesProxier, Runner, SystemRunner, cleanup, endpoint_chain, service_chain,
};
use kommit_proxy::{Endpoint, Protocol, ServiceName, ServicePortName};

fn config() -> IptablesConfig {
    IptablesConfig {
        cluster_cidr: Some("10.244.0.0/16".into()),
        ..IptablesConfig::default()
    }
}

#[test]
fn cluster_ip_spreads_over_endpoints_follows_changes_and_cleans_up() {
    let c = setup();
    let runner = Recording::new(SystemRunner::in_netns(&c.node.name));
    let mut proxier = IptablesProxier::new(&runner, config()).unwrap();
    let mut st = state(&["10.244.2.11", "10.244.2.12", "10.244.2.13"]);
    assert!(proxier.sync(&st).unwrap().full);

    // From the node itself (OUTPUT chain): 300 connections over three endpoints.
    let cluster_ip: SocketAddr = CLUSTER_IP.parse().unwrap();
    let counts = tally(&requests(&c.node, cluster_ip, 300));
    for b in &c.backends {
        let n = counts.get(&b.name).copied().unwrap_or(0);
        assert!(
            n >= 50,
            "{} got {n} of 300 connections (expected about 100): {counts:?}",
            b.name
        );
    }
    // Host traffic is off-cluster: masqueraded to the node's address toward the pods.
    for b in &c.backends {
        assert!(
            b.peers
                .lock()
                .unwrap()
                .iter()
                .all(|p| p.to_string() == "10.244.2.1"),
            "{:?}",
            b.peers
        );
        b.peers.lock().unwrap().clear();
    }

    // From a pod (PREROUTING): reaches the endpoints with its own address kept.
    let counts = tally(&requests(&c.client, cluster_ip, 60));
    assert_eq!(counts.values().sum::<usize>(), 60);
    for b in &c.backends {
        assert!(
            b.peers
                .lock()
                .unwrap()
                .iter()
                .all(|p| p.to_string() == "10.244.1.2"),
            "{:?}",
            b.peers
        );
        b.peers.lock().unwrap().clear();
    }

    // NodePort on the node address from the pod (masqueraded), and on 127.0.0.1 from the node.
    let counts = tally(&requests(
        &c.client,
        "10.250.0.1:30080".parse().unwrap(),
        30,
    ));
    assert_eq!(counts.values().sum::<usize>(), 30);
    for b in &c.backends {
        assert!(
            b.peers
                .lock()
                .unwrap()
                .iter()
                .all(|p| p.to_string() == "10.244.2.1"),
            "{:?}",
            b.peers
        );
    }
    let counts = tally(&requests(&c.node, "127.0.0.1:30080".parse().unwrap(), 30));
    assert_eq!(counts.values().sum::<usize>(), 30);

    // A Service without endpoints is rejected at once, not left to time out.
    let empty = requests(&c.node, "10.96.0.12:80".parse().unwrap(), 1);
    assert!(
        empty[0].as_ref().is_err_and(|e| e.contains("refused")),
        "{empty:?}"
    );
    let empty = requests(&c.client, "10.96.0.12:80".parse().unwrap(), 1);
    assert!(
        empty[0].as_ref().is_err_and(|e| e.contains("refused")),
        "{empty:?}"
    );

    // backend-3 stops being ready: a partial sync rewrites only web's service chain and
    // deletes backend-3's endpoint chain; nothing reaches backend-3 afterwards.
    let before = c.node.iptables_save();
    st = state(&["10.244.2.11", "10.244.2.12"]);
    let report = proxier.sync(&st).unwrap();
    assert!(!report.full);
    let web = ServicePortName::new("default", "web", "");
    let svc = service_chain(&web, Protocol::Tcp);
    let sep3 = endpoint_chain(
        &web,
        Protocol::Tcp,
        &Endpoint::new("10.244.2.13".parse().unwrap(), 8080),
    );
    assert_eq!(report.chains_written, [format!("nat/{svc}")]);
    assert_eq!(report.chains_deleted, [format!("nat/{sep3}")]);
    let input = runner.last_input().unwrap();
    let declared: Vec<&str> = input.lines().filter(|l| l.starts_with(':')).collect();
    assert_eq!(
        declared,
        [format!(":{svc} - [0:0]"), format!(":{sep3} - [0:0]")]
    );
    // In the kernel: only those two chains differ.
    let after = c.node.iptables_save();
    let changed_chains = |a: &str, b: &str| -> Vec<String> {
        let lines = |s: &str| -> Vec<String> { s.lines().map(str::to_owned).collect() };
        let (la, lb) = (lines(a), lines(b));
        let mut out: Vec<String> = la
            .iter()
            .filter(|l| !lb.contains(l))
            .chain(lb.iter().filter(|l| !la.contains(l)))
            .filter_map(|l| {
                l.split(' ')
                    .next()
                    .map(|w| w.trim_start_matches(':').to_owned())
                    .filter(|w| w != "-A")
            })
            .chain(
                la.iter()
                    .filter(|l| !lb.contains(l))
                    .chain(lb.iter().filter(|l| !la.contains(l)))
                    .filter(|l| l.starts_with("-A "))
                    .map(|l| l.split(' ').nth(1).unwrap().to_owned()),
            )
            .collect();
        out.sort();
        out.dedup();
        out
    };
    let mut want = vec![svc.clone(), sep3.clone()];
    want.sort();
    assert_eq!(changed_chains(&before, &after), want);

    let hits3 = c.backends[2].hits();
    let counts = tally(&requests(&c.node, cluster_ip, 100));
    assert_eq!(
        c.backends[2].hits(),
        hits3,
        "no connection may reach the removed endpoint: {counts:?}"
    );
    assert_eq!(counts.get("backend-3"), None);
    assert!(
        counts.get("backend-1").is_some_and(|n| *n >= 20)
            && counts.get("backend-2").is_some_and(|n| *n >= 20)
    );

    // A Service added among the others: its rule is inserted into KOMMIT-SERVICES (not a
    // rewrite of the chain), before the nodeports rule, and it answers at once.
    st.upsert_service(tcp_service("default", "api", "", "10.96.0.20", None));
    set_endpoints(&mut st, "default", "api", "", &[("10.244.2.11", 8080)]);
    let report = proxier.sync(&st).unwrap();
    assert_eq!(report.chains_edited, ["nat/KOMMIT-SERVICES"], "{report:?}");
    let counts = tally(&requests(&c.node, "10.96.0.20:80".parse().unwrap(), 20));
    assert_eq!(counts.get("backend-1"), Some(&20), "{counts:?}");
    let saved = c.node.iptables_save();
    let nat_services: Vec<&str> = saved
        .lines()
        .filter(|l| l.starts_with("-A KOMMIT-SERVICES ") && l.contains("KOMMIT-"))
        .collect();
    assert!(
        nat_services
            .last()
            .unwrap()
            .ends_with("-j KOMMIT-NODEPORTS"),
        "{nat_services:?}"
    );
    // ... and removed again: its rule is deleted (-D) and its chains are gone.
    st.remove_service(&ServiceName::new("default", "api"));
    let report = proxier.sync(&st).unwrap();
    assert_eq!(report.chains_deleted.len(), 2, "{report:?}");
    let saved = c.node.iptables_save();
    assert!(!saved.contains("default/api"), "{saved}");
    assert_eq!(
        tally(&requests(&c.node, cluster_ip, 10))
            .values()
            .sum::<usize>(),
        10
    );

    // Cleanup: no kommit chain or jump left, and the cluster IP no longer answers.
    let report = cleanup(
        &SystemRunner::in_netns(&c.node.name),
        kommit_proxy::iptables::IpFamily::V4,
    )
    .unwrap();
    assert!(!report.chains_deleted.is_empty() && !report.jumps_deleted.is_empty());
    let saved = c.node.iptables_save();
    assert!(!saved.contains("KOMMIT"), "{saved}");
    assert!(requests(&c.node, cluster_ip, 1)[0].is_err());
    // A fresh proxier afterwards starts with a full sync and works again.
    let mut proxier = IptablesProxier::new(SystemRunner::in_netns(&c.node.name), config()).unwrap();
    assert!(proxier.sync(&st).unwrap().full);
    assert_eq!(
        tally(&requests(&c.node, cluster_ip, 10))
            .values()
            .sum::<usize>(),
        10
    );
    // A second full sync over existing rules leaves exactly one jump of each kind.
    proxier.force_full_sync();
    proxier.sync(&st).unwrap();
    let saved = c.node.iptables_save();
    assert_eq!(
        saved
            .matches(
                "-A PREROUTING -m comment --comment \"kommit service portals\" -j KOMMIT-SERVICES"
            )
            .count(),
        1
    );
    assert_eq!(saved.matches("-j KOMMIT-POSTROUTING").count(), 1, "{saved}");
}

#[test]
fn a_failed_or_cut_short_restore_leaves_the_old_rules_intact() {
    let c = setup();
    let runner = SystemRunner::in_netns(&c.node.name);
    let mut proxier = IptablesProxier::new(&runner, config()).unwrap();
    let recorder = Recording::new(&runner);
    let mut probe = IptablesProxier::new(&recorder, config()).unwrap();
    proxier
        .sync(&state(&["10.244.2.11", "10.244.2.12", "10.244.2.13"]))
        .unwrap();
    let before = c.node.iptables_save();
    let cluster_ip: SocketAddr = CLUSTER_IP.parse().unwrap();

    // A full sync for a changed state, with one bad rule added near the end of the nat
    // table: iptables-restore fails and nothing of the input is applied, although the
    // chains it flushed and rewrote came before the bad line.
    probe.sync(&state(&["10.244.2.11"])).unwrap();
    let good = recorder.last_input().unwrap();
    // (the probe applied it; put the three-endpoint rules back)
    proxier.force_full_sync();
    proxier
        .sync(&state(&["10.244.2.11", "10.244.2.12", "10.244.2.13"]))
        .unwrap();
    assert_eq!(c.node.iptables_save(), before);

    let bad = good.replacen(
        "-A KOMMIT-MARK-MASQ",
        "-A KOMMIT-MARK-MASQ -j KOMMIT-NO-SUCH-CHAIN\n-A KOMMIT-MARK-MASQ",
        1,
    );
    let nat_start = bad.find("*nat").unwrap();
    assert!(bad.find("KOMMIT-NO-SUCH-CHAIN").unwrap() > nat_start + 100);
    let err = runner
        .restore(kommit_proxy::iptables::IpFamily::V4, bad.as_bytes())
        .unwrap_err();
    assert!(err.to_string().contains("iptables-restore"), "{err}");
    assert_eq!(
        c.node.iptables_save(),
        before,
        "a failed restore must change nothing"
    );

    // kommit killed while writing: the input stops in the middle of the nat table, after
    // the chain flushes, with no COMMIT. The nat table is left as it was.
    let cut = &good[..nat_start + (good.len() - nat_start) / 2];
    let cut = &cut[..cut.rfind('\n').unwrap() + 1];
    assert!(cut.contains(":KOMMIT-SVC-") && !cut[nat_start..].contains("COMMIT"));
    assert!(
        runner
            .restore(kommit_proxy::iptables::IpFamily::V4, cut.as_bytes())
            .is_err()
    );
    assert_eq!(
        c.node.iptables_save(),
        before,
        "input without COMMIT must change nothing"
    );

    // Traffic still reaches all three endpoints.
    let answers = requests(&c.node, cluster_ip, 150);
    let mut seen: Vec<String> = answers.into_iter().map(Result::unwrap).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["backend-1", "backend-2", "backend-3"]);
}

/// Rules removed behind kommit's back (a firewall reload flushing the nat table) are
/// seen by the canary check and written again by the next sync.
#[test]
fn a_flushed_table_is_noticed_and_written_again() {
    let c = setup();
    let runner = SystemRunner::in_netns(&c.node.name);
    let mut proxier = IptablesProxier::new(&runner, config()).unwrap();
    let st = state(&["10.244.2.11", "10.244.2.12"]);
    proxier.sync(&st).unwrap();
    assert!(proxier.rules_intact().unwrap());
    let cluster_ip: SocketAddr = CLUSTER_IP.parse().unwrap();
    assert!(requests(&c.node, cluster_ip, 1)[0].is_ok());

    c.node.exec(&["iptables", "-t", "nat", "-F"]);
    c.node.exec(&["iptables", "-t", "nat", "-X"]);
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
    cleanup(&runner, kommit_proxy::iptables::IpFamily::V4).unwrap();
}
