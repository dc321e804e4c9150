//! The resources the API serves and the discovery documents that list them:
//! `/api`, `/apis`, `/api/v1`, `/apis/GROUP/VERSION` in their plain form and, when the
//! client asks for `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`,
//! the aggregated form. Every resource lists only the verbs kommit serves.

use kommit_reconciler::keys::{RESOURCES, ResourceInfo};
use serde_json::{Value, json};

/// The verbs every resource serves.
pub const VERBS: &[&str] = &["get", "list", "watch"];

/// Content type of aggregated discovery answers.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// One served resource: the key layout plus what discovery says about it.
#[derive(Clone, Copy, Debug)]
pub struct Resource {
    /// Key layout and identity (from the reconciler's table).
    pub info: &'static ResourceInfo,
    /// `kubectl get po`.
    pub short_names: &'static [&'static str],
    /// `kubectl get all`.
    pub categories: &'static [&'static str],
    /// Subresources served with `get` (`log`, `status`).
    pub subresources: &'static [&'static str],
}

impl Resource {
    /// Lower-case kind (`pod`).
    pub fn singular(&self) -> String {
        self.info.kind.to_ascii_lowercase()
    }
}

fn extras(
    plural: &str,
) -> (
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
) {
    const ALL: &[&str] = &["all"];
    const NONE: &[&str] = &[];
    const STATUS: &[&str] = &["status"];
    match plural {
        "pods" => (&["po"], ALL, &["log", "status"]),
        "nodes" => (&["no"], NONE, STATUS),
        "namespaces" => (&["ns"], NONE, STATUS),
        "events" => (&["ev"], NONE, NONE),
        "services" => (&["svc"], ALL, STATUS),
        "endpoints" => (&["ep"], NONE, NONE),
        "configmaps" => (&["cm"], NONE, NONE),
        "serviceaccounts" => (&["sa"], NONE, NONE),
        "persistentvolumeclaims" => (&["pvc"], NONE, STATUS),
        "deployments" => (&["deploy"], ALL, STATUS),
        "replicasets" => (&["rs"], ALL, STATUS),
        "daemonsets" => (&["ds"], ALL, STATUS),
        "statefulsets" => (&["sts"], ALL, STATUS),
        "jobs" => (NONE, ALL, STATUS),
        "cronjobs" => (&["cj"], ALL, STATUS),
        "commits" => (&["kc"], NONE, NONE),
        _ => (NONE, NONE, NONE),
    }
}

/// Every resource the API serves, in the reconciler's order.
pub fn resources() -> &'static [Resource] {
    static ALL: std::sync::OnceLock<Vec<Resource>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        RESOURCES
            .iter()
            .map(|info| {
                let (short_names, categories, subresources) = extras(info.plural);
                Resource {
                    info,
                    short_names,
                    categories,
                    subresources,
                }
            })
            .collect()
    })
}

/// The resource served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    resources()
        .iter()
        .find(|r| r.info.group == group && r.info.version == version && r.info.plural == plural)
}

/// The API groups (other than core) with their versions, in first-seen order.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in resources() {
        if !r.info.group.is_empty() && !out.iter().any(|(g, _)| *g == r.info.group) {
            out.push((r.info.group, r.info.version));
        }
    }
    out
}

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": concat!("v1.33.0-kommit.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "none (kommit is written in Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// `/api` (plain): APIVersions.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    })
}

/// `/apis` (plain): APIGroupList.
pub fn group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/GROUP` (plain): APIGroup.
pub fn group(group: &str) -> Option<Value> {
    let (g, v) = groups().into_iter().find(|(g, _)| *g == group)?;
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    Some(json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": g,
        "versions": [gv.clone()], "preferredVersion": gv,
    }))
}

/// `/api/v1` or `/apis/GROUP/VERSION` (plain): APIResourceList.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut list = Vec::new();
    for r in resources()
        .iter()
        .filter(|r| r.info.group == group && r.info.version == version)
    {
        let mut entry = json!({
            "name": r.info.plural,
            "singularName": r.singular(),
            "namespaced": r.info.namespaced,
            "kind": r.info.kind,
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        list.push(entry);
        for sub in r.subresources {
            list.push(json!({
                "name": format!("{}/{}", r.info.plural, sub),
                "singularName": "",
                "namespaced": r.info.namespaced,
                "kind": r.info.kind,
                "verbs": ["get"],
            }));
        }
    }
    if list.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": list,
    }))
}

fn aggregated_version(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = resources()
        .iter()
        .filter(|r| r.info.group == group && r.info.version == version)
        .map(|r| {
            let kind = json!({"group": group, "version": version, "kind": r.info.kind});
            let mut entry = json!({
                "resource": r.info.plural,
                "responseKind": kind,
                "scope": if r.info.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular(),
                "verbs": VERBS,
            });
            if !r.short_names.is_empty() {
                entry["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                entry["categories"] = json!(r.categories);
            }
            if !r.subresources.is_empty() {
                entry["subresources"] = r
                    .subresources
                    .iter()
                    .map(|s| {
                        json!({
                            "subresource": s,
                            "responseKind": if *s == "log" {
                                json!({"group": "", "version": "", "kind": "string"})
                            } else {
                                kind.clone()
                            },
                            "verbs": ["get"],
                        })
                    })
                    .collect();
            }
            entry
        })
        .collect();
    json!({"version": version, "resources": resources, "freshness": "Current"})
}

fn aggregated_list(items: Vec<Value>) -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// `/api` in aggregated form.
pub fn aggregated_core() -> Value {
    aggregated_list(vec![json!({
        "metadata": {"creationTimestamp": null},
        "versions": [aggregated_version("", "v1")],
    })])
}

/// `/apis` in aggregated form.
pub fn aggregated_groups() -> Value {
    aggregated_list(
        groups()
            .into_iter()
            .map(|(g, v)| {
                json!({
                    "metadata": {"name": g, "creationTimestamp": null},
                    "versions": [aggregated_version(g, v)],
                })
            })
            .collect(),
    )
}

/// Whether an Accept header asks for aggregated discovery (v2).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        params.first() == Some(&"application/json")
            && params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}
