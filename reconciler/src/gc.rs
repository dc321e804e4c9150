//! Garbage collection: observed objects whose owner is gone, and pod clean-up.
//!
//! [`collect`] is the garbage collector with background propagation, done in one pass:
//! a ReplicaSet whose controlling Deployment is no longer in the applied revision is
//! deleted, then every pod it controlled (the node agent stops a pod's containers when the
//! pod is gone); likewise a Job whose CronJob is gone, and the pods of a Job that is
//! neither in Git nor observed. Copies of Git objects (bare Pods, Git ReplicaSets,
//! Namespaces) and the status records of Deployments, DaemonSets, CronJobs and Jobs go
//! when Git no longer declares them. Objects nobody in
//! kommit made (no controller reference, not from Git) are left alone.
//!
//! [`pod_gc`] is Kubernetes' pod GC: pods bound to a node that no longer exists, pods
//! whose deletion grace period ran out (their node never confirmed), and terminated
//! controller-owned pods beyond a threshold, oldest first.

use std::collections::HashSet;

use k8s_openapi::jiff::SignedDuration;

use crate::action::{Action, Reconciled};
use crate::bare::{SYSTEM_NAMESPACES, is_from_git};
use crate::context::Context;
use crate::meta;
use crate::object::{meta_key, mod_revision};
use crate::podutil;
use crate::state::{Desired, Observed};

/// Settings of the collectors.
#[derive(Clone, Debug)]
pub struct GcConfig {
    /// Events older than this are deleted (Kubernetes' default event TTL is 1 h).
    pub event_ttl: SignedDuration,
    /// Terminated controller-owned pods kept for inspection before the oldest are deleted
    /// (Kubernetes' `terminated-pod-gc-threshold`, 12500 there; small here since one
    /// machine keeps everything).
    pub terminated_pod_threshold: usize,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            event_ttl: SignedDuration::from_hours(1),
            terminated_pod_threshold: 100,
        }
    }
}

fn delete(
    kind: &'static str,
    m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<Action> {
    meta_key(kind, m).ok().map(|key| Action::Delete {
        key,
        mod_revision: mod_revision(m),
    })
}

/// Deletes observed objects whose owner no longer exists in the applied revision.
pub fn collect(
    ctx: &Context,
    desired: &Desired,
    observed: &Observed,
    config: &GcConfig,
) -> Reconciled {
    let mut out = Reconciled::none();

    // ReplicaSets first.
    let mut gone_rs: HashSet<&str> = HashSet::new();
    for rs in &observed.replica_sets {
        let m = &rs.metadata;
        let ns = meta::namespace(m);
        let orphaned = match meta::controller_of(m) {
            Some(owner) => desired_owner_gone(desired, &owner.kind, ns, &owner.name, &owner.uid),
            None => is_from_git(m) && desired.uid_of("ReplicaSet", ns, meta::name(m)).is_none(),
        };
        if orphaned {
            if let Some(uid) = m.uid.as_deref() {
                gone_rs.insert(uid);
            }
            out.actions.extend(delete("ReplicaSet", m));
        }
    }
    let live_rs: HashSet<&str> = observed
        .replica_sets
        .iter()
        .filter_map(|r| r.metadata.uid.as_deref())
        .filter(|u| !gone_rs.contains(u))
        .collect();

    // Jobs: those CronJobs made, and the status records of Git Jobs.
    let mut live_jobs: HashSet<&str> = HashSet::new();
    for j in &observed.jobs {
        let m = &j.metadata;
        let ns = meta::namespace(m);
        let orphaned = match meta::controller_of(m) {
            Some(owner) => desired_owner_gone(desired, &owner.kind, ns, &owner.name, &owner.uid),
            None if j.spec.is_none() => desired.uid_of("Job", ns, meta::name(m)).is_none(),
            None => false,
        };
        if orphaned {
            out.actions.extend(delete("Job", m));
        } else if j.spec.is_some()
            && let Some(uid) = m.uid.as_deref()
        {
            live_jobs.insert(uid);
        }
    }

    // Then pods.
    for pod in &observed.pods {
        let m = &pod.metadata;
        let ns = meta::namespace(m);
        let orphaned = match meta::controller_of(m) {
            Some(owner) if owner.kind == "ReplicaSet" => !live_rs.contains(owner.uid.as_str()),
            Some(owner) if owner.kind == "Job" => {
                !live_jobs.contains(owner.uid.as_str())
                    && desired.uid_of("Job", ns, &owner.name).as_deref() != Some(&owner.uid)
            }
            Some(owner) => desired_owner_gone(desired, &owner.kind, ns, &owner.name, &owner.uid),
            None => is_from_git(m) && desired.uid_of("Pod", ns, meta::name(m)).is_none(),
        };
        if orphaned {
            out.actions.extend(delete("Pod", m));
        }
    }

    // Status records of Deployments no longer in Git.
    for d in &observed.deployments {
        let m = &d.metadata;
        if desired
            .uid_of("Deployment", meta::namespace(m), meta::name(m))
            .is_none()
        {
            out.actions.extend(delete("Deployment", m));
        }
    }

    // Status records of DaemonSets and CronJobs no longer in Git.
    for d in &observed.daemon_sets {
        let m = &d.metadata;
        if desired
            .uid_of("DaemonSet", meta::namespace(m), meta::name(m))
            .is_none()
        {
            out.actions.extend(delete("DaemonSet", m));
        }
    }
    for c in &observed.cron_jobs {
        let m = &c.metadata;
        if desired
            .uid_of("CronJob", meta::namespace(m), meta::name(m))
            .is_none()
        {
            out.actions.extend(delete("CronJob", m));
        }
    }

    // Namespaces removed from Git (system namespaces stay).
    for n in &observed.namespaces {
        let name = meta::name(&n.metadata);
        if is_from_git(&n.metadata)
            && !SYSTEM_NAMESPACES.contains(&name)
            && desired.uid_of("Namespace", "", name).is_none()
        {
            out.actions.extend(delete("Namespace", &n.metadata));
        }
    }

    // Expired events.
    for e in &observed.events {
        let last = e
            .last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0));
        if let Some(last) = last {
            let age = ctx.since(last);
            if age >= config.event_ttl {
                out.actions.extend(delete("Event", &e.metadata));
            } else {
                let left = config.event_ttl - age;
                out.requeue_after(std::time::Duration::from_secs(
                    left.as_secs().max(0) as u64 + 1,
                ));
            }
        }
    }
    out
}

/// Whether a controller named by an owner reference is gone from desired state. Kinds
/// kommit does not make from Git are never judged gone.
fn desired_owner_gone(desired: &Desired, kind: &str, ns: &str, name: &str, uid: &str) -> bool {
    match kind {
        "Deployment" | "DaemonSet" | "Job" | "CronJob" | "ReplicaSet" => {
            desired.uid_of(kind, ns, name).as_deref() != Some(uid)
        }
        _ => false,
    }
}

/// Kubernetes' pod GC.
pub fn pod_gc(
    ctx: &Context,
    desired: &Desired,
    observed: &Observed,
    config: &GcConfig,
) -> Reconciled {
    let mut out = Reconciled::none();
    let now = ctx.now();
    let mut deleted: HashSet<(&str, &str)> = HashSet::new();
    for pod in &observed.pods {
        let m = &pod.metadata;
        let id = (meta::namespace(m), meta::name(m));
        // Bound to a node that does not exist. A Git pod that names its node itself waits
        // for that node instead (deleting it would only bring it back).
        if let Some(node) = podutil::node_name(pod) {
            let pinned_in_git = is_from_git(m)
                && desired.pods.iter().any(|p| {
                    meta::namespace(&p.metadata) == id.0
                        && meta::name(&p.metadata) == id.1
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
                });
            if observed.node(node).is_none() && !pinned_in_git {
                out.actions.extend(delete("Pod", m));
                deleted.insert(id);
                continue;
            }
        }
        // Grace period over and nobody finished the deletion.
        if let Some(t) = &m.deletion_timestamp {
            if now >= t.0 {
                out.actions.extend(delete("Pod", m));
                deleted.insert(id);
            } else {
                let left = t.0.duration_since(now).as_secs().max(0) as u64 + 1;
                out.requeue_after(std::time::Duration::from_secs(left));
            }
        }
    }
    // Terminated controller-owned pods beyond the threshold, oldest first. Job pods are
    // left to their Job (its counts rest on them; ttlSecondsAfterFinished removes them).
    let mut terminated: Vec<_> = observed
        .pods
        .iter()
        .filter(|p| {
            podutil::is_terminal(p)
                && meta::controller_of(&p.metadata).is_some_and(|o| o.kind != "Job")
        })
        .filter(|p| !deleted.contains(&(meta::namespace(&p.metadata), meta::name(&p.metadata))))
        .collect();
    if terminated.len() > config.terminated_pod_threshold {
        terminated.sort_by_key(|p| {
            (
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                p.metadata.name.clone(),
            )
        });
        let excess = terminated.len() - config.terminated_pod_threshold;
        for p in terminated.into_iter().take(excess) {
            out.actions.extend(delete("Pod", &p.metadata));
        }
    }
    out
}
