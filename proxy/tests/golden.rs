//! Golden iptables-restore input, checked for consistency, plus the proxier's sync
//! logic (full vs partial, errors, jumps, stale chains) against a recording fake runner.
//!
//! `KOMMIT_UPDATE_GOLDEN=1 cargo test -p kommit-proxy --test golden` rewrites the files.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use kommit_proxy::iptables::{IptablesConfig, IptablesProxier, endpoint_chain, service_chain};
use kommit_proxy::{Endpoint, Protocol, ServiceName, ServicePortName};

fn config() -> IptablesConfig {
    IptablesConfig {
        cluster_cidr: Some("10.244.0.0/16".into()),
        ..IptablesConfig::default()
    }
}

#[test]
fn full_sync_matches_golden_and_every_target_exists() {
    let runner = FakeRunner::default();
    let mut proxier = IptablesProxier::new(&runner, config()).unwrap();
    let report = proxier.sync(&golden_state()).unwrap();
    assert!(report.full);
    let input = runner.last_input().unwrap();
    golden("full-sync.txt", &input);

    assert_eq!(check(&input, &[]), Vec::<String>::new());
    // web (3 endpoints), api:http (2), dns:dns and dns:dns-tcp (2 each), front:https (4);
    // api:metrics has one endpoint and so no statistic rule but still a chain.
    assert_eq!(check_probabilities(&input), 6);
    assert!(input.contains("--probability 0.3333333333 -j KOMMIT-SEP-"));
    assert!(input.contains("--probability 0.2500000000 -j KOMMIT-SEP-"));
    // Not-ready endpoints, headless and ExternalName Services are absent.
    assert!(!input.contains("10.244.9.9") && !input.contains("10.244.1.6"));
    assert!(!input.contains("default/headless") && !input.contains("default/external"));
    // Services without endpoints are rejected in the filter table, not NATed.
    assert!(input.contains(
        "-A KOMMIT-SERVICES -m comment --comment \"default/empty has no endpoints\" -m tcp -p tcp -d 10.96.0.12/32 --dport 80 -j REJECT"
    ));
    assert!(input.contains("-A KOMMIT-EXTERNAL-SERVICES -m comment --comment \"default/down has no endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30081 -j REJECT"));
    assert!(!input.contains("-d 10.96.0.12/32 --dport 80 -j KOMMIT-SVC"));
    // External and load balancer IPs go through the Service's external chain (marked
    // for masquerading), or are rejected without endpoints; `ipMode: Proxy` is skipped.
    assert!(input.contains("-A KOMMIT-SERVICES -m comment --comment \"shop/front:https external IP\" -m tcp -p tcp -d 192.0.2.10/32 --dport 443 -j KOMMIT-EXT-"));
    assert!(input.contains("-A KOMMIT-EXTERNAL-SERVICES -m comment --comment \"default/down has no endpoints\" -m tcp -p tcp -d 192.0.2.20/32 --dport 80 -j REJECT"));
    assert!(!input.contains("192.0.2.11"));
    // Named ports map to their own target ports.
    assert!(input.contains("-j DNAT --to-destination 10.244.1.5:9100"));
    assert!(input.contains("-j DNAT --to-destination 10.244.2.5:8080"));
    // The nodeports jump is the last rule of KOMMIT-SERVICES.
    let nat = input.split("*nat").nth(1).unwrap();
    let last_services_rule = nat
        .lines()
        .rfind(|l| l.starts_with("-A KOMMIT-SERVICES "))
        .unwrap();
    assert!(
        last_services_rule.ends_with("-j KOMMIT-NODEPORTS"),
        "{last_services_rule}"
    );
    // Jumps from PREROUTING (containers) and OUTPUT (the host) and into POSTROUTING.
    for jump in [
        "-I PREROUTING 1 ",
        "-I OUTPUT 1 -m comment",
        "-I POSTROUTING 1 ",
    ] {
        assert!(nat.contains(jump), "{jump}");
    }
    assert_eq!(
        runner.sysctls.lock().unwrap().as_slice(),
        [(
            "net.ipv4.conf.all.route_localnet".to_owned(),
            "1".to_owned()
        )]
    );
}

#[test]
fn partial_sync_writes_only_changed_chains() {
    let runner = FakeRunner::default();
    let mut proxier = IptablesProxier::new(&runner, config()).unwrap();
    let mut state = golden_state();
    proxier.sync(&state).unwrap();
    let first = runner.last_input().unwrap();

    // Nothing changed: no restore at all.
    let report = proxier.sync(&state).unwrap();
    assert!(!report.full);
    assert_eq!(runner.restores(), 1);
    assert_eq!(report.ports_regenerated, 0);

    // One endpoint of web goes away.
    set_endpoints(
        &mut state,
        "default",
        "web",
        "",
        &[("10.244.1.2", 8080), ("10.244.2.4", 8080)],
    );
    let report = proxier.sync(&state).unwrap();
    assert!(!report.full);
    assert_eq!(report.ports_regenerated, 1);
    let web = ServicePortName::new("default", "web", "");
    let gone = endpoint_chain(
        &web,
        Protocol::Tcp,
        &Endpoint::new("10.244.1.3".parse().unwrap(), 8080),
    );
    assert_eq!(
        report.chains_written,
        [format!("nat/{}", service_chain(&web, Protocol::Tcp))]
    );
    assert_eq!(report.chains_deleted, [format!("nat/{gone}")]);
    let input = runner.last_input().unwrap();
    golden("partial-sync.txt", &input);
    assert_eq!(check(&input, &[("nat", &first)]), Vec::<String>::new());
    assert!(
        !input.contains("*filter"),
        "filter did not change and is not sent"
    );
    check_probabilities(&input);

    // A new Service: KOMMIT-SERVICES changes too.
    let mut svc = state
        .service(&ServiceName::new("default", "web"))
        .unwrap()
        .clone();
    svc.name = ServiceName::new("default", "web2");
    svc.cluster_ip = "10.96.0.20".parse().unwrap();
    state.upsert_service(svc);
    set_endpoints(&mut state, "default", "web2", "", &[("10.244.3.1", 80)]);
    let report = proxier.sync(&state).unwrap();
    let mut written = report.chains_written.clone();
    written.sort();
    let web2 = ServicePortName::new("default", "web2", "");
    let mut want = vec![
        format!("nat/{}", service_chain(&web2, Protocol::Tcp)),
        format!(
            "nat/{}",
            endpoint_chain(
                &web2,
                Protocol::Tcp,
                &Endpoint::new("10.244.3.1".parse().unwrap(), 80)
            )
        ),
    ];
    want.sort();
    assert_eq!(written, want);
    // KOMMIT-SERVICES gets one rule inserted (before its last, nodeports rule), not rewritten.
    assert_eq!(report.chains_edited, ["nat/KOMMIT-SERVICES"]);
    assert_eq!(report.rules_edited, 1);
    let input = runner.last_input().unwrap();
    golden("partial-sync-new-service.txt", &input);
    assert_eq!(check(&input, &[("nat", &first)]), Vec::<String>::new());

    // Its endpoints go: its chains are deleted, its KOMMIT-SERVICES rule deleted and the
    // filter table gets a REJECT.
    state.remove_endpoints(&ServiceName::new("default", "web2"));
    let report = proxier.sync(&state).unwrap();
    assert_eq!(report.chains_deleted.len(), 2, "{report:?}");
    assert!(report.chains_written.is_empty(), "{report:?}");
    assert_eq!(
        report.chains_edited,
        ["filter/KOMMIT-SERVICES", "nat/KOMMIT-SERVICES"]
    );
    let input = runner.last_input().unwrap();
    golden("partial-sync-no-endpoints.txt", &input);
    assert!(input.contains("-D KOMMIT-SERVICES -m comment --comment \"default/web2 cluster IP\""));
    assert!(
        input.contains("-A KOMMIT-SERVICES -m comment --comment \"default/web2 has no endpoints\"")
    );

    // A full sync afterwards writes the same shared chains as one from scratch would.
    proxier.force_full_sync();
    proxier.sync(&state).unwrap();
    let again = runner.last_input().unwrap();
    let runner2 = FakeRunner::default();
    IptablesProxier::new(&runner2, config())
        .unwrap()
        .sync(&state)
        .unwrap();
    assert_eq!(again, runner2.last_input().unwrap());
}

#[test]
fn a_failed_restore_makes_the_next_sync_full() {
    let runner = FakeRunner::default();
    let mut proxier = IptablesProxier::new(&runner, config()).unwrap();
    let mut state = golden_state();
    proxier.sync(&state).unwrap();
    set_endpoints(&mut state, "default", "web", "", &[("10.244.1.2", 8080)]);
    runner.fail_next_restore.store(true, Ordering::SeqCst);
    let err = proxier.sync(&state).unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    let report = proxier.sync(&state).unwrap();
    assert!(
        report.full,
        "after an error the state of the tables is unknown"
    );
}

#[test]
fn full_sync_repairs_jumps_and_deletes_leftover_chains() {
    let runner = FakeRunner::default();
    // A previous run left a stale service chain, a duplicated PREROUTING jump and a jump
    // into a chain that is no longer wanted.
    runner.saves.lock().unwrap().insert(
        "nat".into(),
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         :DOCKER - [0:0]\n:KOMMIT-SERVICES - [0:0]\n:KOMMIT-SVC-OLDOLDOLDOLDOLDO - [0:0]\n:KOMMIT-OLD - [0:0]\n\
         -A PREROUTING -m comment --comment \"kommit service portals\" -j KOMMIT-SERVICES\n\
         -A PREROUTING -m comment --comment \"kommit service portals\" -j KOMMIT-SERVICES\n\
         -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A OUTPUT -j KOMMIT-OLD\n\
         -A KOMMIT-SERVICES -d 10.96.0.99/32 -p tcp -m tcp --dport 80 -j KOMMIT-SVC-OLDOLDOLDOLDOLDO\n\
         COMMIT\n"
            .into(),
    );
    let mut proxier = IptablesProxier::new(&runner, config()).unwrap();
    let report = proxier.sync(&golden_state()).unwrap();
    let input = runner.last_input().unwrap();
    let nat = input.split("*nat").nth(1).unwrap();
    assert_eq!(
        nat.matches(
            "-D PREROUTING -m comment --comment \"kommit service portals\" -j KOMMIT-SERVICES"
        )
        .count(),
        1
    );
    assert!(
        !nat.contains("-I PREROUTING"),
        "one PREROUTING jump is kept"
    );
    assert!(nat.contains("-D OUTPUT -j KOMMIT-OLD"));
    assert!(nat.contains(
        "-I OUTPUT 1 -m comment --comment \"kommit service portals\" -j KOMMIT-SERVICES"
    ));
    assert!(nat.contains("-X KOMMIT-SVC-OLDOLDOLDOLDOLDO\n") && nat.contains("-X KOMMIT-OLD\n"));
    assert!(!nat.contains("DOCKER"), "other chains are left alone");
    assert!(report.chains_deleted.contains(&"nat/KOMMIT-OLD".to_owned()));
    let saved = runner.saves.lock().unwrap().get("nat").cloned().unwrap();
    assert_eq!(check(&input, &[("nat", &saved)]), Vec::<String>::new());
}

#[test]
fn periodic_full_sync_and_config_errors() {
    let runner = FakeRunner::default();
    let cfg = IptablesConfig {
        full_sync_period: Duration::ZERO,
        ..config()
    };
    let mut proxier = IptablesProxier::new(&runner, cfg).unwrap();
    let state = golden_state();
    assert!(proxier.sync(&state).unwrap().full);
    assert!(
        proxier.sync(&state).unwrap().full,
        "a zero period makes every sync full"
    );

    for bad in [
        IptablesConfig {
            masquerade_bit: 32,
            ..config()
        },
        IptablesConfig {
            cluster_cidr: Some("10.244.0.0".into()),
            ..config()
        },
        IptablesConfig {
            cluster_cidr: Some("fd00::/64".into()),
            ..config()
        },
    ] {
        let err = IptablesProxier::new(&runner, bad).err().unwrap();
        assert!(
            err.to_string().starts_with("invalid proxy configuration"),
            "{err}"
        );
    }
}

#[test]
fn cleanup_removes_every_kommit_chain_and_jump() {
    let runner = FakeRunner::default();
    runner.saves.lock().unwrap().insert(
        "filter".into(),
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:KOMMIT-SERVICES - [0:0]\n:DOCKER - [0:0]\n\
         -A INPUT -m conntrack --ctstate NEW -m comment --comment \"kommit x\" -j KOMMIT-SERVICES\n\
         -A FORWARD -j DOCKER\n-A KOMMIT-SERVICES -j REJECT\nCOMMIT\n"
            .into(),
    );
    let report =
        kommit_proxy::iptables::cleanup(&runner, kommit_proxy::iptables::IpFamily::V4).unwrap();
    assert_eq!(report.chains_deleted, ["filter/KOMMIT-SERVICES"]);
    assert_eq!(report.jumps_deleted.len(), 1);
    let input = runner.last_input().unwrap();
    assert_eq!(
        input,
        "*filter\n-D INPUT -m conntrack --ctstate NEW -m comment --comment \"kommit x\" -j KOMMIT-SERVICES\n\
         :KOMMIT-SERVICES - [0:0]\n-X KOMMIT-SERVICES\nCOMMIT\n"
    );
    // Nothing of kommit's left: no restore.
    let runner = FakeRunner::default();
    let report =
        kommit_proxy::iptables::cleanup(&runner, kommit_proxy::iptables::IpFamily::V4).unwrap();
    assert_eq!(report, Default::default());
    assert_eq!(runner.restores(), 0);
}

#[test]
fn large_clusters_drop_per_endpoint_comments() {
    let runner = FakeRunner::default();
    let cfg = IptablesConfig {
        large_cluster_endpoints: 5,
        ..config()
    };
    let mut proxier = IptablesProxier::new(&runner, cfg).unwrap();
    let state = golden_state();
    proxier.sync(&state).unwrap();
    let input = runner.last_input().unwrap();
    assert!(
        !input.contains(" -> "),
        "no per-endpoint comments above the threshold"
    );
    assert!(
        input.contains("\"default/web cluster IP\""),
        "service rules keep theirs"
    );
    assert!(input.contains("-A KOMMIT-SVC-LL7ZVDYRLBRX244O -m statistic --mode random --probability 0.3333333333 -j KOMMIT-SEP-"));
    assert_eq!(check(&input, &[]), Vec::<String>::new());
    check_probabilities(&input);
}

#[tokio::test]
async fn the_driver_brings_changes_to_the_rules_within_a_second() {
    use kommit_proxy::driver::{DriverTiming, run_iptables};
    use std::sync::Arc;
    let runner = Arc::new(FakeRunner::default());
    let proxier = IptablesProxier::new(runner.clone(), config()).unwrap();
    let mut state = golden_state();
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(state.clone()));
    let task = tokio::spawn(run_iptables(proxier, rx, DriverTiming::default()));
    let wait_for = |n: usize| {
        let runner = runner.clone();
        async move {
            let start = std::time::Instant::now();
            while runner.restores() < n {
                assert!(
                    start.elapsed() < Duration::from_secs(1),
                    "no sync within a second"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(1).await;
    // A burst of changes is coalesced and applied.
    for ip in ["10.244.1.2", "10.244.1.7", "10.244.1.8"] {
        set_endpoints(&mut state, "default", "web", "", &[(ip, 8080)]);
        tx.send(Arc::new(state.clone())).unwrap();
    }
    wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = runner.last_input().unwrap();
    assert!(
        last.contains("10.244.1.8:8080") && !last.contains("10.244.1.7"),
        "{last}"
    );
    // A failed sync is retried (fully) without a new change.
    runner.fail_next_restore.store(true, Ordering::SeqCst);
    let before = runner.restores();
    set_endpoints(&mut state, "default", "web", "", &[("10.244.1.9", 8080)]);
    tx.send(Arc::new(state.clone())).unwrap();
    let start = std::time::Instant::now();
    while runner.restores() == before {
        assert!(start.elapsed() < Duration::from_secs(3), "no retry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        runner.last_input().unwrap().contains("-I PREROUTING"),
        "the retry is a full sync"
    );
    drop(tx);
    task.await.unwrap();
}

/// On a resync without changes the driver checks the canary chains: gone (a flushed
/// table), the rules are written again in full; there, nothing is written.
#[tokio::test]
async fn a_resync_rewrites_rules_removed_behind_our_back() {
    use kommit_proxy::driver::{DriverTiming, run_iptables};
    use std::sync::Arc;
    let runner = Arc::new(FakeRunner::default());
    let proxier = IptablesProxier::new(runner.clone(), config()).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(golden_state()));
    let timing = DriverTiming {
        min_interval: Duration::from_millis(10),
        retry: Duration::from_millis(100),
        resync: Duration::from_millis(200),
    };
    let task = tokio::spawn(run_iptables(proxier, rx, timing));
    let restores_within = |n: usize, limit: Duration| {
        let runner = runner.clone();
        async move {
            let start = std::time::Instant::now();
            while runner.restores() < n && start.elapsed() < limit {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            runner.restores() >= n
        }
    };
    assert!(restores_within(1, Duration::from_secs(2)).await);
    // The fake's tables hold none of kommit's chains: the canary is gone, so the resync
    // is a full sync.
    assert!(restores_within(2, Duration::from_secs(2)).await);
    assert!(runner.last_input().unwrap().contains("-I PREROUTING"));
    // With the canary chains there, resyncs write nothing.
    runner.saves.lock().unwrap().insert(
        "nat".into(),
        "*nat\n:PREROUTING ACCEPT [0:0]\n:KOMMIT-MARK-MASQ - [0:0]\nCOMMIT\n".into(),
    );
    runner.saves.lock().unwrap().insert(
        "filter".into(),
        "*filter\n:INPUT ACCEPT [0:0]\n:KOMMIT-FORWARD - [0:0]\nCOMMIT\n".into(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = runner.restores();
    assert!(!restores_within(settled + 1, Duration::from_millis(700)).await);
    drop(tx);
    task.await.unwrap();
}
