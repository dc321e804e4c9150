//! From a Pod's container spec to the [`ContainerConfig`] a runtime runs: env values
//! resolved (value, fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef, envFrom),
//! `$(VAR)` references expanded in env, command and args as Kubernetes does, quantities
//! parsed, and a hash of the spec that tells when a running container is out of date.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use sha2::{Digest, Sha256};

use crate::runtime::{ContainerConfig, PortMapping, Resources};

/// Why a container's configuration cannot be made (`CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// What env resolution may read besides the pod itself.
#[derive(Debug, Clone, Default)]
pub struct EnvContext {
    /// The node's name (`spec.nodeName` fallback).
    pub node_name: String,
    /// The node's IP (`status.hostIP`).
    pub host_ip: Option<String>,
    /// The pod's IP (`status.podIP`), known once the sandbox exists.
    pub pod_ip: Option<String>,
    /// Each container's mounts, from the pod's volumes (see [`crate::volumes::prepare`]).
    pub mounts: crate::volumes::PodMounts,
    /// ConfigMaps of the pod's namespace that the pod references, by name.
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// Secrets of the pod's namespace that the pod references, by name.
    pub secrets: BTreeMap<String, Secret>,
    /// Node allocatable CPU (millicores) for `resourceFieldRef` without a limit.
    pub node_cpu_millis: u64,
    /// Node allocatable memory (bytes) for `resourceFieldRef` without a limit.
    pub node_memory_bytes: u64,
    /// Service environment variables of the pod (see [`service_env`]), set before the
    /// container's own env, which wins.
    pub service_env: Vec<(String, String)>,
}

/// The environment variables Kubernetes gives a pod for the Services of its namespace
/// that exist when it starts (`enableServiceLinks`, on unless the pod turns it off):
/// `{NAME}_SERVICE_HOST`, `{NAME}_SERVICE_PORT`, `{NAME}_SERVICE_PORT_{PORT}` for named
/// ports, and the Docker-link ones (`{NAME}_PORT=tcp://ip:port`,
/// `{NAME}_PORT_{port}_{PROTO}`, `..._PROTO`, `..._PORT`, `..._ADDR`). `NAME` is the
/// Service's name in upper case with `-` as `_`. Headless Services, ExternalName Services
/// and Services without a cluster IP yet are left out. Sorted by Service name.
pub fn service_env(services: &[k8s_openapi::api::core::v1::Service]) -> Vec<(String, String)> {
    let mut list: Vec<&k8s_openapi::api::core::v1::Service> = services.iter().collect();
    list.sort_by_key(|s| s.metadata.name.clone());
    let upper = |s: &str| s.to_uppercase().replace('-', "_");
    let mut out = Vec::new();
    for s in list {
        let Some(spec) = &s.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let name = upper(s.metadata.name.as_deref().unwrap_or_default());
        out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{name}_SERVICE_PORT_{}", upper(pn)),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.as_deref().unwrap_or("TCP").to_string()
        };
        out.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
        ));
        for p in ports {
            let pr = proto(p);
            let base = format!("{name}_PORT_{}_{}", p.port, pr.to_uppercase());
            out.push((
                base.clone(),
                format!("{}://{ip}:{}", pr.to_lowercase(), p.port),
            ));
            out.push((format!("{base}_PROTO"), pr.to_lowercase()));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.to_string()));
        }
    }
    out
}

/// Whether a pod gets service environment variables (`enableServiceLinks`, default true).
pub fn service_links(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true)
}

/// Names of the ConfigMaps and Secrets a pod's env and volumes refer to:
/// `(config_maps, secrets)`.
pub fn referenced_objects(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let (mut cms, mut secrets) = crate::volumes::referenced_objects(pod);
    let Some(spec) = &pod.spec else {
        return (cms, secrets);
    };
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for e in c.env.iter().flatten() {
            if let Some(vf) = &e.value_from {
                if let Some(r) = &vf.config_map_key_ref {
                    cms.push(r.name.clone());
                }
                if let Some(r) = &vf.secret_key_ref {
                    secrets.push(r.name.clone());
                }
            }
        }
        for ef in c.env_from.iter().flatten() {
            if let Some(r) = &ef.config_map_ref {
                cms.push(r.name.clone());
            }
            if let Some(r) = &ef.secret_ref {
                secrets.push(r.name.clone());
            }
        }
    }
    cms.sort();
    cms.dedup();
    secrets.sort();
    secrets.dedup();
    (cms, secrets)
}

/// Hash of a container's spec (its serialized form).
pub fn container_hash(c: &Container) -> String {
    let json = serde_json::to_vec(c).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The pod's `terminationGracePeriodSeconds` (30 s when unset, never negative).
pub fn termination_grace(pod: &Pod) -> Duration {
    let secs = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

/// Ports of a container.
pub fn container_ports(c: &Container) -> Result<Vec<PortMapping>, ConfigError> {
    let mut out = Vec::new();
    for p in c.ports.iter().flatten() {
        let port = u16::try_from(p.container_port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                ConfigError(format!(
                    "container {}: containerPort {} is out of range",
                    c.name, p.container_port
                ))
            })?;
        let host_port = match p.host_port {
            None | Some(0) => None,
            Some(h) => Some(u16::try_from(h).map_err(|_| {
                ConfigError(format!(
                    "container {}: hostPort {h} is out of range",
                    c.name
                ))
            })?),
        };
        out.push(PortMapping {
            container_port: port,
            host_port,
            host_ip: p.host_ip.clone().filter(|s| !s.is_empty()),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        });
    }
    Ok(out)
}

/// Limits and requests of a container.
pub fn container_resources(c: &Container) -> Result<Resources, ConfigError> {
    let mut r = Resources::default();
    let Some(res) = &c.resources else {
        return Ok(r);
    };
    let field = |m: &Option<BTreeMap<String, Quantity>>,
                 key: &str,
                 what: &str|
     -> Result<Option<f64>, ConfigError> {
        match m.as_ref().and_then(|m| m.get(key)) {
            None => Ok(None),
            Some(q) => parse_quantity(&q.0).map(Some).map_err(|e| {
                ConfigError(format!("container {}: resources.{what}.{key}: {e}", c.name))
            }),
        }
    };
    r.cpu_limit_millis = field(&res.limits, "cpu", "limits")?.map(|v| (v * 1000.0).ceil() as u64);
    r.cpu_request_millis =
        field(&res.requests, "cpu", "requests")?.map(|v| (v * 1000.0).ceil() as u64);
    r.memory_limit_bytes = field(&res.limits, "memory", "limits")?.map(|v| v.ceil() as u64);
    r.memory_request_bytes = field(&res.requests, "memory", "requests")?.map(|v| v.ceil() as u64);
    // As in Kubernetes, a limit without a request sets the request.
    if r.cpu_request_millis.is_none() {
        r.cpu_request_millis = r.cpu_limit_millis;
    }
    if r.memory_request_bytes.is_none() {
        r.memory_request_bytes = r.memory_limit_bytes;
    }
    Ok(r)
}

/// Parses a Kubernetes quantity (`500m`, `1.5`, `128Mi`, `1G`, `2e3`) to its value.
pub fn parse_quantity(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (num, exp) = match suffix.strip_prefix(['e', 'E']) {
        Some(e) if !e.is_empty() => (
            num,
            e.parse::<i32>()
                .map_err(|_| format!("invalid quantity {s:?}"))?,
        ),
        _ => (num, 0),
    };
    let value: f64 = num.parse().map_err(|_| format!("invalid quantity {s:?}"))?;
    let mult = if exp != 0 {
        10f64.powi(exp)
    } else {
        match suffix {
            "" => 1.0,
            "n" => 1e-9,
            "u" => 1e-6,
            "m" => 1e-3,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "P" => 1e15,
            "E" => 1e18,
            "Ki" => 1024.0,
            "Mi" => 1024f64.powi(2),
            "Gi" => 1024f64.powi(3),
            "Ti" => 1024f64.powi(4),
            "Pi" => 1024f64.powi(5),
            "Ei" => 1024f64.powi(6),
            _ => return Err(format!("invalid quantity {s:?}: unknown suffix {suffix:?}")),
        }
    };
    if value < 0.0 || !value.is_finite() {
        return Err(format!(
            "invalid quantity {s:?}: must be a non-negative number"
        ));
    }
    Ok(value * mult)
}

/// Kubernetes' `$(VAR)` expansion: defined references are replaced, `$$` escapes a `$`,
/// undefined references stay as written.
pub fn expand(input: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let b = input.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            match b[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(close) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + close];
                        match vars(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&input[i..i + 3 + close]),
                        }
                        i += 3 + close;
                        continue;
                    }
                }
                _ => {}
            }
        }
        // Push one whole UTF-8 character.
        let ch_len = input[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&input[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// Resolves a container's environment (envFrom, then env, later entries winning).
pub fn resolve_env(
    pod: &Pod,
    c: &Container,
    ctx: &EnvContext,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut order: Vec<String> = Vec::new();
    let mut vals: HashMap<String, String> = HashMap::new();
    let set =
        |k: String, v: String, order: &mut Vec<String>, vals: &mut HashMap<String, String>| {
            if !vals.contains_key(&k) {
                order.push(k.clone());
            }
            vals.insert(k, v);
        };
    for (k, v) in &ctx.service_env {
        set(k.clone(), v.clone(), &mut order, &mut vals);
    }
    for ef in c.env_from.iter().flatten() {
        let prefix = ef.prefix.clone().unwrap_or_default();
        if let Some(r) = &ef.config_map_ref {
            match ctx.config_maps.get(&r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(format!("{prefix}{k}"), v.clone(), &mut order, &mut vals);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError(format!("configmap \"{}\" not found", r.name))),
            }
        }
        if let Some(r) = &ef.secret_ref {
            match ctx.secrets.get(&r.name) {
                Some(s) => {
                    for (k, v) in secret_values(s) {
                        set(format!("{prefix}{k}"), v, &mut order, &mut vals);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError(format!("secret \"{}\" not found", r.name))),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(vf) = &e.value_from {
            if let Some(f) = &vf.field_ref {
                Some(field_value(pod, &f.field_path, ctx).map_err(|m| {
                    ConfigError(format!("container {}: env {}: {m}", c.name, e.name))
                })?)
            } else if let Some(r) = &vf.resource_field_ref {
                Some(resource_value(c, r, ctx).map_err(|m| {
                    ConfigError(format!("container {}: env {}: {m}", c.name, e.name))
                })?)
            } else if let Some(r) = &vf.config_map_key_ref {
                match ctx.config_maps.get(&r.name) {
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => Some(v.clone()),
                        None if r.optional == Some(true) => None,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in ConfigMap {}/{}",
                                r.key,
                                pod_namespace(pod),
                                r.name
                            )));
                        }
                    },
                    None if r.optional == Some(true) => None,
                    None => return Err(ConfigError(format!("configmap \"{}\" not found", r.name))),
                }
            } else if let Some(r) = &vf.secret_key_ref {
                match ctx.secrets.get(&r.name) {
                    Some(s) => match secret_values(s).into_iter().find(|(k, _)| *k == r.key) {
                        Some((_, v)) => Some(v),
                        None if r.optional == Some(true) => None,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in Secret {}/{}",
                                r.key,
                                pod_namespace(pod),
                                r.name
                            )));
                        }
                    },
                    None if r.optional == Some(true) => None,
                    None => return Err(ConfigError(format!("secret \"{}\" not found", r.name))),
                }
            } else {
                Some(String::new())
            }
        } else {
            let raw = e.value.clone().unwrap_or_default();
            Some(expand(&raw, &|name| vals.get(name).cloned()))
        };
        if let Some(v) = value {
            set(e.name.clone(), v, &mut order, &mut vals);
        }
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = vals.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect())
}

fn secret_values(s: &Secret) -> Vec<(String, String)> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in s.data.iter().flatten() {
        out.insert(k.clone(), String::from_utf8_lossy(&v.0).into_owned());
    }
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out.into_iter().collect()
}

fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

pub(crate) fn field_value(pod: &Pod, path: &str, ctx: &EnvContext) -> Result<String, String> {
    let md = &pod.metadata;
    let spec = pod.spec.as_ref();
    let subscript = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_string)
    };
    if let Some(k) = subscript("metadata.labels['") {
        return Ok(md
            .labels
            .as_ref()
            .and_then(|l| l.get(&k))
            .cloned()
            .unwrap_or_default());
    }
    if let Some(k) = subscript("metadata.annotations['") {
        return Ok(md
            .annotations
            .as_ref()
            .and_then(|l| l.get(&k))
            .cloned()
            .unwrap_or_default());
    }
    Ok(match path {
        "metadata.name" => md.name.clone().unwrap_or_default(),
        "metadata.namespace" => pod_namespace(pod).to_string(),
        "metadata.uid" => md.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| ctx.node_name.clone()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.clone().unwrap_or_default(),
        "status.podIP" | "status.podIPs" => ctx.pod_ip.clone().unwrap_or_default(),
        other => return Err(format!("unsupported fieldPath {other:?}")),
    })
}

pub(crate) fn resource_value(
    c: &Container,
    r: &k8s_openapi::api::core::v1::ResourceFieldSelector,
    ctx: &EnvContext,
) -> Result<String, String> {
    if let Some(name) = &r.container_name
        && !name.is_empty()
        && name != &c.name
    {
        return Err(format!(
            "resourceFieldRef for another container ({name}) is not supported"
        ));
    }
    let res = container_resources(c).map_err(|e| e.0)?;
    let divisor = match &r.divisor {
        Some(q) => parse_quantity(&q.0)?,
        None => 1.0,
    };
    if divisor <= 0.0 {
        return Err("divisor must be positive".into());
    }
    let value = match r.resource.as_str() {
        "limits.cpu" => res.cpu_limit_millis.unwrap_or(ctx.node_cpu_millis) as f64 / 1000.0,
        "requests.cpu" => res.cpu_request_millis.unwrap_or(0) as f64 / 1000.0,
        "limits.memory" => res.memory_limit_bytes.unwrap_or(ctx.node_memory_bytes) as f64,
        "requests.memory" => res.memory_request_bytes.unwrap_or(0) as f64,
        other => return Err(format!("unsupported resource {other:?}")),
    };
    Ok(format!("{}", (value / divisor).ceil() as u64))
}

/// Builds the config of attempt `attempt` of container `c` of `pod`.
pub fn container_config(
    pod: &Pod,
    c: &Container,
    attempt: u32,
    ctx: &EnvContext,
) -> Result<ContainerConfig, ConfigError> {
    let image = c
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ConfigError(format!("container {}: no image", c.name)))?;
    let env = resolve_env(pod, c, ctx)?;
    let lookup: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let vars = |name: &str| lookup.get(name).map(|v| v.to_string());
    let command = c
        .command
        .iter()
        .flatten()
        .map(|s| expand(s, &vars))
        .collect();
    let args = c.args.iter().flatten().map(|s| expand(s, &vars)).collect();
    Ok(ContainerConfig {
        name: c.name.clone(),
        attempt,
        image,
        command,
        args,
        env,
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        ports: container_ports(c)?,
        resources: container_resources(c)?,
        spec_hash: container_hash(c),
        termination_grace: termination_grace(pod),
        mounts: ctx.mounts.get(&c.name).cloned().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapKeySelector, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec,
        ResourceRequirements,
    };

    fn pod_with(c: Container) -> Pod {
        Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![c],
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("500m").unwrap(), 0.5);
        assert_eq!(parse_quantity("2").unwrap(), 2.0);
        assert_eq!(parse_quantity("128Mi").unwrap(), 134217728.0);
        assert_eq!(parse_quantity("1G").unwrap(), 1e9);
        assert_eq!(parse_quantity("1e3").unwrap(), 1000.0);
        assert!(parse_quantity("12x").is_err());
        assert!(parse_quantity("").is_err());
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let vars = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("$(A)-$(B)", &vars), "x-$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$A $(A", &vars), "$A $(A");
        assert_eq!(expand("é$(A)é", &vars), "éxé");
    }

    #[test]
    fn env_resolves_fields_configmaps_and_expansion() {
        let c = Container {
            name: "app".into(),
            image: Some("kommit.dev/demo:1".into()),
            args: Some(vec!["--name=$(MY_NAME)".into()]),
            env: Some(vec![
                EnvVar {
                    name: "MY_NAME".into(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                EnvVar {
                    name: "GREETING".into(),
                    value: Some("hi $(MY_NAME)".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "COLOR".into(),
                    value_from: Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cfg".into(),
                            key: "color".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            resources: Some(ResourceRequirements {
                limits: Some([("memory".to_string(), Quantity("64Mi".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = pod_with(c.clone());
        let mut ctx = EnvContext::default();
        let err = container_config(&pod, &c, 0, &ctx).unwrap_err();
        assert_eq!(err.0, "configmap \"cfg\" not found");
        ctx.config_maps.insert(
            "cfg".into(),
            ConfigMap {
                data: Some([("color".to_string(), "blue".to_string())].into()),
                ..Default::default()
            },
        );
        let cfg = container_config(&pod, &c, 2, &ctx).unwrap();
        assert_eq!(
            cfg.env,
            vec![
                ("MY_NAME".to_string(), "web-1".to_string()),
                ("GREETING".to_string(), "hi web-1".to_string()),
                ("COLOR".to_string(), "blue".to_string())
            ]
        );
        assert_eq!(cfg.args, vec!["--name=web-1"]);
        assert_eq!(cfg.attempt, 2);
        assert_eq!(cfg.resources.memory_limit_bytes, Some(64 * 1024 * 1024));
        assert_eq!(cfg.resources.memory_request_bytes, Some(64 * 1024 * 1024));
        assert_eq!(referenced_objects(&pod), (vec!["cfg".to_string()], vec![]));
    }

    #[test]
    fn spec_hash_changes_with_the_spec() {
        let a = Container {
            name: "a".into(),
            image: Some("x:1".into()),
            ..Default::default()
        };
        let mut b = a.clone();
        assert_eq!(container_hash(&a), container_hash(&b));
        b.image = Some("x:2".into());
        assert_ne!(container_hash(&a), container_hash(&b));
    }
}
