//! The ReplicaSet controller: keeps `spec.replicas` active pods, as Kubernetes'
//! replicaset controller does.
//!
//! Active pods are the ones it controls (owner reference with `controller: true`) that
//! are neither Succeeded/Failed nor being deleted, so a pod that failed, was deleted or
//! was evicted from a lost node is replaced. Surplus pods are deleted in Kubernetes'
//! order ([`podutil::deletion_order`]): unscheduled, pending, not ready, doubled up on a
//! node, recently ready, restarting, newest first. Status counts replicas,
//! fullyLabeledReplicas, readyReplicas, availableReplicas (ready for minReadySeconds) and
//! observedGeneration.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::action::{Action, ReconcileError, Reconciled};
use crate::context::Context;
use crate::events::{self, Involved, component, reason};
use crate::meta;
use crate::object::{meta_key, mod_revision};
use crate::podutil;
use crate::state::Observed;

/// At most this many pods are created or deleted in one sync (Kubernetes' burstReplicas).
pub const BURST_REPLICAS: usize = 500;

/// Runs one sync of an observed ReplicaSet.
pub fn reconcile(
    ctx: &Context,
    rs: &ReplicaSet,
    observed: &Observed,
) -> Result<Reconciled, ReconcileError> {
    let mut out = Reconciled::none();
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(out);
    }
    let name = meta::name(&rs.metadata).to_string();
    let ns = meta::namespace(&rs.metadata).to_string();
    let invalid = |field: &str, message: &str| ReconcileError::Invalid {
        object: format!("ReplicaSet {ns}/{name}"),
        field: field.into(),
        message: message.into(),
    };
    let uid = rs
        .metadata
        .uid
        .clone()
        .ok_or_else(|| invalid("metadata.uid", "required"))?;
    let spec = rs
        .spec
        .as_ref()
        .ok_or_else(|| invalid("spec", "required"))?;
    let template = spec
        .template
        .as_ref()
        .ok_or_else(|| invalid("spec.template", "required"))?;
    let replicas = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);

    let owned: Vec<&Pod> = observed.pods_controlled_by(&ns, &uid).collect();
    let active: Vec<&Pod> = owned
        .iter()
        .copied()
        .filter(|p| podutil::is_active(p))
        .collect();
    let involved = Involved {
        kind: "ReplicaSet",
        namespace: Some(&ns),
        name: &name,
        uid: Some(&uid),
    };

    if active.len() < replicas {
        let mut taken: std::collections::HashSet<&str> = observed
            .pods
            .iter()
            .filter(|p| meta::namespace(&p.metadata) == ns)
            .map(|p| meta::name(&p.metadata))
            .collect();
        let mut fresh: Vec<String> = Vec::new();
        for _ in 0..(replicas - active.len()).min(BURST_REPLICAS) {
            let pod_name = loop {
                let n = ctx.generate_name(&format!("{name}-"));
                if !taken.contains(n.as_str()) && !fresh.contains(&n) {
                    break n;
                }
            };
            fresh.push(pod_name.clone());
            let tmeta = template.metadata.clone().unwrap_or_default();
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(pod_name.clone()),
                    generate_name: Some(format!("{name}-")),
                    namespace: Some(ns.clone()),
                    uid: Some(ctx.new_uid()),
                    creation_timestamp: Some(ctx.now_time()),
                    labels: tmeta.labels,
                    annotations: tmeta.annotations,
                    owner_references: Some(vec![meta::controller_ref(
                        "apps/v1",
                        "ReplicaSet",
                        &name,
                        &uid,
                    )]),
                    ..Default::default()
                },
                spec: template.spec.clone(),
                status: Some(PodStatus {
                    phase: Some("Pending".into()),
                    ..Default::default()
                }),
            };
            out.actions.push(Action::Create(pod.into()));
            out.actions.push(events::normal(
                ctx,
                involved.clone(),
                reason::SUCCESSFUL_CREATE,
                component::REPLICA_SET,
                format!("Created pod: {pod_name}"),
            ));
        }
        taken.clear();
    } else if active.len() > replicas {
        let diff = (active.len() - replicas).min(BURST_REPLICAS);
        // Rank: how many pods of this ReplicaSet's siblings (same controller) share the node.
        let siblings: Vec<&str> = match meta::controller_of(&rs.metadata) {
            Some(owner) => observed
                .replica_sets
                .iter()
                .filter(|o| {
                    meta::namespace(&o.metadata) == ns
                        && meta::controller_of(&o.metadata).is_some_and(|c| c.uid == owner.uid)
                })
                .filter_map(|o| o.metadata.uid.as_deref())
                .collect(),
            None => vec![uid.as_str()],
        };
        let mut per_node: HashMap<&str, usize> = HashMap::new();
        for p in observed.pods.iter().filter(|p| podutil::is_active(p)) {
            let related = meta::namespace(&p.metadata) == ns
                && meta::controller_of(&p.metadata)
                    .is_some_and(|c| siblings.contains(&c.uid.as_str()));
            if let (true, Some(node)) = (related, podutil::node_name(p)) {
                *per_node.entry(node).or_default() += 1;
            }
        }
        let rank = |p: &Pod| {
            podutil::node_name(p)
                .and_then(|n| per_node.get(n).copied())
                .unwrap_or(0)
        };
        let mut ranked: Vec<(&Pod, usize)> = active.iter().map(|p| (*p, rank(p))).collect();
        ranked.sort_by(|a, b| podutil::deletion_order(*a, *b));
        for (pod, _) in ranked.into_iter().take(diff) {
            let Ok(key) = meta_key("Pod", &pod.metadata) else {
                continue;
            };
            out.actions.push(Action::Delete {
                key,
                mod_revision: mod_revision(&pod.metadata),
            });
            out.actions.push(events::normal(
                ctx,
                involved.clone(),
                reason::SUCCESSFUL_DELETE,
                component::REPLICA_SET,
                format!("Deleted pod: {}", meta::name(&pod.metadata)),
            ));
        }
    }

    // Status, from the pods as they are now (Kubernetes' calculateStatus).
    let template_labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            template_labels
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| podutil::is_ready(p)).count();
    let now = ctx.now();
    let available = active
        .iter()
        .filter(|p| podutil::is_available(p, min_ready, now))
        .count();
    // A ready pod becomes available after minReadySeconds: look again then.
    if min_ready > 0 {
        for p in active
            .iter()
            .filter(|p| podutil::is_ready(p) && !podutil::is_available(p, min_ready, now))
        {
            if let Some(at) = podutil::available_at(p, min_ready) {
                let secs = at.duration_since(now).as_secs().max(0) as u64;
                out.requeue_after(Duration::from_secs(secs));
            }
        }
    }
    let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let old = rs.status.clone().unwrap_or_default();
    let status = ReplicaSetStatus {
        replicas: as_i32(active.len()),
        fully_labeled_replicas: Some(as_i32(fully_labeled)),
        ready_replicas: Some(as_i32(ready)),
        available_replicas: Some(as_i32(available)),
        observed_generation: Some(rs.metadata.generation.unwrap_or(1)),
        conditions: old.conditions.clone(),
        terminating_replicas: None,
    };
    if rs.status.as_ref() != Some(&status) {
        let mut updated = rs.clone();
        updated.status = Some(status);
        out.actions.push(Action::Update(updated.into()));
    }
    Ok(out)
}
