//! The objects of a desired state: their keys, provenance and typed contents.

use std::fmt;
use std::sync::Arc;

use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Pod, PodTemplateSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Serialize;

use crate::yaml::{Node, PathSeg, Pos};

/// Identifies an object the way Kubernetes does: API group, kind, namespace, name.
///
/// Ordered by group, kind, namespace, name (the order of `Snapshot::objects`).
/// `group` is empty for the core group (`v1`). `namespace` is `None` for cluster-scoped
/// kinds and the namespace (defaulted to `default`) otherwise. The strings are shared
/// (`Arc<str>`): cloning a key allocates nothing; build one with `"web".into()`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    /// API group: "" (core), "apps", "batch", "rbac.authorization.k8s.io".
    pub group: Arc<str>,
    /// Kind, e.g. "Deployment".
    pub kind: Arc<str>,
    /// Namespace, `None` for cluster-scoped kinds.
    pub namespace: Option<Arc<str>>,
    /// metadata.name.
    pub name: Arc<str>,
}

impl fmt::Display for ObjectKey {
    /// `Deployment default/web`, `Namespace shop`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Where an object comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// Path of the file in the repository (from the repository root, `/`-separated).
    pub path: String,
    /// Index of the document in the file, 0-based, counting non-empty documents only.
    /// Items of a `List` share their document's index.
    pub document_index: usize,
    /// Line where the object starts (1-based).
    pub line: u32,
    /// The commit that last changed the file (first-parent history).
    #[serde(serialize_with = "crate::object::ser_oid")]
    pub last_commit: gix::ObjectId,
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path, self.line)
    }
}

pub(crate) fn ser_oid<S: serde::Serializer>(id: &gix::ObjectId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

macro_rules! kinds {
    ($($variant:ident: $ty:ty, namespaced = $ns:expr;)*) => {
        /// A desired object, typed with k8s-openapi.
        ///
        /// kommit reads these kinds; any other apiVersion/kind is a validation error.
        #[derive(Debug, Clone, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        pub enum Object {
            $(
                #[doc = concat!("`", stringify!($variant), "`")]
                $variant($ty),
            )*
        }

        /// Every kind kommit reads: (apiVersion, kind, namespaced).
        pub const KINDS: &[(&str, &str, bool)] = &[
            $((<$ty as Resource>::API_VERSION, <$ty as Resource>::KIND, $ns),)*
        ];

        impl Object {
            /// metadata of the object.
            pub fn metadata(&self) -> &ObjectMeta {
                match self { $(Object::$variant(o) => &o.metadata,)* }
            }

            /// `apiVersion`, e.g. `apps/v1`.
            pub fn api_version(&self) -> &'static str {
                match self { $(Object::$variant(_) => <$ty as Resource>::API_VERSION,)* }
            }

            /// API group, "" for core.
            pub fn group(&self) -> &'static str {
                match self { $(Object::$variant(_) => <$ty as Resource>::GROUP,)* }
            }

            /// Kind, e.g. `Deployment`.
            pub fn kind(&self) -> &'static str {
                match self { $(Object::$variant(_) => <$ty as Resource>::KIND,)* }
            }

            /// Whether the kind lives in a namespace.
            pub fn is_namespaced(&self) -> bool {
                match self { $(Object::$variant(_) => $ns,)* }
            }

            /// The object as JSON (with apiVersion and kind), as the API would serve it.
            pub fn to_json(&self) -> serde_json::Value {
                let r = match self { $(Object::$variant(o) => serde_json::to_value(o),)* };
                r.unwrap_or(serde_json::Value::Null)
            }

            pub(crate) fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self { $(Object::$variant(o) => &mut o.metadata,)* }
            }

            /// Deserialises a JSON value of the given apiVersion/kind. `None`: unknown kind.
            pub(crate) fn from_json(
                api_version: &str,
                kind: &str,
                value: &serde_json::Value,
            ) -> Option<Result<Object, serde_path_to_error::Error<serde_json::Error>>> {
                $(
                    if api_version == <$ty as Resource>::API_VERSION && kind == <$ty as Resource>::KIND {
                        return Some(serde_path_to_error::deserialize::<_, $ty>(value).map(Object::$variant));
                    }
                )*
                None
            }
        }
    };
}

kinds! {
    Namespace: Namespace, namespaced = false;
    Pod: Pod, namespaced = true;
    Service: Service, namespaced = true;
    ConfigMap: ConfigMap, namespaced = true;
    Secret: Secret, namespaced = true;
    ServiceAccount: ServiceAccount, namespaced = true;
    Deployment: Deployment, namespaced = true;
    ReplicaSet: ReplicaSet, namespaced = true;
    DaemonSet: DaemonSet, namespaced = true;
    StatefulSet: StatefulSet, namespaced = true;
    Job: Job, namespaced = true;
    CronJob: CronJob, namespaced = true;
    Role: Role, namespaced = true;
    RoleBinding: RoleBinding, namespaced = true;
    ClusterRole: ClusterRole, namespaced = false;
    ClusterRoleBinding: ClusterRoleBinding, namespaced = false;
}

/// A pod template inside a workload, with the field path that leads to it.
pub struct TemplateRef<'a> {
    /// The template.
    pub template: &'a PodTemplateSpec,
    /// Field path of the template, e.g. `spec.template` or `spec.jobTemplate.spec.template`.
    pub path: &'static [&'static str],
    /// The workload's selector, if it has one.
    pub selector: Option<&'a LabelSelector>,
}

impl Object {
    /// The pod template of a workload (Deployment, ReplicaSet, DaemonSet, StatefulSet,
    /// Job, CronJob); `None` for other kinds. A bare Pod has no template: see [`Object::pod_spec`].
    pub fn template(&self) -> Option<TemplateRef<'_>> {
        const SPEC_TEMPLATE: &[&str] = &["spec", "template"];
        match self {
            Object::Deployment(o) => o.spec.as_ref().map(|s| TemplateRef {
                template: &s.template,
                path: SPEC_TEMPLATE,
                selector: Some(&s.selector),
            }),
            Object::ReplicaSet(o) => o.spec.as_ref().and_then(|s| {
                s.template.as_ref().map(|t| TemplateRef {
                    template: t,
                    path: SPEC_TEMPLATE,
                    selector: Some(&s.selector),
                })
            }),
            Object::DaemonSet(o) => o.spec.as_ref().map(|s| TemplateRef {
                template: &s.template,
                path: SPEC_TEMPLATE,
                selector: Some(&s.selector),
            }),
            Object::StatefulSet(o) => o.spec.as_ref().map(|s| TemplateRef {
                template: &s.template,
                path: SPEC_TEMPLATE,
                selector: Some(&s.selector),
            }),
            Object::Job(o) => o.spec.as_ref().map(|s| TemplateRef {
                template: &s.template,
                path: SPEC_TEMPLATE,
                selector: s.selector.as_ref(),
            }),
            Object::CronJob(o) => o.spec.as_ref().and_then(|s| {
                s.job_template.spec.as_ref().map(|js| TemplateRef {
                    template: &js.template,
                    path: &["spec", "jobTemplate", "spec", "template"],
                    selector: js.selector.as_ref(),
                })
            }),
            _ => None,
        }
    }

    /// The pod spec a workload runs (its template's) or a bare Pod's spec, with the path
    /// of the spec and the labels its pods get.
    pub fn pod_spec(&self) -> Option<PodSpecRef<'_>> {
        if let Object::Pod(p) = self {
            return p.spec.as_ref().map(|spec| PodSpecRef {
                spec,
                path: &["spec"],
                labels: p.metadata.labels.as_ref(),
            });
        }
        let t = self.template()?;
        let spec = t.template.spec.as_ref()?;
        let path: &'static [&'static str] = if t.path.len() == 2 {
            &["spec", "template", "spec"]
        } else {
            &["spec", "jobTemplate", "spec", "template", "spec"]
        };
        Some(PodSpecRef {
            spec,
            path,
            labels: t.template.metadata.as_ref().and_then(|m| m.labels.as_ref()),
        })
    }
}

/// A pod spec inside an object.
pub struct PodSpecRef<'a> {
    /// The spec.
    pub spec: &'a k8s_openapi::api::core::v1::PodSpec,
    /// Its field path (`spec` for a Pod, `spec.template.spec` for a Deployment, ...).
    pub path: &'static [&'static str],
    /// The labels of the pods it makes.
    pub labels: Option<&'a std::collections::BTreeMap<String, String>>,
}

/// One object of a snapshot: its key, its typed contents and where it comes from.
#[derive(Debug, Clone)]
pub struct DesiredObject {
    /// The object's key.
    pub key: ObjectKey,
    /// The typed object. Its namespace is filled in (`default` when the manifest has none).
    pub object: Object,
    /// File, document, line, last commit.
    pub provenance: Provenance,
    /// The parsed YAML of the object (for positions of fields).
    pub(crate) node: Node,
    /// Path of the object inside its document (`items[3]` for an item of a List; empty
    /// otherwise), prepended to field paths in messages.
    pub(crate) prefix: Vec<PathSeg>,
}

impl PartialEq for DesiredObject {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.object == other.object && self.provenance == other.provenance
    }
}

impl DesiredObject {
    /// Line and column of a field, given as a path of keys and indexes from the object's
    /// root (the deepest existing part of the path is used; the object start otherwise).
    pub fn position_of(&self, path: &[PathSeg]) -> Pos {
        self.node.position_of(path, false)
    }

    /// A validation error about a field of this object.
    pub(crate) fn error_at(
        &self,
        path: &[PathSeg],
        prefer_key: bool,
        message: String,
    ) -> crate::ValidationError {
        let pos = self.node.position_of(path, prefer_key);
        let mut full = self.prefix.clone();
        full.extend_from_slice(path);
        crate::ValidationError {
            path: self.provenance.path.clone(),
            line: pos.line,
            column: pos.column,
            field: crate::yaml::render_path(&full),
            message,
        }
    }
}
