//! Conversion of Kubernetes objects: bad input names the object and the field.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kommit_proxy::convert::{endpoints_from_k8s, endpoints_from_slices, service_from_k8s};
use kommit_proxy::{Protocol, ServiceName, ServiceType};
use serde_json::json;

fn svc(v: serde_json::Value) -> core::Service {
    serde_json::from_value(v).unwrap()
}

#[test]
fn services_convert_with_types_ports_and_node_ports() {
    let s = service_from_k8s(&svc(json!({
        "metadata": {"namespace": "shop", "name": "front"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.13", "sessionAffinity": "ClientIP",
                 "ports": [{"name": "https", "port": 443, "nodePort": 30443},
                           {"name": "dns", "port": 53, "protocol": "UDP"}]}})))
    .unwrap()
    .unwrap();
    assert_eq!(s.name, ServiceName::new("shop", "front"));
    assert_eq!(s.service_type, ServiceType::LoadBalancer);
    assert_eq!(s.ports[0].node_port, Some(30443));
    assert_eq!(s.ports[1].protocol, Protocol::Udp);
    // A ClusterIP Service's nodePort is ignored; a missing namespace is "default".
    let s = service_from_k8s(&svc(json!({"metadata": {"name": "a"},
        "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80, "nodePort": 30001}]}})))
    .unwrap()
    .unwrap();
    assert_eq!(s.name.namespace, "default");
    assert_eq!(s.ports[0].node_port, None);
    // Nothing to proxy.
    for spec in [
        json!({"type": "ExternalName", "externalName": "x.example"}),
        json!({"clusterIP": "None", "ports": [{"port": 80}]}),
        json!({"ports": [{"port": 80}]}),
    ] {
        assert_eq!(
            service_from_k8s(&svc(json!({"metadata": {"name": "a"}, "spec": spec}))).unwrap(),
            None
        );
    }
}

#[test]
fn bad_services_name_object_and_field() {
    let cases = [
        (
            json!({"clusterIP": "10.96.0.300", "ports": [{"port": 80}]}),
            "Service default/a: spec.clusterIP:",
        ),
        (
            json!({"clusterIP": "10.96.0.1", "ports": [{"port": 70000}]}),
            "Service default/a: spec.ports[0].port:",
        ),
        (
            json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80, "protocol": "ICMP"}]}),
            "spec.ports[0].protocol",
        ),
        (
            json!({"type": "Weird", "clusterIP": "10.96.0.1"}),
            "spec.type",
        ),
        (
            json!({"type": "NodePort", "clusterIP": "10.96.0.1", "ports": [{"port": 80}, {"port": 81, "nodePort": -1}]}),
            "spec.ports[1].name",
        ),
        (
            json!({"type": "NodePort", "clusterIP": "10.96.0.1", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81, "nodePort": -1}]}),
            "spec.ports[1].nodePort",
        ),
        (
            json!({"clusterIP": "10.96.0.1", "externalIPs": ["192.0.2.1", "nope"], "ports": [{"port": 80}]}),
            "Service default/a: spec.externalIPs[1]: \"nope\" is not an IP address",
        ),
    ];
    for (spec, want) in cases {
        let err =
            service_from_k8s(&svc(json!({"metadata": {"name": "a"}, "spec": spec}))).unwrap_err();
        assert!(
            err.to_string().contains(want),
            "{err} should contain {want}"
        );
    }
    let err =
        service_from_k8s(&svc(json!({"metadata": {"namespace": "x"}, "spec": {}}))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Service x/<unnamed>: metadata.name: must be set"
    );
}

#[test]
fn endpoints_keep_only_ready_addresses() {
    let eps: core::Endpoints = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web"},
        "subsets": [{"addresses": [{"ip": "10.1.0.2"}], "notReadyAddresses": [{"ip": "10.1.0.3"}],
                     "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9100}]}]}))
    .unwrap();
    let (name, e) = endpoints_from_k8s(&eps).unwrap();
    assert_eq!(name, ServiceName::new("default", "web"));
    assert_eq!(
        e["http"].iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        ["10.1.0.2:8080"]
    );
    assert_eq!(
        e["metrics"]
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>(),
        ["10.1.0.2:9100"]
    );

    let bad: core::Endpoints = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web"},
        "subsets": [{"addresses": [{"ip": "nope"}], "ports": [{"port": 80}]}]}))
    .unwrap();
    assert_eq!(
        endpoints_from_k8s(&bad).unwrap_err().to_string(),
        "Endpoints default/web: subsets[0].addresses[0].ip: \"nope\" is not an IP address"
    );
}

#[test]
fn endpoint_slices_merge_per_service_and_skip_unready() {
    let slices: Vec<discovery::EndpointSlice> = [
        json!({"metadata": {"namespace": "d", "name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4", "ports": [{"name": "", "port": 80}],
               "endpoints": [{"addresses": ["10.1.0.2"], "conditions": {"ready": true}},
                             {"addresses": ["10.1.0.3"], "conditions": {"ready": false, "serving": true}}]}),
        json!({"metadata": {"namespace": "d", "name": "web-2", "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4", "ports": [{"port": 80}],
               "endpoints": [{"addresses": ["10.1.0.4"]}, {"addresses": ["10.1.0.2"]}]}),
        json!({"metadata": {"namespace": "d", "name": "ext", "labels": {"kubernetes.io/service-name": "ext"}},
               "addressType": "FQDN", "ports": [{"port": 80}], "endpoints": [{"addresses": ["x.example"]}]}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    let all = endpoints_from_slices(&slices).unwrap();
    let web = &all[&ServiceName::new("d", "web")][""];
    assert_eq!(
        web.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        ["10.1.0.2:80", "10.1.0.4:80"]
    );
    assert!(
        all.get(&ServiceName::new("d", "ext"))
            .is_none_or(|e| e.is_empty())
    );

    let unlabelled: discovery::EndpointSlice = serde_json::from_value(json!({
        "metadata": {"namespace": "d", "name": "orphan"}, "addressType": "IPv4", "endpoints": []}))
    .unwrap();
    let err = endpoints_from_slices([&unlabelled]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "EndpointSlice d/orphan: metadata.labels[kubernetes.io/service-name]: must name the Service"
    );
}
