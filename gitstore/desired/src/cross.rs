//! Checks across the objects of one commit: namespaces, references to ConfigMaps and
//! Secrets, Service ports. (Duplicates are found when the snapshot is assembled.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::ValidationError;
use crate::object::{DesiredObject, Object, ObjectKey};
use crate::path;
use crate::yaml::PathSeg;

/// Namespaces that exist without being declared.
pub const BUILTIN_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Whether a label selector selects pods with these labels.
pub fn selector_matches(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k));
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => get(&e.key).is_some(),
            "DoesNotExist" => get(&e.key).is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// A Service's selector (a plain map) against pod labels.
pub fn map_selector_matches(
    sel: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    sel.iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Every cross-object error of a commit.
pub(crate) fn check_all(objects: &BTreeMap<ObjectKey, Arc<DesiredObject>>) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    let declared: BTreeSet<&str> = objects
        .values()
        .filter_map(|o| match &o.object {
            Object::Namespace(n) => n.metadata.name.as_deref(),
            _ => None,
        })
        .collect();
    // ConfigMaps and Secrets by (namespace, name).
    let mut config_maps: HashMap<(&str, &str), &Object> = HashMap::new();
    let mut secrets: HashMap<(&str, &str), &Object> = HashMap::new();
    // Pod-making objects per namespace.
    let mut pod_makers: HashMap<&str, Vec<&DesiredObject>> = HashMap::new();
    for o in objects.values() {
        let ns = o.key.namespace.as_deref().unwrap_or_default();
        match &o.object {
            Object::ConfigMap(_) => {
                config_maps.insert((ns, &*o.key.name), &o.object);
            }
            Object::Secret(_) => {
                secrets.insert((ns, &*o.key.name), &o.object);
            }
            _ => {}
        }
        if o.object.pod_spec().is_some() {
            pod_makers.entry(ns).or_default().push(o);
        }
    }

    let all: Vec<&DesiredObject> = objects.values().map(|o| o.as_ref()).collect();
    let cx = Tables {
        declared: &declared,
        config_maps: &config_maps,
        secrets: &secrets,
        pod_makers: &pod_makers,
    };
    // The checks of each object are independent: split them across the cores.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads > 1 && all.len() >= 2000 {
        let per = all.len().div_ceil(threads);
        let parts: Vec<Vec<ValidationError>> = std::thread::scope(|s| {
            let handles: Vec<_> = all
                .chunks(per)
                .map(|chunk| s.spawn(|| chunk.iter().flat_map(|o| cx.check(o)).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        errors.extend(parts.into_iter().flatten());
    } else {
        errors.extend(all.iter().flat_map(|o| cx.check(o)));
    }
    errors
}

struct Tables<'a> {
    declared: &'a BTreeSet<&'a str>,
    config_maps: &'a HashMap<(&'a str, &'a str), &'a Object>,
    secrets: &'a HashMap<(&'a str, &'a str), &'a Object>,
    pod_makers: &'a HashMap<&'a str, Vec<&'a DesiredObject>>,
}

impl Tables<'_> {
    fn check(&self, o: &DesiredObject) -> Vec<ValidationError> {
        let mut errors = Vec::new();
        if let Some(ns) = o.key.namespace.as_deref()
            && !self.declared.contains(ns)
            && !BUILTIN_NAMESPACES.contains(&ns)
        {
            errors.push(o.error_at(
                &path!["metadata", "namespace"],
                false,
                format!("namespace `{ns}` is not declared in this commit (add a Namespace manifest for it)"),
            ));
        }
        if let Some(ps) = o.object.pod_spec() {
            let ns = o.key.namespace.as_deref().unwrap_or_default();
            let refs = Refs {
                ns,
                config_maps: self.config_maps,
                secrets: self.secrets,
            };
            refs.check(o, ps.path, ps.spec, &mut errors);
        }
        if let Object::Service(s) = &o.object {
            service_ports(o, s, self.pod_makers, &mut errors);
        }
        errors
    }
}

struct Refs<'a> {
    ns: &'a str,
    config_maps: &'a HashMap<(&'a str, &'a str), &'a Object>,
    secrets: &'a HashMap<(&'a str, &'a str), &'a Object>,
}

/// Whether a ConfigMap or Secret has a key.
fn has_key(o: &Object, k: &str) -> bool {
    match o {
        Object::ConfigMap(c) => {
            c.data.as_ref().is_some_and(|d| d.contains_key(k))
                || c.binary_data.as_ref().is_some_and(|d| d.contains_key(k))
        }
        Object::Secret(s) => {
            s.data.as_ref().is_some_and(|d| d.contains_key(k))
                || s.string_data.as_ref().is_some_and(|d| d.contains_key(k))
        }
        _ => false,
    }
}

/// What a reference names and where, built only when it is reported.
struct Ref<'r, F: FnOnce() -> Vec<PathSeg>> {
    secret: bool,
    name: Option<&'r str>,
    key: Option<&'r str>,
    optional: Option<bool>,
    path: F,
}

impl Refs<'_> {
    fn one<F: FnOnce() -> Vec<PathSeg>>(
        &self,
        o: &DesiredObject,
        base: &[&str],
        r: Ref<'_, F>,
        errors: &mut Vec<ValidationError>,
    ) {
        if r.optional == Some(true) {
            return;
        }
        let what = if r.secret { "Secret" } else { "ConfigMap" };
        let full = |tail: F| {
            let mut p: Vec<PathSeg> = base.iter().map(|s| PathSeg::from(*s)).collect();
            p.extend(tail());
            p
        };
        let Some(name) = r.name.filter(|n| !n.is_empty()) else {
            errors.push(o.error_at(
                &full(r.path),
                false,
                format!("the {what} reference needs a name"),
            ));
            return;
        };
        let table = if r.secret {
            self.secrets
        } else {
            self.config_maps
        };
        match table.get(&(self.ns, name)) {
            None => errors.push(o.error_at(
                &full(r.path),
                false,
                format!(
                    "{what} `{name}` is not in this commit (namespace {}); add it or mark the reference `optional: true`",
                    self.ns
                ),
            )),
            Some(target) => {
                if let Some(k) = r.key
                    && !has_key(target, k)
                {
                    errors.push(o.error_at(
                        &full(r.path),
                        false,
                        format!("{what} `{name}` has no key `{k}`; add it or mark the reference `optional: true`"),
                    ));
                }
            }
        }
    }

    fn check(
        &self,
        o: &DesiredObject,
        base: &[&str],
        spec: &PodSpec,
        errors: &mut Vec<ValidationError>,
    ) {
        for (i, v) in spec.volumes.iter().flatten().enumerate() {
            if let Some(c) = &v.config_map {
                for (j, item) in c.items.iter().flatten().enumerate() {
                    let path = || path!["volumes", i, "configMap", "items", j, "key"].into();
                    let r = Ref {
                        secret: false,
                        name: Some(&c.name),
                        key: Some(&item.key),
                        optional: c.optional,
                        path,
                    };
                    self.one(o, base, r, errors);
                }
                let path = || path!["volumes", i, "configMap", "name"].into();
                let r = Ref {
                    secret: false,
                    name: Some(&c.name),
                    key: None,
                    optional: c.optional,
                    path,
                };
                self.one(o, base, r, errors);
            }
            if let Some(s) = &v.secret {
                for (j, item) in s.items.iter().flatten().enumerate() {
                    let path = || path!["volumes", i, "secret", "items", j, "key"].into();
                    let r = Ref {
                        secret: true,
                        name: s.secret_name.as_deref(),
                        key: Some(&item.key),
                        optional: s.optional,
                        path,
                    };
                    self.one(o, base, r, errors);
                }
                let path = || path!["volumes", i, "secret", "secretName"].into();
                let r = Ref {
                    secret: true,
                    name: s.secret_name.as_deref(),
                    key: None,
                    optional: s.optional,
                    path,
                };
                self.one(o, base, r, errors);
            }
            if let Some(pr) = &v.projected {
                for (j, src) in pr.sources.iter().flatten().enumerate() {
                    if let Some(c) = &src.config_map {
                        let path = || {
                            path!["volumes", i, "projected", "sources", j, "configMap", "name"]
                                .into()
                        };
                        let r = Ref {
                            secret: false,
                            name: Some(&c.name),
                            key: None,
                            optional: c.optional,
                            path,
                        };
                        self.one(o, base, r, errors);
                    }
                    if let Some(s) = &src.secret {
                        let path = || {
                            path!["volumes", i, "projected", "sources", j, "secret", "name"].into()
                        };
                        let r = Ref {
                            secret: true,
                            name: Some(&s.name),
                            key: None,
                            optional: s.optional,
                            path,
                        };
                        self.one(o, base, r, errors);
                    }
                }
            }
        }
        let lists = [
            ("initContainers", spec.init_containers.as_ref()),
            ("containers", Some(&spec.containers)),
        ];
        for (field, list) in lists {
            for (i, c) in list.into_iter().flatten().enumerate() {
                for (j, e) in c.env.iter().flatten().enumerate() {
                    let Some(vf) = &e.value_from else { continue };
                    let key_refs = [
                        (
                            "configMapKeyRef",
                            false,
                            vf.config_map_key_ref
                                .as_ref()
                                .map(|r| (&r.name, &r.key, r.optional)),
                        ),
                        (
                            "secretKeyRef",
                            true,
                            vf.secret_key_ref
                                .as_ref()
                                .map(|r| (&r.name, &r.key, r.optional)),
                        ),
                    ];
                    for (kind, secret, found) in key_refs {
                        let Some((name, key, optional)) = found else {
                            continue;
                        };
                        let path = || path![field, i, "env", j, "valueFrom", kind, "name"].into();
                        let r = Ref {
                            secret,
                            name: Some(name),
                            key: Some(key),
                            optional,
                            path,
                        };
                        self.one(o, base, r, errors);
                    }
                }
                for (j, e) in c.env_from.iter().flatten().enumerate() {
                    if let Some(r) = &e.config_map_ref {
                        let path = || path![field, i, "envFrom", j, "configMapRef", "name"].into();
                        let r = Ref {
                            secret: false,
                            name: Some(&r.name),
                            key: None,
                            optional: r.optional,
                            path,
                        };
                        self.one(o, base, r, errors);
                    }
                    if let Some(r) = &e.secret_ref {
                        let path = || path![field, i, "envFrom", j, "secretRef", "name"].into();
                        let r = Ref {
                            secret: true,
                            name: Some(&r.name),
                            key: None,
                            optional: r.optional,
                            path,
                        };
                        self.one(o, base, r, errors);
                    }
                }
            }
        }
    }
}

fn service_ports(
    o: &DesiredObject,
    s: &k8s_openapi::api::core::v1::Service,
    pod_makers: &HashMap<&str, Vec<&DesiredObject>>,
    errors: &mut Vec<ValidationError>,
) {
    let Some(spec) = &s.spec else { return };
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return;
    };
    let named = |p: &k8s_openapi::api::core::v1::ServicePort| {
        matches!(p.target_port, Some(IntOrString::String(_)))
    };
    if !spec.ports.iter().flatten().any(named) {
        return;
    }
    let ns = o.key.namespace.as_deref().unwrap_or_default();
    let mut selected = Vec::new();
    for m in pod_makers.get(ns).into_iter().flatten() {
        if let Some(ps) = m.object.pod_spec()
            && map_selector_matches(selector, ps.labels)
        {
            selected.push((*m, ps.spec));
        }
    }
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        let Some(IntOrString::String(name)) = &port.target_port else {
            continue;
        };
        let declared = selected.iter().any(|(_, spec)| {
            spec.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .any(|p| p.name.as_deref() == Some(name.as_str()))
        });
        if declared {
            continue;
        }
        let message = if selected.is_empty() {
            format!(
                "targetPort `{name}` names a port, but the selector ({}) selects no pod template in namespace {ns}",
                crate::checks::render_labels(Some(selector))
            )
        } else {
            let who: Vec<String> = selected.iter().map(|(m, _)| m.key.to_string()).collect();
            format!(
                "no container selected by this Service declares a port named `{name}` (selected: {})",
                who.join(", ")
            )
        };
        errors.push(o.error_at(&path!["spec", "ports", i, "targetPort"], false, message));
    }
}

/// Service addresses across the commit: a `spec.clusterIP` must be an IPv4 address in
/// the service range (or `None`), and no two Services may claim the same cluster IP or
/// node port (per protocol). Every claimant of a clash gets an error naming the others.
pub(crate) fn service_addresses(
    objects: &BTreeMap<ObjectKey, Arc<DesiredObject>>,
    cidr: &crate::ServiceCidr,
) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    let mut ips: BTreeMap<std::net::Ipv4Addr, Vec<&DesiredObject>> = BTreeMap::new();
    let mut ports: BTreeMap<(i32, String), Vec<(&DesiredObject, usize)>> = BTreeMap::new();
    for o in objects.values() {
        let Object::Service(s) = &o.object else {
            continue;
        };
        let Some(spec) = &s.spec else { continue };
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        if ty != "ExternalName"
            && let Some(ip) = spec.cluster_ip.as_deref().filter(|v| !v.is_empty())
            && ip != "None"
        {
            match ip.parse::<std::net::Ipv4Addr>() {
                Ok(a) if cidr.contains_usable(a) => ips.entry(a).or_default().push(o),
                Ok(_) => errors.push(o.error_at(
                    &path!["spec", "clusterIP"],
                    false,
                    format!("clusterIP {ip} is outside the service range {cidr} (or is its network or broadcast address)"),
                )),
                Err(_) => errors.push(o.error_at(
                    &path!["spec", "clusterIP"],
                    false,
                    format!("clusterIP `{ip}` is not an IPv4 address (or `None` for a headless Service)"),
                )),
            }
        }
        if matches!(ty, "NodePort" | "LoadBalancer") {
            for (i, p) in spec.ports.iter().flatten().enumerate() {
                if let Some(np) = p.node_port.filter(|n| *n > 0) {
                    let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                    ports.entry((np, proto)).or_default().push((o, i));
                }
            }
        }
    }
    for (ip, claimants) in ips.iter().filter(|(_, c)| c.len() > 1) {
        for o in claimants {
            let others: Vec<String> = claimants
                .iter()
                .filter(|x| x.key != o.key)
                .map(|x| format!("{} ({})", x.key, x.provenance.path))
                .collect();
            errors.push(o.error_at(
                &path!["spec", "clusterIP"],
                false,
                format!("clusterIP {ip} is also claimed by {}", others.join(", ")),
            ));
        }
    }
    for ((np, proto), claimants) in ports.iter().filter(|(_, c)| c.len() > 1) {
        for (o, i) in claimants {
            let others: Vec<String> = claimants
                .iter()
                .filter(|(x, j)| x.key != o.key || j != i)
                .map(|(x, j)| format!("{} ports[{j}] ({})", x.key, x.provenance.path))
                .collect();
            errors.push(o.error_at(
                &path!["spec", "ports", *i, "nodePort"],
                false,
                format!(
                    "nodePort {np}/{proto} is also claimed by {}",
                    others.join(", ")
                ),
            ));
        }
    }
    errors
}
