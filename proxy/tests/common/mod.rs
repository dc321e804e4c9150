//! Shared test helpers: a recording fake runner and the golden set of Services.
#![allow(dead_code, clippy::unwrap_used)]

pub mod netns;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kommit_proxy::convert::{endpoints_from_k8s, endpoints_from_slices, service_from_k8s};
use kommit_proxy::iptables::{IpFamily, Runner, RunnerError, check_restore_input, parse_save};
use kommit_proxy::{Endpoint, ProxyState, ServiceName};
use serde_json::json;

/// Records every restore input; `save` answers with what the recorded inputs would have
/// left on an empty host is NOT simulated: it answers with `saves` (empty tables by default).
#[derive(Default)]
pub struct FakeRunner {
    pub inputs: Mutex<Vec<String>>,
    pub saves: Mutex<HashMap<String, String>>,
    pub fail_next_restore: AtomicBool,
    pub sysctls: Mutex<Vec<(String, String)>>,
}

pub fn empty_table(table: &str) -> String {
    let chains: &[&str] = match table {
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        _ => &["INPUT", "FORWARD", "OUTPUT"],
    };
    let mut s = format!("*{table}\n");
    for c in chains {
        s.push_str(&format!(":{c} ACCEPT [0:0]\n"));
    }
    s.push_str("COMMIT\n");
    s
}

impl FakeRunner {
    pub fn last_input(&self) -> Option<String> {
        self.inputs.lock().unwrap().last().cloned()
    }
    pub fn restores(&self) -> usize {
        self.inputs.lock().unwrap().len()
    }
}

impl Runner for FakeRunner {
    fn save(&self, _family: IpFamily, table: &str) -> Result<String, RunnerError> {
        Ok(self
            .saves
            .lock()
            .unwrap()
            .get(table)
            .cloned()
            .unwrap_or_else(|| empty_table(table)))
    }
    fn restore(&self, _family: IpFamily, input: &[u8]) -> Result<(), RunnerError> {
        if self.fail_next_restore.swap(false, Ordering::SeqCst) {
            return Err(RunnerError::Failed {
                program: "iptables-restore".into(),
                status: "exit status: 1".into(),
                stderr: "injected failure".into(),
            });
        }
        self.inputs
            .lock()
            .unwrap()
            .push(String::from_utf8(input.to_vec()).unwrap());
        Ok(())
    }
    fn sysctl(&self, key: &str, value: &str) -> Result<(), RunnerError> {
        self.sysctls
            .lock()
            .unwrap()
            .push((key.into(), value.into()));
        Ok(())
    }
}

pub fn k8s_service(v: serde_json::Value) -> core::Service {
    serde_json::from_value(v).unwrap()
}

/// The golden set: ClusterIP with three endpoints, NodePort with two named ports whose
/// target ports differ, a TCP+UDP DNS Service, a ClusterIP and a NodePort (with an
/// external IP) without endpoints, a LoadBalancer with four endpoints and an ingress IP. Built from Kubernetes objects, so the
/// conversion is part of what the golden file pins.
pub fn golden_state() -> ProxyState {
    let services = [
        json!({"metadata": {"namespace": "default", "name": "web"},
               "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080}]}}),
        json!({"metadata": {"namespace": "default", "name": "api"},
               "spec": {"type": "NodePort", "clusterIP": "10.96.0.11", "ports": [
                   {"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
                   {"name": "metrics", "port": 9090, "targetPort": "metrics", "nodePort": 30090}]}}),
        json!({"metadata": {"namespace": "kube-system", "name": "dns"},
               "spec": {"clusterIP": "10.96.0.53", "ports": [
                   {"name": "dns", "port": 53, "protocol": "UDP"},
                   {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}}),
        json!({"metadata": {"namespace": "default", "name": "empty"},
               "spec": {"clusterIP": "10.96.0.12", "ports": [{"port": 80}]}}),
        json!({"metadata": {"namespace": "default", "name": "down"},
               "spec": {"type": "NodePort", "clusterIP": "10.96.0.14", "externalIPs": ["192.0.2.20"],
                        "ports": [{"port": 80, "nodePort": 30081}]}}),
        json!({"metadata": {"namespace": "shop", "name": "front"},
               "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.13", "ports": [{"name": "https", "port": 443, "nodePort": 30443}]},
               "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10", "ipMode": "VIP"}, {"hostname": "lb.example"},
                                                       {"ip": "192.0.2.11", "ipMode": "Proxy"}]}}}),
        json!({"metadata": {"namespace": "default", "name": "headless"},
               "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
        json!({"metadata": {"namespace": "default", "name": "external"},
               "spec": {"type": "ExternalName", "externalName": "example.invalid"}}),
    ];
    let mut state = ProxyState::new();
    for s in services {
        if let Some(svc) = service_from_k8s(&k8s_service(s)).unwrap() {
            state.upsert_service(svc);
        }
    }
    // web: core/v1 Endpoints, with a not-ready address that must not appear.
    let eps: core::Endpoints = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web"},
        "subsets": [{"addresses": [{"ip": "10.244.1.3"}, {"ip": "10.244.1.2"}, {"ip": "10.244.2.4"}],
                     "notReadyAddresses": [{"ip": "10.244.9.9"}],
                     "ports": [{"port": 8080}]}]}))
    .unwrap();
    let (name, e) = endpoints_from_k8s(&eps).unwrap();
    state.set_endpoints(name, e);
    // The others: EndpointSlices, api's split over two slices, one endpoint not ready.
    let slices: Vec<discovery::EndpointSlice> = [
        json!({"metadata": {"namespace": "default", "name": "api-a", "labels": {"kubernetes.io/service-name": "api"}},
               "addressType": "IPv4",
               "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9100}],
               "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}},
                             {"addresses": ["10.244.1.6"], "conditions": {"ready": false}}]}),
        json!({"metadata": {"namespace": "default", "name": "api-b", "labels": {"kubernetes.io/service-name": "api"}},
               "addressType": "IPv4",
               "ports": [{"name": "http", "port": 8080}],
               "endpoints": [{"addresses": ["10.244.2.5"]}]}),
        json!({"metadata": {"namespace": "kube-system", "name": "dns-x", "labels": {"kubernetes.io/service-name": "dns"}},
               "addressType": "IPv4",
               "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
               "endpoints": [{"addresses": ["10.244.1.10"]}, {"addresses": ["10.244.2.10"]}]}),
        json!({"metadata": {"namespace": "shop", "name": "front-1", "labels": {"kubernetes.io/service-name": "front"}},
               "addressType": "IPv4",
               "ports": [{"name": "https", "port": 8443}],
               "endpoints": [{"addresses": ["10.244.1.20"]}, {"addresses": ["10.244.1.21"]},
                             {"addresses": ["10.244.2.20"]}, {"addresses": ["10.244.2.21"]}]}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    for (name, e) in endpoints_from_slices(&slices).unwrap() {
        state.set_endpoints(name, e);
    }
    state
}

/// Replaces the endpoints of one single-port Service.
pub fn set_endpoints(
    state: &mut ProxyState,
    ns: &str,
    name: &str,
    port: &str,
    eps: &[(&str, u16)],
) {
    let mut m = BTreeMap::new();
    m.insert(
        port.to_owned(),
        eps.iter()
            .map(|(ip, p)| Endpoint::new(ip.parse().unwrap(), *p))
            .collect(),
    );
    state.set_endpoints(ServiceName::new(ns, name), m);
}

/// Every problem the checker finds in `input`, given the user chains already present
/// (as `iptables-save` text per table).
pub fn check(input: &str, existing_saves: &[(&str, &str)]) -> Vec<String> {
    let mut existing: HashMap<String, HashSet<String>> = HashMap::new();
    for (table, text) in existing_saves {
        existing.insert(
            table.to_string(),
            parse_save(text).chains.into_iter().collect(),
        );
    }
    check_restore_input(input, &existing)
        .iter()
        .map(|e| e.to_string())
        .collect()
}

/// Checks the statistic probabilities of every KOMMIT-SVC- chain in `input`: endpoint i
/// of n has 1/(n-i) with ten decimals, the last none. Returns the number of chains seen.
pub fn check_probabilities(input: &str) -> usize {
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in input.lines() {
        let Some(rest) = line.strip_prefix("-A KOMMIT-SVC-") else {
            continue;
        };
        if line.contains("-j KOMMIT-SEP-") {
            let chain = rest.split(' ').next().unwrap().to_owned();
            chains.entry(chain).or_default().push(line.to_owned());
        }
    }
    for (chain, rules) in &chains {
        let n = rules.len();
        for (i, rule) in rules.iter().enumerate() {
            let words: Vec<&str> = rule.split(' ').collect();
            let prob = words
                .iter()
                .position(|w| *w == "--probability")
                .map(|p| words[p + 1]);
            if i + 1 == n {
                assert!(
                    prob.is_none(),
                    "last rule of KOMMIT-SVC-{chain} must be unconditional: {rule}"
                );
                assert!(!rule.contains("statistic"), "{rule}");
            } else {
                let prob = prob.unwrap_or_else(|| {
                    panic!("rule {i} of {n} in KOMMIT-SVC-{chain} has no probability: {rule}")
                });
                let want = 1.0 / (n - i) as f64;
                let got: f64 = prob.parse().unwrap();
                assert!(
                    (got - want).abs() < 1e-9,
                    "rule {i} of {n} in KOMMIT-SVC-{chain}: {got} != 1/{}",
                    n - i
                );
                assert_eq!(
                    prob.split('.').nth(1).unwrap().len(),
                    10,
                    "ten decimals: {prob}"
                );
                assert!(
                    rule.contains("-m statistic --mode random --probability"),
                    "{rule}"
                );
            }
        }
    }
    chains.len()
}

/// Wraps a real runner and records every restore input (or nft script) it passes on.
pub struct Recording<R> {
    pub inner: R,
    pub inputs: Mutex<Vec<String>>,
}

impl<R> Recording<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            inputs: Mutex::new(Vec::new()),
        }
    }
    pub fn last_input(&self) -> Option<String> {
        self.inputs.lock().unwrap().last().cloned()
    }
}

/// The nftables runner's scripts are recorded the same way.
impl<N: kommit_proxy::nftables::Nft> kommit_proxy::nftables::Nft for Recording<N> {
    fn apply(&self, script: &str) -> Result<(), RunnerError> {
        self.inputs.lock().unwrap().push(script.to_owned());
        self.inner.apply(script)
    }
    fn list_table(&self, family: IpFamily) -> Result<Option<String>, RunnerError> {
        self.inner.list_table(family)
    }
    fn set_sysctl(&self, key: &str, value: &str) -> Result<(), RunnerError> {
        self.inner.set_sysctl(key, value)
    }
}

impl<R: Runner> Runner for Recording<R> {
    fn save(&self, family: IpFamily, table: &str) -> Result<String, RunnerError> {
        self.inner.save(family, table)
    }
    fn restore(&self, family: IpFamily, input: &[u8]) -> Result<(), RunnerError> {
        self.inputs
            .lock()
            .unwrap()
            .push(String::from_utf8(input.to_vec()).unwrap());
        self.inner.restore(family, input)
    }
    fn sysctl(&self, key: &str, value: &str) -> Result<(), RunnerError> {
        self.inner.sysctl(key, value)
    }
}

/// Compares `actual` with `tests/golden/NAME`; `KOMMIT_UPDATE_GOLDEN=1` rewrites the file.
pub fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("KOMMIT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with KOMMIT_UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if want != actual {
        for (i, (w, a)) in want.lines().zip(actual.lines()).enumerate() {
            if w != a {
                panic!(
                    "{name} differs at line {}:\n  golden: {w}\n  actual: {a}",
                    i + 1
                );
            }
        }
        panic!(
            "{name} differs in length: golden {} lines, actual {} lines",
            want.lines().count(),
            actual.lines().count()
        );
    }
}

/// A Service with one TCP port 80 (named `port_name`, "" for none): a NodePort when
/// `node_port` is given, else a ClusterIP.
pub fn tcp_service(
    ns: &str,
    name: &str,
    port_name: &str,
    cluster_ip: &str,
    node_port: Option<u16>,
) -> kommit_proxy::Service {
    kommit_proxy::Service {
        name: ServiceName::new(ns, name),
        cluster_ip: cluster_ip.parse().unwrap(),
        service_type: if node_port.is_some() {
            kommit_proxy::ServiceType::NodePort
        } else {
            kommit_proxy::ServiceType::ClusterIp
        },
        ports: vec![kommit_proxy::ServicePort {
            name: port_name.to_owned(),
            protocol: kommit_proxy::Protocol::Tcp,
            port: 80,
            node_port,
        }],
        external_ips: Vec::new(),
    }
}
