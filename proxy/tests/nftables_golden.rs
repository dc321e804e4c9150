//! Golden `nft -f` scripts for the nftables mode, checked for consistency (every goto
//! names a chain, every set or map used is declared, endpoint choice is uniform), plus
//! the proxier's full/partial logic against a recording fake. The real `nft` checks the
//! same scripts in nftables_netns.rs.
//!
//! `KOMMIT_UPDATE_GOLDEN=1 cargo test -p kommit-proxy --test nftables_golden` rewrites
//! the files.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{golden, golden_state, set_endpoints, tcp_service};
use kommit_proxy::ServiceName;
use kommit_proxy::iptables::{IpFamily, RunnerError};
use kommit_proxy::nftables::{Nft, NftablesConfig, NftablesProxier};

#[derive(Default)]
struct FakeNft {
    scripts: Mutex<Vec<String>>,
    fail_next: AtomicBool,
    sysctls: Mutex<Vec<(String, String)>>,
}

impl FakeNft {
    fn last(&self) -> String {
        self.scripts.lock().unwrap().last().cloned().unwrap()
    }
    fn applies(&self) -> usize {
        self.scripts.lock().unwrap().len()
    }
}

impl Nft for FakeNft {
    fn apply(&self, script: &str) -> Result<(), RunnerError> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(RunnerError::Failed {
                program: "nft".into(),
                status: "exit status: 1".into(),
                stderr: "injected failure".into(),
            });
        }
        self.scripts.lock().unwrap().push(script.to_owned());
        Ok(())
    }
    fn list_table(&self, _family: IpFamily) -> Result<Option<String>, RunnerError> {
        Ok(None)
    }
    fn set_sysctl(&self, key: &str, value: &str) -> Result<(), RunnerError> {
        self.sysctls
            .lock()
            .unwrap()
            .push((key.into(), value.into()));
        Ok(())
    }
}

fn config() -> NftablesConfig {
    NftablesConfig {
        cluster_cidr: Some("10.244.0.0/16".into()),
        endpoint_groups: 4,
        ..NftablesConfig::default()
    }
}

/// What a script declares and uses: chains defined (block or `add chain`), chains
/// targeted by goto/jump, sets and maps declared, sets and maps used.
#[derive(Default, Debug)]
struct Refs {
    chains: HashSet<String>,
    targets: HashSet<String>,
    sets: HashSet<String>,
    used_sets: HashSet<String>,
}

fn refs(script: &str) -> Refs {
    let mut r = Refs::default();
    for line in script.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["chain", name, "{"] => {
                r.chains.insert((*name).to_owned());
            }
            ["add", "chain", _, _, name, ..] => {
                r.chains.insert((*name).to_owned());
            }
            ["set" | "map", name, "{"] => {
                r.sets.insert((*name).to_owned());
            }
            _ => {}
        }
        for (i, w) in words.iter().enumerate() {
            if (*w == "goto" || *w == "jump")
                && let Some(t) = words.get(i + 1)
            {
                r.targets
                    .insert(t.trim_end_matches([',', '}', ';']).to_owned());
            }
            if let Some(set) = w.strip_prefix('@') {
                r.used_sets.insert(set.to_owned());
            }
        }
        if let ["add" | "delete", "element", _, _, set, ..] = words.as_slice() {
            r.used_sets.insert((*set).to_owned());
        }
    }
    r
}

/// The `endpoints` elements of the address key `key` (`ip . proto . port`): index to
/// endpoint, as the script adds them.
fn endpoints_of(script: &str, key: &str) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    for line in script
        .lines()
        .filter(|l| l.starts_with("add element ip kommit endpoints {"))
    {
        let body = line
            .trim_start_matches("add element ip kommit endpoints {")
            .trim_end_matches('}');
        for item in body.split(", ") {
            let (k, v) = item.trim().split_once(" : ").unwrap();
            if let Some(i) = k.strip_prefix(key).and_then(|r| r.strip_prefix(" . ")) {
                out.insert(i.parse().unwrap(), v.to_owned());
            }
        }
    }
    out
}

#[test]
fn full_sync_matches_golden_and_every_reference_resolves() {
    let nft = FakeNft::default();
    let mut proxier = NftablesProxier::new(&nft, config()).unwrap();
    let report = proxier.sync(&golden_state()).unwrap();
    assert!(report.full);
    let script = nft.last();
    golden("nft-full-sync.txt", &script);

    // The table is replaced in the same transaction.
    assert!(script.starts_with("add table ip kommit\ndelete table ip kommit\ntable ip kommit {\n"));
    let r = refs(&script);
    let missing: Vec<_> = r.targets.difference(&r.chains).collect();
    assert!(missing.is_empty(), "goto/jump without a chain: {missing:?}");
    let undeclared: Vec<_> = r.used_sets.difference(&r.sets).collect();
    assert!(
        undeclared.is_empty(),
        "sets used, not declared: {undeclared:?}"
    );
    // No anonymous set or map in a rule (each one costs the kernel a walk of the whole
    // transaction): braces only open blocks and element lists.
    for line in script.lines().filter(|l| l.contains("dnat ip")) {
        assert!(!line.contains('{'), "{line}");
    }

    // web (3 endpoints), api:http (2), dns:dns and dns:dns-tcp (2), front:https (4),
    // api:metrics (1): a chain per endpoint count draws an index 0..n uniformly, and each
    // Service port's endpoints are stored under indices 0..n.
    for n in 1..=4 {
        assert!(script.contains(&format!(
            "\tchain endpoints-{n} {{\n\t\tdnat ip to ip daddr . meta l4proto . th dport . numgen random mod {n} map @endpoints\n"
        )));
        assert!(script.contains(&format!(
            "\tchain nodeport-endpoints-{n} {{\n\t\tdnat ip to meta l4proto . th dport . numgen random mod {n} map @nodeport-endpoints\n"
        )));
    }
    assert!(!script.contains("chain endpoints-5"));
    let web = endpoints_of(&script, "10.96.0.10 . tcp . 80");
    assert_eq!(web.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
    assert!(script.contains("10.96.0.10 . tcp . 80 : goto endpoints-3"));
    assert_eq!(endpoints_of(&script, "10.96.0.13 . tcp . 443").len(), 4);
    // Not-ready endpoints, headless and ExternalName Services are absent.
    assert!(!script.contains("10.244.9.9") && !script.contains("10.244.1.6"));
    assert!(!script.contains("default/headless") && !script.contains("default/external"));
    // Services without endpoints are rejected, not NATed.
    assert!(script.contains("add element ip kommit no-endpoint-services { 10.96.0.14 . tcp . 80, 192.0.2.20 . tcp . 80, 10.96.0.12 . tcp . 80 }"));
    assert!(script.contains("add element ip kommit no-endpoint-nodeports { tcp . 30081 }"));
    // Named ports map to their own target ports; UDP and TCP of one port are apart.
    assert_eq!(
        endpoints_of(&script, "10.96.0.11 . tcp . 9090")[&0],
        "10.244.1.5 . 9100"
    );
    assert_eq!(
        endpoints_of(&script, "10.96.0.53 . udp . 53")[&0],
        "10.244.1.10 . 53"
    );
    assert!(script.contains("10.96.0.53 . udp . 53 : goto endpoints-2"));
    assert!(script.contains("10.96.0.53 . tcp . 53 : goto endpoints-2"));
    // A LoadBalancer's ingress IP reaches it like its cluster IP (hostname-only and
    // `ipMode: Proxy` entries have nothing to program).
    assert!(script.contains(
        "add element ip kommit service-external-ips { 192.0.2.10 . tcp . 443 : goto endpoints-4 }"
    ));
    assert_eq!(
        endpoints_of(&script, "192.0.2.10 . tcp . 443"),
        endpoints_of(&script, "10.96.0.13 . tcp . 443")
    );
    assert!(!script.contains("192.0.2.11"));
    // LoadBalancer and NodePort Services answer on their node ports.
    assert!(script.contains("tcp . 30443 : goto nodeport-endpoints-4"));
    assert!(script.contains("tcp . 30443 . 3 : 10.244.2.21 . 8443"));
    // Every endpoint can reach itself through its Service (hairpin), once.
    let hairpin = script
        .lines()
        .find(|l| l.starts_with("add element ip kommit hairpin"))
        .unwrap();
    assert_eq!(hairpin.matches(" . ").count(), 11, "{hairpin}");
    assert_eq!(
        nft.sysctls.lock().unwrap().as_slice(),
        [(
            "net.ipv4.conf.all.route_localnet".to_owned(),
            "1".to_owned()
        )]
    );
}

#[test]
fn partial_syncs_write_only_what_changed() {
    let nft = FakeNft::default();
    let mut proxier = NftablesProxier::new(&nft, config()).unwrap();
    let mut state = golden_state();
    proxier.sync(&state).unwrap();

    // Nothing changed: nft does not run.
    let report = proxier.sync(&state).unwrap();
    assert!(!report.full && !report.changed());
    assert_eq!(nft.applies(), 1);

    // One endpoint of web goes away: web's chain is flushed and rewritten, and the
    // endpoint's hairpin element deleted.
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
    let script = nft.last();
    golden("nft-partial-endpoint.txt", &script);
    // Elements only: no chain is written, flushed or deleted.
    assert!(report.chains_written.is_empty(), "{report:?}");
    assert!(!script.contains("chain"), "{script}");
    assert!(script.contains("10.96.0.10 . tcp . 80 : goto endpoints-2"));

    // A Service added, then one removed, in one sync.
    state.upsert_service(tcp_service(
        "default",
        "new",
        "http",
        "10.96.0.30",
        Some(30300),
    ));
    set_endpoints(&mut state, "default", "new", "http", &[("10.244.3.1", 80)]);
    state.remove_service(&ServiceName::new("shop", "front"));
    let report = proxier.sync(&state).unwrap();
    let script = nft.last();
    golden("nft-partial-add-remove.txt", &script);
    // Endpoint count 1 has its chains already; front's elements are all deleted.
    assert!(report.chains_written.is_empty(), "{report:?}");
    assert!(!script.contains("10.96.0.13 . tcp . 443 :"), "{script}");
    assert!(script.contains("delete element ip kommit service-nodeports { tcp . 30443 }"));

    // An endpoint count beyond the chains written makes the sync full, with its chains.
    let five: Vec<(String, u16)> = (1..=5).map(|i| (format!("10.244.5.{i}"), 80)).collect();
    let five: Vec<(&str, u16)> = five.iter().map(|(ip, p)| (ip.as_str(), *p)).collect();
    set_endpoints(&mut state, "default", "new", "http", &five);
    let report = proxier.sync(&state).unwrap();
    assert!(report.full, "{report:?}");
    assert!(
        report.chains_written.contains(&"endpoints-5".to_owned())
            && report
                .chains_written
                .contains(&"nodeport-endpoints-5".to_owned()),
        "{report:?}"
    );
    // ... after which moving between counts is elements again.
    set_endpoints(&mut state, "default", "new", "http", &five[..4]);
    let report = proxier.sync(&state).unwrap();
    assert!(
        !report.full && report.chains_written.is_empty(),
        "{report:?}"
    );
    assert!(
        nft.last()
            .contains("10.96.0.30 . tcp . 80 : goto endpoints-4")
    );
    set_endpoints(&mut state, "default", "new", "http", &five);
    assert!(!proxier.sync(&state).unwrap().full);

    // A Service losing all its endpoints moves from the map to the reject set.
    set_endpoints(&mut state, "default", "new", "http", &[]);
    proxier.sync(&state).unwrap();
    let script = nft.last();
    assert!(script.contains("delete element ip kommit service-ips { 10.96.0.30 . tcp . 80 }"));
    assert!(
        script.contains("add element ip kommit no-endpoint-services { 10.96.0.30 . tcp . 80 }")
    );
    assert!(script.contains("add element ip kommit no-endpoint-nodeports { tcp . 30300 }"));
    assert!(script.contains("delete element ip kommit hairpin { 10.244.5.1 . 10.244.5.1, "));

    // Applied in order to an empty table, the scripts name only what exists.
    let all: String = nft.scripts.lock().unwrap().concat();
    let r = refs(&all);
    assert!(r.targets.is_subset(&r.chains), "{r:?}");
}

#[test]
fn an_endpoint_shared_by_two_services_keeps_its_hairpin_element() {
    let nft = FakeNft::default();
    let mut proxier = NftablesProxier::new(&nft, config()).unwrap();
    let mut state = golden_state();
    // front's 10.244.1.20 also serves web.
    set_endpoints(
        &mut state,
        "default",
        "web",
        "",
        &[("10.244.1.2", 8080), ("10.244.1.20", 8080)],
    );
    proxier.sync(&state).unwrap();
    state.remove_service(&ServiceName::new("shop", "front"));
    proxier.sync(&state).unwrap();
    let script = nft.last();
    let deleted = script
        .lines()
        .find(|l| l.starts_with("delete element ip kommit hairpin"))
        .unwrap();
    assert!(!deleted.contains("10.244.1.20 "), "{deleted}");
    assert!(deleted.contains("10.244.2.21"), "{deleted}");
}

#[test]
fn a_failed_apply_makes_the_next_sync_full() {
    let nft = FakeNft::default();
    let mut proxier = NftablesProxier::new(&nft, config()).unwrap();
    let mut state = golden_state();
    proxier.sync(&state).unwrap();
    set_endpoints(&mut state, "default", "web", "", &[("10.244.1.2", 8080)]);
    nft.fail_next.store(true, Ordering::SeqCst);
    let err = proxier.sync(&state).unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    let report = proxier.sync(&state).unwrap();
    assert!(report.full);
    assert!(nft.last().contains("delete table ip kommit"));
}

#[test]
fn ipv6_has_its_own_table_and_ignores_ipv4_services() {
    let nft = FakeNft::default();
    let mut proxier = NftablesProxier::new(
        &nft,
        NftablesConfig {
            family: IpFamily::V6,
            cluster_cidr: Some("fd00:10:244::/56".into()),
            ..NftablesConfig::default()
        },
    )
    .unwrap();
    let mut state = golden_state();
    state.upsert_service(tcp_service("default", "v6", "", "fd00:10:96::10", None));
    set_endpoints(&mut state, "default", "v6", "", &[("fd00:10:244::5", 8080)]);
    proxier.sync(&state).unwrap();
    let script = nft.last();
    assert!(script.contains("table ip6 kommit {"));
    assert!(script.contains("type ipv6_addr . inet_proto . inet_service : verdict"));
    assert!(script.contains("fd00:10:96::10 . tcp . 80 . 0 : fd00:10:244::5 . 8080"));
    assert!(script.contains("dnat ip6 to ip6 daddr . meta l4proto . th dport"));
    assert!(script.contains("ip6 saddr != fd00:10:244::/56"));
    assert!(
        !script.contains("10.96.0.10"),
        "IPv4 Services are the ip table's"
    );
    // No localhost node ports in IPv6: no sysctl.
    assert!(nft.sysctls.lock().unwrap().is_empty());
}

#[test]
fn a_bad_configuration_is_refused() {
    let err = NftablesProxier::new(
        FakeNft::default(),
        NftablesConfig {
            cluster_cidr: Some("10.244.0.0/40".into()),
            ..NftablesConfig::default()
        },
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("10.244.0.0/40"), "{err}");
}
