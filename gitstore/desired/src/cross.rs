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
use crate::yaml::{PathSeg, join};

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
    // ConfigMaps and Secrets by (namespace, name): their keys.
    let mut config_maps: HashMap<(&str, &str), BTreeSet<&str>> = HashMap::new();
    let mut secrets: HashMap<(&str, &str), BTreeSet<&str>> = HashMap::new();
    // Pod-making objects per namespace.
    let mut pod_makers: HashMap<&str, Vec<&DesiredObject>> = HashMap::new();
    for o in objects.values() {
        let ns = o.key.namespace.as_deref().unwrap_or_default();
        match &o.object {
            Object::ConfigMap(c) => {
                let keys = c.data.iter().flatten().map(|(k, _)| k.as_str());
                let bin = c.binary_data.iter().flatten().map(|(k, _)| k.as_str());
                config_maps.insert((ns, o.key.name.as_str()), keys.chain(bin).collect());
            }
            Object::Secret(s) => {
                let keys = s.data.iter().flatten().map(|(k, _)| k.as_str());
                let string = s.string_data.iter().flatten().map(|(k, _)| k.as_str());
                secrets.insert((ns, o.key.name.as_str()), keys.chain(string).collect());
            }
            _ => {}
        }
        if o.object.pod_spec().is_some() {
            pod_makers.entry(ns).or_default().push(o);
        }
    }

    for o in objects.values() {
        if let Some(ns) = o.key.namespace.as_deref()
            && !declared.contains(ns)
            && !BUILTIN_NAMESPACES.contains(&ns)
        {
            errors.push(o.error_at(
                &path!["metadata", "namespace"],
                false,
                format!("namespace `{ns}` is not declared in this commit (add a Namespace manifest for it)"),
            ));
        }
        if let Some(ps) = o.object.pod_spec() {
            let base: Vec<PathSeg> = ps.path.iter().map(|s| PathSeg::from(*s)).collect();
            let ns = o.key.namespace.as_deref().unwrap_or_default();
            let refs = Refs {
                ns,
                config_maps: &config_maps,
                secrets: &secrets,
            };
            refs.check(o, &base, ps.spec, &mut errors);
        }
        if let Object::Service(s) = &o.object {
            service_ports(o, s, &pod_makers, &mut errors);
        }
    }
    errors
}

struct Refs<'a> {
    ns: &'a str,
    config_maps: &'a HashMap<(&'a str, &'a str), BTreeSet<&'a str>>,
    secrets: &'a HashMap<(&'a str, &'a str), BTreeSet<&'a str>>,
}

impl Refs<'_> {
    #[allow(clippy::too_many_arguments)]
    fn one(
        &self,
        o: &DesiredObject,
        path: Vec<PathSeg>,
        secret: bool,
        name: Option<&str>,
        key: Option<&str>,
        optional: Option<bool>,
        errors: &mut Vec<ValidationError>,
    ) {
        if optional == Some(true) {
            return;
        }
        let what = if secret { "Secret" } else { "ConfigMap" };
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            errors.push(o.error_at(&path, false, format!("the {what} reference needs a name")));
            return;
        };
        let table = if secret {
            self.secrets
        } else {
            self.config_maps
        };
        match table.get(&(self.ns, name)) {
            None => errors.push(o.error_at(
                &path,
                false,
                format!(
                    "{what} `{name}` is not in this commit (namespace {}); add it or mark the reference `optional: true`",
                    self.ns
                ),
            )),
            Some(keys) => {
                if let Some(k) = key
                    && !keys.contains(k)
                {
                    errors.push(o.error_at(
                        &path,
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
        base: &[PathSeg],
        spec: &PodSpec,
        errors: &mut Vec<ValidationError>,
    ) {
        for (i, v) in spec.volumes.iter().flatten().enumerate() {
            let vp = join(base, path!["volumes", i]);
            if let Some(c) = &v.config_map {
                for (j, item) in c.items.iter().flatten().enumerate() {
                    let p = join(&vp, path!["configMap", "items", j, "key"]);
                    self.one(
                        o,
                        p,
                        false,
                        Some(c.name.as_str()),
                        Some(&item.key),
                        c.optional,
                        errors,
                    );
                }
                self.one(
                    o,
                    join(&vp, path!["configMap", "name"]),
                    false,
                    Some(c.name.as_str()),
                    None,
                    c.optional,
                    errors,
                );
            }
            if let Some(s) = &v.secret {
                for (j, item) in s.items.iter().flatten().enumerate() {
                    let p = join(&vp, path!["secret", "items", j, "key"]);
                    self.one(
                        o,
                        p,
                        true,
                        s.secret_name.as_deref(),
                        Some(&item.key),
                        s.optional,
                        errors,
                    );
                }
                self.one(
                    o,
                    join(&vp, path!["secret", "secretName"]),
                    true,
                    s.secret_name.as_deref(),
                    None,
                    s.optional,
                    errors,
                );
            }
            if let Some(pr) = &v.projected {
                for (j, src) in pr.sources.iter().flatten().enumerate() {
                    let sp = join(&vp, path!["projected", "sources", j]);
                    if let Some(c) = &src.config_map {
                        self.one(
                            o,
                            join(&sp, path!["configMap", "name"]),
                            false,
                            Some(c.name.as_str()),
                            None,
                            c.optional,
                            errors,
                        );
                    }
                    if let Some(s) = &src.secret {
                        self.one(
                            o,
                            join(&sp, path!["secret", "name"]),
                            true,
                            Some(s.name.as_str()),
                            None,
                            s.optional,
                            errors,
                        );
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
                let cp = join(base, path![field, i]);
                for (j, e) in c.env.iter().flatten().enumerate() {
                    let Some(vf) = &e.value_from else { continue };
                    let ep = join(&cp, path!["env", j, "valueFrom"]);
                    if let Some(r) = &vf.config_map_key_ref {
                        let p = join(&ep, path!["configMapKeyRef", "name"]);
                        self.one(
                            o,
                            p,
                            false,
                            Some(r.name.as_str()),
                            Some(&r.key),
                            r.optional,
                            errors,
                        );
                    }
                    if let Some(r) = &vf.secret_key_ref {
                        let p = join(&ep, path!["secretKeyRef", "name"]);
                        self.one(
                            o,
                            p,
                            true,
                            Some(r.name.as_str()),
                            Some(&r.key),
                            r.optional,
                            errors,
                        );
                    }
                }
                for (j, e) in c.env_from.iter().flatten().enumerate() {
                    let ep = join(&cp, path!["envFrom", j]);
                    if let Some(r) = &e.config_map_ref {
                        let p = join(&ep, path!["configMapRef", "name"]);
                        self.one(o, p, false, Some(r.name.as_str()), None, r.optional, errors);
                    }
                    if let Some(r) = &e.secret_ref {
                        let p = join(&ep, path!["secretRef", "name"]);
                        self.one(o, p, true, Some(r.name.as_str()), None, r.optional, errors);
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
