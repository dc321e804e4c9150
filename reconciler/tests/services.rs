//! Services: cluster IP and node port allocation, Endpoints and EndpointSlices, from
//! fixtures.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use common::{ctx, fixture_all};
use k8s_openapi::api::core::v1::{Endpoints, Node, NodeAddress, NodeStatus, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kommit_reconciler::memory::MemoryStore;
use kommit_reconciler::service::{
    self, Ipv4Range, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, ServiceConfig,
};
use kommit_reconciler::{Action, Desired, Object, Observed};

fn desired() -> Desired {
    Desired {
        services: fixture_all("services.yaml"),
        ..Default::default()
    }
}

fn node(name: &str, ip: &str) -> Node {
    Node {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.into(),
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs the Service controllers until they have nothing to write; returns the store.
fn converge(store: &mut MemoryStore, desired: &Desired, config: &ServiceConfig) {
    for round in 0..5 {
        let observed = store.observed();
        let mut actions =
            service::reconcile_services(&ctx(round), desired, &observed, config).actions;
        actions.extend(service::reconcile_endpoints(&ctx(round), desired, &observed).actions);
        if actions.is_empty() {
            return;
        }
        assert!(
            store.apply_all(&actions).is_empty(),
            "actions apply cleanly"
        );
    }
    panic!("the Service controllers did not settle");
}

fn services(store: &MemoryStore) -> Vec<Service> {
    store.observed().services
}

fn svc<'a>(list: &'a [Service], name: &str) -> &'a Service {
    list.iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Service {name}"))
}

fn cluster_ip(s: &Service) -> Option<String> {
    s.spec.as_ref().unwrap().cluster_ip.clone()
}

fn node_ports(s: &Service) -> Vec<i32> {
    s.spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.node_port)
        .collect()
}

#[test]
fn services_get_distinct_addresses_in_the_range_and_keep_them() {
    let mut store = MemoryStore::new();
    store.put(Object::Node(node("n1", "192.0.2.7"))).unwrap();
    let config = ServiceConfig::default();
    let d = desired();
    converge(&mut store, &d, &config);
    let list = services(&store);
    assert_eq!(list.len(), 6, "every Service has a copy, ExternalName too");

    let range = config.cluster_ips;
    let mut seen = BTreeSet::new();
    for name in ["web", "front", "lb"] {
        let ip: Ipv4Addr = cluster_ip(svc(&list, name)).unwrap().parse().unwrap();
        assert!(range.contains_usable(ip), "{name}: {ip} in {range}");
        assert!(seen.insert(ip), "{name}: {ip} is not shared");
    }
    assert_eq!(
        cluster_ip(svc(&list, "fixed")).as_deref(),
        Some("198.19.0.10")
    );
    assert!(!seen.contains(&"198.19.0.10".parse().unwrap()));
    assert_eq!(cluster_ip(svc(&list, "db")).as_deref(), Some("None"));
    assert_eq!(cluster_ip(svc(&list, "ext")), None);
    let web = svc(&list, "web");
    assert_eq!(
        web.spec.as_ref().unwrap().cluster_ips,
        Some(vec![cluster_ip(web).unwrap()])
    );
    assert!(
        node_ports(web).is_empty(),
        "ClusterIP Services get no node ports"
    );

    // Node ports: the one set in Git, the others allocated in 30000-32767, all distinct.
    let front = node_ports(svc(&list, "front"));
    assert_eq!(front.len(), 2);
    assert_eq!(front[1], 30081);
    let lb = node_ports(svc(&list, "lb"));
    assert_eq!(lb.len(), 1);
    let all: BTreeSet<i32> = front.iter().chain(&lb).copied().collect();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|p| (30000..=32767).contains(p)));

    // LoadBalancer: the node's address as ingress.
    let ingress = svc(&list, "lb")
        .status
        .as_ref()
        .unwrap()
        .load_balancer
        .as_ref()
        .unwrap()
        .ingress
        .clone()
        .unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(ingress[0].ip.as_deref(), Some("192.0.2.7"));

    // A later pass (a restart, a commit keeping the Services) changes nothing.
    let observed = store.observed();
    let again = service::reconcile_services(&ctx(10), &d, &observed, &config);
    assert!(again.actions.is_empty(), "{:?}", again.actions);

    // A commit that drops `lb` and adds `extra` keeps web's address and deletes lb's copy.
    let mut d2 = d.clone();
    d2.services
        .retain(|s| s.metadata.name.as_deref() != Some("lb"));
    let mut extra = svc(&list, "web").clone();
    extra.metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some("extra".into()),
        namespace: Some("shop".into()),
        ..Default::default()
    };
    extra.spec.as_mut().unwrap().cluster_ip = None;
    extra.spec.as_mut().unwrap().cluster_ips = None;
    d2.services.push(extra);
    let before = cluster_ip(svc(&list, "web"));
    converge(&mut store, &d2, &config);
    let list2 = services(&store);
    assert_eq!(cluster_ip(svc(&list2, "web")), before);
    assert!(
        list2
            .iter()
            .all(|s| s.metadata.name.as_deref() != Some("lb"))
    );
    let extra_ip = cluster_ip(svc(&list2, "extra")).unwrap();
    assert!(
        list2
            .iter()
            .filter(|s| s.metadata.name.as_deref() != Some("extra"))
            .all(|s| cluster_ip(s).as_deref() != Some(extra_ip.as_str()))
    );
}

#[test]
fn an_address_claimed_in_git_moves_the_service_that_had_it() {
    let mut store = MemoryStore::new();
    let config = ServiceConfig::default();
    let mut d = desired();
    converge(&mut store, &d, &config);
    let web_ip = cluster_ip(svc(&services(&store), "web")).unwrap();
    // `fixed` now claims web's address in Git.
    for s in &mut d.services {
        if s.metadata.name.as_deref() == Some("fixed") {
            s.spec.as_mut().unwrap().cluster_ip = Some(web_ip.clone());
        }
    }
    converge(&mut store, &d, &config);
    let list = services(&store);
    assert_eq!(cluster_ip(svc(&list, "fixed")), Some(web_ip.clone()));
    let moved = cluster_ip(svc(&list, "web")).unwrap();
    assert_ne!(moved, web_ip);
    assert!(config.cluster_ips.contains_usable(moved.parse().unwrap()));
}

#[test]
fn a_new_range_reallocates_addresses_outside_it() {
    let mut store = MemoryStore::new();
    let d = Desired {
        services: fixture_all::<Service>("services.yaml")
            .into_iter()
            .filter(|s| s.metadata.name.as_deref() == Some("web"))
            .collect(),
        ..Default::default()
    };
    converge(&mut store, &d, &ServiceConfig::default());
    let small = ServiceConfig {
        cluster_ips: "10.96.0.0/24".parse::<Ipv4Range>().unwrap(),
        ..Default::default()
    };
    converge(&mut store, &d, &small);
    let ip: Ipv4Addr = cluster_ip(svc(&services(&store), "web"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(small.cluster_ips.contains_usable(ip), "{ip}");
}

fn observed_pods() -> Observed {
    Observed {
        pods: fixture_all::<Pod>("service-pods.yaml"),
        ..Default::default()
    }
}

fn addresses(list: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>) -> Vec<String> {
    list.iter().flatten().map(|a| a.ip.clone()).collect()
}

#[test]
fn endpoints_hold_ready_pods_and_not_ready_ones_apart() {
    let web = svc(&desired().services, "web").clone();
    let (eps, slices) = service::endpoints_for(&web, &observed_pods());
    let subsets = eps.subsets.unwrap();
    // Two port mappings: web-a/web-b (http → 8080) and web-c (http → 8181).
    assert_eq!(subsets.len(), 2, "{subsets:?}");
    let s8080 = subsets
        .iter()
        .find(|s| s.ports.as_ref().unwrap().iter().any(|p| p.port == 8080))
        .unwrap();
    assert_eq!(addresses(&s8080.addresses), ["172.17.0.2"]);
    assert_eq!(addresses(&s8080.not_ready_addresses), ["172.17.0.3"]);
    let ports: Vec<(Option<String>, i32)> = s8080
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone(), p.port))
        .collect();
    assert_eq!(
        ports,
        [(Some("http".into()), 8080), (Some("metrics".into()), 9100)]
    );
    let s8181 = subsets
        .iter()
        .find(|s| s.ports.as_ref().unwrap().iter().any(|p| p.port == 8181))
        .unwrap();
    assert_eq!(addresses(&s8181.addresses), ["172.17.0.4"]);
    assert!(s8181.not_ready_addresses.is_none());
    let target = s8080.addresses.as_ref().unwrap()[0]
        .target_ref
        .as_ref()
        .unwrap();
    assert_eq!(target.name.as_deref(), Some("web-a"));
    assert_eq!(target.uid.as_deref(), Some("uid-web-a"));

    // Slices: one per mapping, labelled for their Service, ready condition per pod.
    assert_eq!(slices.len(), 2);
    for s in &slices {
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert!(s.metadata.name.as_deref().unwrap().starts_with("web-"));
        assert_eq!(s.address_type, "IPv4");
    }
    let mut conds: Vec<(String, bool)> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .map(|e| {
            (
                e.addresses[0].clone(),
                e.conditions.as_ref().unwrap().ready.unwrap(),
            )
        })
        .collect();
    conds.sort();
    assert_eq!(
        conds,
        [
            ("172.17.0.2".to_string(), true),
            ("172.17.0.3".to_string(), false),
            ("172.17.0.4".to_string(), true)
        ]
    );

    // The proxy's own conversion reads them as two ready endpoints per port.
    let ready = kommit_proxy_like_ready(&slices);
    assert_eq!(ready, ["172.17.0.2:8080", "172.17.0.4:8181"]);
}

/// Ready endpoints of the `http` port, as a proxy would read the slices.
fn kommit_proxy_like_ready(slices: &[EndpointSlice]) -> Vec<String> {
    let mut out = Vec::new();
    for s in slices {
        let port = s
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("http"))
            .and_then(|p| p.port)
            .unwrap();
        for e in &s.endpoints {
            if e.conditions.as_ref().and_then(|c| c.ready) != Some(false) {
                out.push(format!("{}:{port}", e.addresses[0]));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn numbered_and_default_target_ports_and_publish_not_ready() {
    let list = desired().services;
    let fixed = svc(&list, "fixed").clone();
    let (eps, _) = service::endpoints_for(&fixed, &observed_pods());
    let subsets = eps.subsets.unwrap();
    assert_eq!(subsets.len(), 1, "no named port: one mapping for every pod");
    assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
    assert_eq!(
        addresses(&subsets[0].addresses),
        ["172.17.0.2", "172.17.0.4"]
    );
    assert_eq!(addresses(&subsets[0].not_ready_addresses), ["172.17.0.3"]);

    let mut publish = fixed.clone();
    publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let (eps, _) = service::endpoints_for(&publish, &observed_pods());
    let subsets = eps.subsets.unwrap();
    assert_eq!(
        addresses(&subsets[0].addresses),
        ["172.17.0.2", "172.17.0.3", "172.17.0.4"]
    );
    assert!(subsets[0].not_ready_addresses.is_none());
}

#[test]
fn endpoints_follow_pods_and_go_with_their_service() {
    let mut store = MemoryStore::new();
    for p in fixture_all::<Pod>("service-pods.yaml") {
        store.put(Object::Pod(p)).unwrap();
    }
    let config = ServiceConfig::default();
    let d = desired();
    converge(&mut store, &d, &config);
    let obs = store.observed();
    let names: BTreeSet<String> = obs
        .endpoints
        .iter()
        .map(|e| e.metadata.name.clone().unwrap())
        .collect();
    // Services with a selector, headless included; not ExternalName.
    assert_eq!(
        names,
        ["db", "fixed", "front", "lb", "web"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let db: &Endpoints = obs
        .endpoints
        .iter()
        .find(|e| e.metadata.name.as_deref() == Some("db"))
        .unwrap();
    assert!(db.subsets.is_none(), "no pod matches app=db");

    // web-b becomes ready: it moves to addresses.
    let mut b = obs
        .pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("web-b"))
        .unwrap()
        .clone();
    b.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
    store.put(Object::Pod(b)).unwrap();
    converge(&mut store, &d, &config);
    let fixed = store
        .observed()
        .endpoints
        .into_iter()
        .find(|e| e.metadata.name.as_deref() == Some("fixed"))
        .unwrap();
    assert_eq!(
        addresses(&fixed.subsets.unwrap()[0].addresses),
        ["172.17.0.2", "172.17.0.3", "172.17.0.4"]
    );

    // A commit without `web`: its Endpoints and slices are deleted, the others stay.
    let mut d2 = d.clone();
    d2.services
        .retain(|s| s.metadata.name.as_deref() != Some("web"));
    let obs = store.observed();
    let out = service::reconcile_endpoints(&ctx(20), &d2, &obs);
    let deleted: Vec<String> = out
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete { key, .. } => Some(format!("{} {}", key.kind, key.name)),
            _ => None,
        })
        .collect();
    assert!(
        deleted.contains(&"Endpoints web".to_string()),
        "{deleted:?}"
    );
    let web_slices: Vec<&EndpointSlice> = obs
        .endpoint_slices
        .iter()
        .filter(|s| s.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL] == "web")
        .collect();
    assert_eq!(web_slices.len(), 2);
    for s in web_slices {
        let want = format!("EndpointSlice {}", s.metadata.name.as_deref().unwrap());
        assert!(deleted.contains(&want), "{deleted:?}");
    }
    assert_eq!(
        deleted.len(),
        3,
        "only web's Endpoints and slices: {deleted:?}"
    );
}
