//! Objects from Git that become observed objects as they are: bare Pods, ReplicaSets
//! written directly in Git, and Namespaces.
//!
//! Each copy carries the annotation [`FROM_GIT_ANNOTATION`] whose value is a hash of the
//! Git object's spec and metadata, so a later revision that changes it is noticed:
//! a ReplicaSet is updated in place (its controller then rolls pods as Kubernetes
//! would: it does not, a ReplicaSet never replaces running pods), a Pod — whose spec
//! Kubernetes does not let change — is deleted and created again with a new UID (the
//! node agent then replaces its containers). A bare Pod that disappears (deleted on the
//! node, evicted from a lost node) is created again, since Git still declares it.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, NamespaceStatus, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::action::{Action, Reconciled};
use crate::context::Context;
use crate::hash::{fnv1a32, safe_encode};
use crate::meta::{self, FROM_GIT_ANNOTATION, REVISION_ANNOTATION};
use crate::object::{meta_key, mod_revision};
use crate::podutil;
use crate::state::{Desired, Observed};

/// Namespaces that always exist, as in every Kubernetes cluster.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Hash of what Git says about an object (labels, annotations, spec).
fn git_hash<S: Serialize>(meta: &ObjectMeta, spec: &S) -> String {
    let labels = serde_json::to_vec(&meta.labels).expect("labels serialise");
    let annotations = serde_json::to_vec(&meta.annotations).expect("annotations serialise");
    let spec = serde_json::to_vec(spec).expect("k8s-openapi specs serialise");
    safe_encode(&fnv1a32(&[&labels, b"\0", &annotations, b"\0", &spec]).to_string())
}

fn copied_meta(
    ctx: &Context,
    src: &ObjectMeta,
    hash: &str,
    revision: Option<&str>,
    namespaced: bool,
) -> ObjectMeta {
    let mut m = ObjectMeta {
        name: src.name.clone(),
        namespace: namespaced.then(|| meta::namespace(src).to_string()),
        labels: src.labels.clone(),
        annotations: src.annotations.clone(),
        uid: Some(ctx.new_uid()),
        generation: Some(1),
        creation_timestamp: Some(ctx.now_time()),
        ..Default::default()
    };
    meta::set_annotation(&mut m, FROM_GIT_ANNOTATION, hash);
    if let Some(r) = revision {
        meta::set_annotation(&mut m, REVISION_ANNOTATION, r);
    }
    m
}

/// Whether an observed object is the copy of a Git object.
pub fn is_from_git(m: &ObjectMeta) -> bool {
    meta::annotation(m, FROM_GIT_ANNOTATION).is_some()
}

/// Creates/replaces observed Pods for the bare Pods of `desired`.
pub fn reconcile_pods(ctx: &Context, desired: &Desired, observed: &Observed) -> Reconciled {
    let mut out = Reconciled::none();
    for want in &desired.pods {
        let hash = git_hash(&want.metadata, &want.spec);
        let (ns, name) = (meta::namespace(&want.metadata), meta::name(&want.metadata));
        let have = observed
            .pods
            .iter()
            .find(|p| meta::namespace(&p.metadata) == ns && meta::name(&p.metadata) == name);
        let create = || {
            Action::Create(
                Pod {
                    metadata: copied_meta(
                        ctx,
                        &want.metadata,
                        &hash,
                        desired.revision.as_deref(),
                        true,
                    ),
                    spec: want.spec.clone(),
                    status: Some(PodStatus {
                        phase: Some("Pending".into()),
                        ..Default::default()
                    }),
                }
                .into(),
            )
        };
        match have {
            None => out.actions.push(create()),
            Some(p) if !is_from_git(&p.metadata) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), "a pod not from Git holds the name of a Git pod");
            }
            Some(p) if podutil::is_terminating(p) => {}
            Some(p)
                if meta::annotation(&p.metadata, FROM_GIT_ANNOTATION) != Some(hash.as_str()) =>
            {
                if let Ok(key) = meta_key("Pod", &p.metadata) {
                    out.actions.push(Action::Delete {
                        key,
                        mod_revision: mod_revision(&p.metadata),
                    });
                    out.actions.push(create());
                }
            }
            Some(_) => {}
        }
    }
    out
}

/// Creates/updates observed ReplicaSets for the ReplicaSets written in Git.
pub fn reconcile_replica_sets(ctx: &Context, desired: &Desired, observed: &Observed) -> Reconciled {
    let mut out = Reconciled::none();
    for want in &desired.replica_sets {
        let hash = git_hash(&want.metadata, &want.spec);
        let (ns, name) = (meta::namespace(&want.metadata), meta::name(&want.metadata));
        let have = observed
            .replica_sets
            .iter()
            .find(|r| meta::namespace(&r.metadata) == ns && meta::name(&r.metadata) == name);
        match have {
            None => out.actions.push(Action::Create(
                ReplicaSet {
                    metadata: copied_meta(
                        ctx,
                        &want.metadata,
                        &hash,
                        desired.revision.as_deref(),
                        true,
                    ),
                    spec: want.spec.clone(),
                    status: None,
                }
                .into(),
            )),
            Some(r) if !is_from_git(&r.metadata) => {
                tracing::warn!(rs = %format!("{ns}/{name}"), "a ReplicaSet not from Git holds the name of a Git ReplicaSet");
            }
            Some(r)
                if meta::annotation(&r.metadata, FROM_GIT_ANNOTATION) != Some(hash.as_str()) =>
            {
                let mut updated = r.clone();
                updated.spec = want.spec.clone();
                updated.metadata.labels = want.metadata.labels.clone();
                updated.metadata.annotations = want.metadata.annotations.clone();
                meta::set_annotation(&mut updated.metadata, FROM_GIT_ANNOTATION, hash);
                if let Some(rev) = desired.revision.as_deref() {
                    meta::set_annotation(&mut updated.metadata, REVISION_ANNOTATION, rev);
                }
                updated.metadata.generation = Some(r.metadata.generation.unwrap_or(1) + 1);
                out.actions.push(Action::Update(updated.into()));
            }
            Some(_) => {}
        }
    }
    out
}

/// Creates the system namespaces and the namespaces declared in Git.
pub fn reconcile_namespaces(ctx: &Context, desired: &Desired, observed: &Observed) -> Reconciled {
    let mut out = Reconciled::none();
    let exists = |name: &str| {
        observed
            .namespaces
            .iter()
            .any(|n| meta::name(&n.metadata) == name)
    };
    let active = || {
        Some(NamespaceStatus {
            phase: Some("Active".into()),
            ..Default::default()
        })
    };
    for sys in SYSTEM_NAMESPACES {
        if !exists(sys)
            && !desired
                .namespaces
                .iter()
                .any(|n| meta::name(&n.metadata) == *sys)
        {
            out.actions.push(Action::Create(
                Namespace {
                    metadata: ObjectMeta {
                        name: Some(sys.to_string()),
                        uid: Some(ctx.new_uid()),
                        creation_timestamp: Some(ctx.now_time()),
                        labels: Some(
                            [("kubernetes.io/metadata.name".to_string(), sys.to_string())].into(),
                        ),
                        ..Default::default()
                    },
                    spec: None,
                    status: active(),
                }
                .into(),
            ));
        }
    }
    for want in &desired.namespaces {
        let name = meta::name(&want.metadata);
        let hash = git_hash(&want.metadata, &want.spec);
        let mut m = copied_meta(
            ctx,
            &want.metadata,
            &hash,
            desired.revision.as_deref(),
            false,
        );
        m.labels
            .get_or_insert_with(Default::default)
            .insert("kubernetes.io/metadata.name".into(), name.to_string());
        match observed
            .namespaces
            .iter()
            .find(|n| meta::name(&n.metadata) == name)
        {
            None => out.actions.push(Action::Create(
                Namespace {
                    metadata: m,
                    spec: want.spec.clone(),
                    status: active(),
                }
                .into(),
            )),
            Some(have)
                if meta::annotation(&have.metadata, FROM_GIT_ANNOTATION) != Some(hash.as_str()) =>
            {
                let mut updated = have.clone();
                updated.metadata.labels = m.labels;
                updated.metadata.annotations = m.annotations;
                updated.spec = want.spec.clone();
                out.actions.push(Action::Update(updated.into()));
            }
            Some(_) => {}
        }
    }
    out
}
