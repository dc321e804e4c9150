//! Conversion from Kubernetes objects (core/v1 Service and Endpoints,
//! discovery.k8s.io/v1 EndpointSlice) into the proxy's model.
//!
//! Bad objects give a [`ConvertError`] naming the object and the field; objects with
//! nothing to proxy (ExternalName, headless, no cluster IP allocated yet) give `Ok(None)`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use tracing::warn;

use crate::model::{
    Endpoint, Protocol, Service, ServiceEndpoints, ServiceName, ServicePort, ServiceType,
};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Kubernetes object the proxy cannot use, with the object and field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {object}: {field}: {message}")]
pub struct ConvertError {
    /// `Service`, `Endpoints` or `EndpointSlice`.
    pub kind: &'static str,
    /// `namespace/name` (as far as known).
    pub object: String,
    /// The field path, e.g. `spec.ports[1].nodePort`.
    pub field: String,
    pub message: String,
}

struct Ctx<'a> {
    kind: &'static str,
    object: &'a str,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ConvertError {
        ConvertError {
            kind: self.kind,
            object: self.object.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }
}

fn object_name(
    kind: &'static str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<ServiceName, ConvertError> {
    let namespace = meta
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let Some(name) = meta.name.clone().filter(|n| !n.is_empty()) else {
        return Err(ConvertError {
            kind,
            object: format!("{namespace}/<unnamed>"),
            field: "metadata.name".into(),
            message: "must be set".into(),
        });
    };
    Ok(ServiceName { namespace, name })
}

fn protocol(ctx: &Ctx<'_>, field: &str, value: Option<&str>) -> Result<Protocol, ConvertError> {
    match value.unwrap_or("TCP") {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "SCTP" => Ok(Protocol::Sctp),
        other => Err(ctx.err(
            field,
            format!("unsupported protocol {other:?} (expected TCP, UDP or SCTP)"),
        )),
    }
}

fn port(ctx: &Ctx<'_>, field: &str, value: i32) -> Result<u16, ConvertError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ctx.err(field, format!("port {value} is out of range 1-65535")))
}

fn ip(ctx: &Ctx<'_>, field: &str, value: &str) -> Result<IpAddr, ConvertError> {
    value
        .parse()
        .map_err(|_| ctx.err(field, format!("{value:?} is not an IP address")))
}

/// Converts a core/v1 Service. `Ok(None)` for Services the proxy has nothing to do with:
/// ExternalName, headless (`clusterIP: None`) and Services whose cluster IP is not
/// allocated yet.
pub fn service_from_k8s(svc: &core::Service) -> Result<Option<Service>, ConvertError> {
    let name = object_name("Service", &svc.metadata)?;
    let object = name.to_string();
    let ctx = Ctx {
        kind: "Service",
        object: &object,
    };
    let Some(spec) = svc.spec.as_ref() else {
        return Err(ctx.err("spec", "must be set"));
    };
    let service_type = match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "ClusterIP" => ServiceType::ClusterIp,
        "NodePort" => ServiceType::NodePort,
        "LoadBalancer" => ServiceType::LoadBalancer,
        "ExternalName" => return Ok(None),
        other => return Err(ctx.err("spec.type", format!("unknown Service type {other:?}"))),
    };
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("") | Some("None") => return Ok(None),
        Some(value) => ip(&ctx, "spec.clusterIP", value)?,
    };
    if let Some(affinity) = spec.session_affinity.as_deref()
        && affinity != "None"
    {
        warn!(service = %object, affinity, "session affinity is not supported; connections are spread at random");
    }
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let pname = p.name.clone().unwrap_or_default();
        if ports.iter().any(|q: &ServicePort| q.name == pname) {
            return Err(ctx.err(
                format!("spec.ports[{i}].name"),
                format!("duplicate port name {pname:?}: ports of a Service with more than one port need distinct names"),
            ));
        }
        let node_port = match p.node_port {
            Some(np) if service_type.has_node_ports() && np != 0 => {
                Some(port(&ctx, &format!("spec.ports[{i}].nodePort"), np)?)
            }
            _ => None,
        };
        ports.push(ServicePort {
            name: pname,
            protocol: protocol(
                &ctx,
                &format!("spec.ports[{i}].protocol"),
                p.protocol.as_deref(),
            )?,
            port: port(&ctx, &format!("spec.ports[{i}].port"), p.port)?,
            node_port,
        });
    }
    let mut external_ips = Vec::new();
    for (i, value) in spec.external_ips.iter().flatten().enumerate() {
        external_ips.push(ip(&ctx, &format!("spec.externalIPs[{i}]"), value)?);
    }
    if service_type == ServiceType::LoadBalancer {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for (i, entry) in ingress.into_iter().flatten().enumerate() {
            // A hostname-only entry has nothing to program; `ipMode: Proxy` means the
            // load balancer itself forwards to the node ports (as kube-proxy reads it).
            if entry.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            if let Some(value) = entry.ip.as_deref() {
                let addr = ip(&ctx, &format!("status.loadBalancer.ingress[{i}].ip"), value)?;
                if !external_ips.contains(&addr) {
                    external_ips.push(addr);
                }
            }
        }
    }
    Ok(Some(Service {
        name,
        cluster_ip,
        service_type,
        ports,
        external_ips,
    }))
}

fn add_endpoint(out: &mut ServiceEndpoints, port_name: String, ep: Endpoint) {
    out.entry(port_name).or_default().push(ep);
}

fn finish(mut out: ServiceEndpoints) -> ServiceEndpoints {
    for list in out.values_mut() {
        list.sort();
        list.dedup();
    }
    out
}

/// Converts a core/v1 Endpoints object into the ready endpoints of its Service
/// (`addresses`; `notReadyAddresses` are left out), per port name.
pub fn endpoints_from_k8s(
    eps: &core::Endpoints,
) -> Result<(ServiceName, ServiceEndpoints), ConvertError> {
    let name = object_name("Endpoints", &eps.metadata)?;
    let object = name.to_string();
    let ctx = Ctx {
        kind: "Endpoints",
        object: &object,
    };
    let mut out = ServiceEndpoints::new();
    for (s, subset) in eps.subsets.iter().flatten().enumerate() {
        let mut addrs = Vec::new();
        for (a, addr) in subset.addresses.iter().flatten().enumerate() {
            addrs.push(ip(
                &ctx,
                &format!("subsets[{s}].addresses[{a}].ip"),
                &addr.ip,
            )?);
        }
        for (p, ep_port) in subset.ports.iter().flatten().enumerate() {
            let number = port(&ctx, &format!("subsets[{s}].ports[{p}].port"), ep_port.port)?;
            protocol(
                &ctx,
                &format!("subsets[{s}].ports[{p}].protocol"),
                ep_port.protocol.as_deref(),
            )?;
            for addr in &addrs {
                add_endpoint(
                    &mut out,
                    ep_port.name.clone().unwrap_or_default(),
                    Endpoint::new(*addr, number),
                );
            }
        }
    }
    Ok((name, finish(out)))
}

/// Converts discovery.k8s.io/v1 EndpointSlices into the ready endpoints of their Services.
///
/// Slices are grouped by their `kubernetes.io/service-name` label (a Service may have
/// several slices). An endpoint counts as ready unless `conditions.ready` is false (an
/// unset condition means ready, as in Kubernetes). FQDN slices are ignored.
pub fn endpoints_from_slices<'a>(
    slices: impl IntoIterator<Item = &'a discovery::EndpointSlice>,
) -> Result<BTreeMap<ServiceName, ServiceEndpoints>, ConvertError> {
    let mut all: BTreeMap<ServiceName, ServiceEndpoints> = BTreeMap::new();
    for slice in slices {
        let slice_name = object_name("EndpointSlice", &slice.metadata)?;
        let object = slice_name.to_string();
        let ctx = Ctx {
            kind: "EndpointSlice",
            object: &object,
        };
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ctx.err(
                    format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
                    "must name the Service",
                )
            })?;
        let service = ServiceName::new(slice_name.namespace.clone(), service.clone());
        let out = all.entry(service).or_default();
        match slice.address_type.as_str() {
            "IPv4" | "IPv6" => {}
            "FQDN" => continue,
            other => return Err(ctx.err("addressType", format!("unknown address type {other:?}"))),
        }
        let mut ports = Vec::new();
        for (p, ep_port) in slice.ports.iter().flatten().enumerate() {
            let Some(number) = ep_port.port else { continue };
            let number = port(&ctx, &format!("ports[{p}].port"), number)?;
            protocol(
                &ctx,
                &format!("ports[{p}].protocol"),
                ep_port.protocol.as_deref(),
            )?;
            ports.push((ep_port.name.clone().unwrap_or_default(), number));
        }
        for (e, endpoint) in slice.endpoints.iter().enumerate() {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for (a, addr) in endpoint.addresses.iter().enumerate() {
                let addr = ip(&ctx, &format!("endpoints[{e}].addresses[{a}]"), addr)?;
                for (pname, number) in &ports {
                    add_endpoint(out, pname.clone(), Endpoint::new(addr, *number));
                }
            }
        }
    }
    Ok(all.into_iter().map(|(k, v)| (k, finish(v))).collect())
}
