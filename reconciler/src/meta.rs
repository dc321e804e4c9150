//! Object metadata helpers: owner references, label selectors, well-known annotations.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

/// Annotation naming the Git revision (commit) that last made or changed an object.
pub const REVISION_ANNOTATION: &str = "kommit.dev/revision";
/// Annotation marking an observed object as the copy of an object from Git
/// (a bare Pod, a ReplicaSet written in Git). Its value is the desired spec's hash.
pub const FROM_GIT_ANNOTATION: &str = "kommit.dev/from-git";
/// Kubernetes' Deployment revision annotation on Deployments and their ReplicaSets.
pub const DEPLOYMENT_REVISION: &str = "deployment.kubernetes.io/revision";
/// Kubernetes' annotation recording the Deployment's replicas when a ReplicaSet was scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Kubernetes' annotation recording replicas + maxSurge when a ReplicaSet was scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Label added to a ReplicaSet's selector and template by its Deployment.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The name of an object (empty if unset).
pub fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

/// The namespace of an object (`default` if unset, as the API server defaults it).
pub fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// Whether `meta` is controlled by an object of `kind` named `name` with `uid`.
pub fn is_controlled_by(meta: &ObjectMeta, kind: &str, name: &str, uid: &str) -> bool {
    controller_of(meta).is_some_and(|o| o.kind == kind && o.name == name && o.uid == uid)
}

/// A controller owner reference to an object.
pub fn controller_ref(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The UID of a desired object: its own `metadata.uid` when Git state carries one,
/// otherwise a stable name-based (v5) UUID of kind, namespace and name, so that the
/// same object in two revisions keeps its identity and owner references stay valid.
pub fn desired_uid(kind: &str, meta: &ObjectMeta) -> String {
    if let Some(uid) = meta.uid.as_deref().filter(|u| !u.is_empty()) {
        return uid.to_string();
    }
    let ident = format!(
        "kommit/{kind}/{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        name(meta)
    );
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, ident.as_bytes()).to_string()
}

/// An annotation's value.
pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Sets an annotation.
pub fn set_annotation(meta: &mut ObjectMeta, key: &str, value: impl Into<String>) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_string(), value.into());
}

/// A label selector that cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector: {0}")]
pub struct SelectorError(pub String);

/// Whether `labels` match `selector` (matchLabels and matchExpressions). An empty
/// selector matches everything, as in Kubernetes' `LabelSelectorAsSelector`.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<bool, SelectorError> {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    if let Some(ml) = &selector.match_labels {
        for (k, v) in ml {
            if labels.get(k) != Some(v) {
                return Ok(false);
            }
        }
    }
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or(&[]);
        let got = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => got.is_some_and(|g| values.contains(g)),
            "NotIn" => got.is_none_or(|g| !values.contains(g)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            other => return Err(SelectorError(format!("unknown operator {other:?}"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether a selector is empty (would match everything).
pub fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        assert!(selector_matches(&sel, Some(&labels(&[("app", "web")]))).unwrap());
        assert!(selector_matches(&sel, Some(&labels(&[("app", "web"), ("tier", "fe")]))).unwrap());
        assert!(!selector_matches(&sel, Some(&labels(&[("app", "web"), ("tier", "db")]))).unwrap());
        assert!(!selector_matches(&sel, None).unwrap());
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Near".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(selector_matches(&bad, None).is_err());
    }

    #[test]
    fn desired_uid_is_stable_per_identity() {
        let m = |ns: &str, n: &str| ObjectMeta {
            name: Some(n.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        };
        assert_eq!(
            desired_uid("Deployment", &m("a", "web")),
            desired_uid("Deployment", &m("a", "web"))
        );
        assert_ne!(
            desired_uid("Deployment", &m("a", "web")),
            desired_uid("Deployment", &m("b", "web"))
        );
        let mut with = m("a", "web");
        with.uid = Some("given".into());
        assert_eq!(desired_uid("Deployment", &with), "given");
    }
}
