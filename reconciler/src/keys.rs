//! Kubernetes' etcd key layout: `/registry/<resource>/<namespace>/<name>` for namespaced
//! objects and `/registry/<resource>/<name>` for cluster-scoped ones.
//!
//! The table maps kinds to the resource segment Kubernetes' API server uses in etcd.
//! That segment is usually the plural (`pods`, `replicasets`), with the historical
//! exceptions Kubernetes keeps: Nodes live under `minions`, Services under
//! `services/specs` and Endpoints under `services/endpoints`. The REST plural (for URLs
//! such as `/api/v1/namespaces/default/pods`) is kept beside it.

use std::fmt;

/// One kind of object the cluster stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResourceInfo {
    /// `Pod`, `ReplicaSet`, ...
    pub kind: &'static str,
    /// API group, empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// REST plural (`pods`, `nodes`).
    pub plural: &'static str,
    /// The segment after `/registry/` in etcd keys (`pods`, `minions`, `services/specs`).
    pub etcd_resource: &'static str,
    /// Whether objects of this kind live in a namespace.
    pub namespaced: bool,
}

impl ResourceInfo {
    /// `v1` or `apps/v1`, as written in `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The key prefix of every object of this kind (ends with `/`).
    pub fn prefix(&self) -> String {
        format!("/registry/{}/", self.etcd_resource)
    }

    /// The key prefix of every object of this kind in one namespace (ends with `/`).
    pub fn namespace_prefix(&self, namespace: &str) -> String {
        format!("/registry/{}/{}/", self.etcd_resource, namespace)
    }
}

const fn r(
    kind: &'static str,
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    etcd_resource: &'static str,
    namespaced: bool,
) -> ResourceInfo {
    ResourceInfo {
        kind,
        group,
        version,
        plural,
        etcd_resource,
        namespaced,
    }
}

/// Every kind kommit knows, with its key layout.
pub const RESOURCES: &[ResourceInfo] = &[
    r("Pod", "", "v1", "pods", "pods", true),
    r("Node", "", "v1", "nodes", "minions", false),
    r("Namespace", "", "v1", "namespaces", "namespaces", false),
    r("Event", "", "v1", "events", "events", true),
    r("Service", "", "v1", "services", "services/specs", true),
    r(
        "Endpoints",
        "",
        "v1",
        "endpoints",
        "services/endpoints",
        true,
    ),
    r("ConfigMap", "", "v1", "configmaps", "configmaps", true),
    r("Secret", "", "v1", "secrets", "secrets", true),
    r(
        "ServiceAccount",
        "",
        "v1",
        "serviceaccounts",
        "serviceaccounts",
        true,
    ),
    r(
        "PersistentVolumeClaim",
        "",
        "v1",
        "persistentvolumeclaims",
        "persistentvolumeclaims",
        true,
    ),
    r(
        "Deployment",
        "apps",
        "v1",
        "deployments",
        "deployments",
        true,
    ),
    r(
        "ReplicaSet",
        "apps",
        "v1",
        "replicasets",
        "replicasets",
        true,
    ),
    r("DaemonSet", "apps", "v1", "daemonsets", "daemonsets", true),
    r(
        "StatefulSet",
        "apps",
        "v1",
        "statefulsets",
        "statefulsets",
        true,
    ),
    r("Job", "batch", "v1", "jobs", "jobs", true),
    r("CronJob", "batch", "v1", "cronjobs", "cronjobs", true),
    r(
        "Lease",
        "coordination.k8s.io",
        "v1",
        "leases",
        "leases",
        true,
    ),
    r(
        "EndpointSlice",
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "endpointslices",
        true,
    ),
    r(
        "Role",
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "roles",
        true,
    ),
    r(
        "RoleBinding",
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebindings",
        true,
    ),
    r(
        "ClusterRole",
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterroles",
        false,
    ),
    r(
        "ClusterRoleBinding",
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebindings",
        false,
    ),
    // kommit's own: the rollout record of each commit (see `rollout`).
    r("Commit", "kommit.dev", "v1", "commits", "commits", false),
];

/// The resource of a kind (`"Pod"` → pods).
pub fn by_kind(kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.kind == kind)
}

/// The resource of a REST plural (`"nodes"` → Node).
pub fn by_plural(plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.plural == plural)
}

/// The resource of an etcd key segment (`"minions"` → Node).
pub fn by_etcd_resource(segment: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.etcd_resource == segment)
}

/// A key that cannot be read as `/registry/<resource>/[<namespace>/]<name>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key does not start with `/registry/`.
    #[error("key {0:?} does not start with /registry/")]
    NotRegistry(String),
    /// The resource segment is not one kommit knows.
    #[error("key {0:?} names no known resource")]
    UnknownResource(String),
    /// Wrong number of segments for the resource's scope.
    #[error("key {key:?} must be /registry/{resource}/{shape}")]
    Shape {
        /// The key.
        key: String,
        /// The resource segment.
        resource: String,
        /// What was expected.
        shape: &'static str,
    },
    /// An object of a namespaced kind without a namespace (or the reverse).
    #[error("{kind} {name:?}: {problem}")]
    Scope {
        /// The kind.
        kind: String,
        /// The object's name.
        name: String,
        /// What is wrong.
        problem: &'static str,
    },
}

/// The identity of one stored object: its resource, namespace (for namespaced kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The resource (by kind; see [`ResourceInfo`]).
    pub kind: &'static str,
    /// Namespace; `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
}

impl ObjectKey {
    /// A key for `kind` `namespace/name`; checks the scope matches the kind.
    pub fn new(kind: &str, namespace: Option<&str>, name: &str) -> Result<Self, KeyError> {
        let info = by_kind(kind).ok_or_else(|| KeyError::UnknownResource(kind.to_string()))?;
        let namespace = match (info.namespaced, namespace) {
            (true, Some(ns)) if !ns.is_empty() => Some(ns.to_string()),
            (true, _) => {
                return Err(KeyError::Scope {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    problem: "is namespaced but has no namespace",
                });
            }
            (false, None) => None,
            (false, Some("")) => None,
            (false, Some(_)) => {
                return Err(KeyError::Scope {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    problem: "is cluster-scoped but has a namespace",
                });
            }
        };
        Ok(ObjectKey {
            kind: info.kind,
            namespace,
            name: name.to_string(),
        })
    }

    /// The resource description of this key's kind.
    pub fn info(&self) -> &'static ResourceInfo {
        // `kind` is only ever set from the RESOURCES table.
        by_kind(self.kind).expect("ObjectKey kinds come from the RESOURCES table")
    }

    /// The etcd key: `/registry/<resource>/<namespace>/<name>`.
    pub fn to_key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!(
                "/registry/{}/{}/{}",
                self.info().etcd_resource,
                ns,
                self.name
            ),
            None => format!("/registry/{}/{}", self.info().etcd_resource, self.name),
        }
    }

    /// Reads an etcd key back.
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        let rest = key
            .strip_prefix("/registry/")
            .ok_or_else(|| KeyError::NotRegistry(key.to_string()))?;
        // Longest matching resource segment first (services/specs before services).
        let mut candidates: Vec<&ResourceInfo> = RESOURCES
            .iter()
            .filter(|r| {
                rest.starts_with(r.etcd_resource) && rest[r.etcd_resource.len()..].starts_with('/')
            })
            .collect();
        candidates.sort_by_key(|r| std::cmp::Reverse(r.etcd_resource.len()));
        let info = candidates
            .first()
            .ok_or_else(|| KeyError::UnknownResource(key.to_string()))?;
        let tail = &rest[info.etcd_resource.len() + 1..];
        let parts: Vec<&str> = tail.split('/').collect();
        let shape_err = |shape| KeyError::Shape {
            key: key.to_string(),
            resource: info.etcd_resource.to_string(),
            shape,
        };
        match (info.namespaced, parts.as_slice()) {
            (true, [ns, name]) if !ns.is_empty() && !name.is_empty() => Ok(ObjectKey {
                kind: info.kind,
                namespace: Some(ns.to_string()),
                name: name.to_string(),
            }),
            (true, _) => Err(shape_err("<namespace>/<name>")),
            (false, [name]) if !name.is_empty() => Ok(ObjectKey {
                kind: info.kind,
                namespace: None,
                name: name.to_string(),
            }),
            (false, _) => Err(shape_err("<name>")),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_kubernetes_layout() {
        let pod = ObjectKey::new("Pod", Some("default"), "web-abcde").unwrap();
        assert_eq!(pod.to_key(), "/registry/pods/default/web-abcde");
        let node = ObjectKey::new("Node", None, "n1").unwrap();
        assert_eq!(node.to_key(), "/registry/minions/n1");
        let svc = ObjectKey::new("Service", Some("default"), "web").unwrap();
        assert_eq!(svc.to_key(), "/registry/services/specs/default/web");
        let ep = ObjectKey::new("Endpoints", Some("default"), "web").unwrap();
        assert_eq!(ep.to_key(), "/registry/services/endpoints/default/web");
        let lease = ObjectKey::new("Lease", Some("kube-node-lease"), "n1").unwrap();
        assert_eq!(lease.to_key(), "/registry/leases/kube-node-lease/n1");
        for k in [pod, node, svc, ep, lease] {
            assert_eq!(ObjectKey::parse(&k.to_key()).unwrap(), k);
        }
    }

    #[test]
    fn bad_keys_are_errors() {
        assert!(matches!(
            ObjectKey::parse("/foo/pods/a/b"),
            Err(KeyError::NotRegistry(_))
        ));
        assert!(matches!(
            ObjectKey::parse("/registry/widgets/a/b"),
            Err(KeyError::UnknownResource(_))
        ));
        assert!(matches!(
            ObjectKey::parse("/registry/pods/onlyname"),
            Err(KeyError::Shape { .. })
        ));
        assert!(matches!(
            ObjectKey::parse("/registry/minions/a/b"),
            Err(KeyError::Shape { .. })
        ));
        assert!(ObjectKey::new("Pod", None, "x").is_err());
        assert!(ObjectKey::new("Node", Some("default"), "x").is_err());
    }

    #[test]
    fn kinds_and_plurals_round_trip() {
        for r in RESOURCES {
            assert_eq!(by_kind(r.kind), Some(r));
            assert_eq!(by_plural(r.plural), Some(r));
            assert_eq!(by_etcd_resource(r.etcd_resource), Some(r));
        }
        assert_eq!(by_kind("Deployment").unwrap().api_version(), "apps/v1");
        assert_eq!(by_kind("Pod").unwrap().api_version(), "v1");
    }
}
