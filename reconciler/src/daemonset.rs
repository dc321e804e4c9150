//! The DaemonSet controller: one pod per eligible node, as kube-controller-manager's
//! daemonset controller does.
//!
//! A node is eligible when the pod template's `nodeSelector` and required node affinity
//! match it and every NoSchedule/NoExecute taint on it (its own, plus the
//! `not-ready`/`unreachable` ones its Ready condition implies, as the node lifecycle
//! controller sets them) is tolerated. Pods get Kubernetes' DaemonSet tolerations added
//! (`not-ready` and `unreachable` NoExecute; `disk-pressure`, `memory-pressure`,
//! `pid-pressure`, `unschedulable` NoSchedule; `network-unavailable` for host-network
//! pods), so a node that stops reporting keeps its daemon pod. A pod already on a node
//! that is no longer eligible stays until a NoExecute taint it does not tolerate appears
//! or the node stops matching its selector/affinity.
//!
//! Binding: as Kubernetes 1.12+ does, the pod is created with a required node affinity
//! on `metadata.name` of its node (a `matchFields` term replacing the template's required
//! terms, which already matched) and the scheduler binds it — so resources and host
//! ports are checked as for any pod. The node a pod is meant for is its `spec.nodeName`
//! or that term's node.
//!
//! Updates: pods carry `controller-revision-hash` (a hash of the template). With
//! `RollingUpdate` (the default), `maxUnavailable` (default 1) nodes at most are without
//! an available pod while old pods are deleted and replaced; with `maxSurge` > 0 a new
//! pod starts beside the old one, which is deleted once the new one is available. With
//! `OnDelete` old pods stay until someone deletes them. A failed daemon pod is deleted
//! and replaced 10 s after it failed ([`FAILED_POD_BACKOFF`]; Kubernetes deletes it at
//! once and backs off in memory, a pure controller keeps the failed pod as its memory),
//! so a pod that fails at once does not make a hot loop.
//!
//! Status (a record under `/registry/daemonsets/<ns>/<name>`, the spec being in Git):
//! desiredNumberScheduled, currentNumberScheduled, numberMisscheduled, numberReady,
//! updatedNumberScheduled, numberAvailable, numberUnavailable, observedGeneration.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, PodStatus, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::SignedDuration;

use crate::action::{Action, ReconcileError, Reconciled};
use crate::context::Context;
use crate::deployment::scaled_value;
use crate::events::{self, Involved, reason};
use crate::hash;
use crate::meta;
use crate::object::{meta_key, mod_revision};
use crate::podutil;
use crate::scheduler::{self, TAINT_NOT_READY, TAINT_UNREACHABLE, TAINT_UNSCHEDULABLE};
use crate::state::Observed;

/// Label with the hash of the template a daemon pod was made from.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
/// Component name on the controller's events.
pub const COMPONENT: &str = "daemonset-controller";
/// How long a failed daemon pod stays before it is deleted and replaced.
pub const FAILED_POD_BACKOFF: SignedDuration = SignedDuration::from_secs(10);

/// The taint of nodes under memory pressure.
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
/// The taint of nodes under disk pressure.
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
/// The taint of nodes under PID pressure.
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
/// The taint of nodes whose network is not configured.
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// Adds the tolerations Kubernetes gives every daemon pod (`AddOrUpdateDaemonPodTolerations`).
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        toleration(TAINT_NOT_READY, "NoExecute"),
        toleration(TAINT_UNREACHABLE, "NoExecute"),
        toleration(TAINT_DISK_PRESSURE, "NoSchedule"),
        toleration(TAINT_MEMORY_PRESSURE, "NoSchedule"),
        toleration(TAINT_PID_PRESSURE, "NoSchedule"),
        toleration(TAINT_UNSCHEDULABLE, "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(toleration(TAINT_NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    let tols = spec.tolerations.get_or_insert_with(Vec::new);
    for t in wanted {
        if !tols.iter().any(|x| x.key == t.key && x.effect == t.effect) {
            tols.push(t);
        }
    }
}

/// Whether a daemon pod with `spec` (tolerations added) should run on `node`, and whether
/// one already there may stay (Kubernetes' `NodeShouldRunDaemonPod`).
pub fn node_should_run(spec: &PodSpec, node: &Node) -> (bool, bool) {
    if !scheduler::node_affinity_matches(spec, node) {
        return (false, false);
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    let untolerated = |effect: &str| {
        scheduler::effective_taints(node)
            .iter()
            .any(|t| t.effect == effect && !tolerations.iter().any(|x| scheduler::tolerates(x, t)))
    };
    let no_execute = untolerated("NoExecute");
    (!no_execute && !untolerated("NoSchedule"), !no_execute)
}

/// The node a daemon pod is for: its `spec.nodeName`, or the node its required
/// `matchFields` affinity names.
pub fn target_node(pod: &Pod) -> Option<&str> {
    if let Some(n) = podutil::node_name(pod) {
        return Some(n);
    }
    let terms = &pod
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|f| {
            (f.key == "metadata.name" && f.operator == "In")
                .then(|| f.values.as_ref()?.first().map(String::as_str))
                .flatten()
        })
    })
}

/// Replaces the required node affinity with a term on the node's name
/// (`ReplaceDaemonSetPodNodeNameNodeAffinity`).
fn bind_to(spec: &mut PodSpec, node: &str) {
    let term = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.to_string()]),
        }]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
}

fn created(p: &Pod) -> Option<k8s_openapi::jiff::Timestamp> {
    p.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn pod_hash(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH)
        .map(String::as_str)
}

/// Rolling update settings with Kubernetes' defaults, resolved against `total` nodes.
fn rolling(spec: &DaemonSetSpec, total: i32) -> Result<Option<(i32, i32)>, String> {
    let strategy = spec.update_strategy.as_ref();
    match strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
    {
        "OnDelete" => Ok(None),
        "RollingUpdate" => {
            let ru = strategy.and_then(|s| s.rolling_update.as_ref());
            let surge = ru
                .and_then(|r| r.max_surge.clone())
                .unwrap_or(IntOrString::Int(0));
            let unavailable = ru
                .and_then(|r| r.max_unavailable.clone())
                .unwrap_or(IntOrString::Int(1));
            let surge = scaled_value(&surge, total, true)?.max(0);
            let mut unavailable = scaled_value(&unavailable, total, true)?.max(0);
            if surge == 0 && unavailable == 0 {
                unavailable = 1;
            }
            Ok(Some((surge, unavailable)))
        }
        other => Err(format!("unknown update strategy {other:?}")),
    }
}

/// Runs one sync of a DaemonSet from Git.
pub fn reconcile(
    ctx: &Context,
    ds: &DaemonSet,
    observed: &Observed,
    revision: Option<&str>,
) -> Result<Reconciled, ReconcileError> {
    let name = meta::name(&ds.metadata);
    let ns = meta::namespace(&ds.metadata);
    let invalid = |field: &str, message: &str| ReconcileError::Invalid {
        object: format!("DaemonSet {ns}/{name}"),
        field: field.into(),
        message: message.into(),
    };
    let spec = ds
        .spec
        .as_ref()
        .ok_or_else(|| invalid("spec", "required"))?;
    if meta::selector_is_empty(&spec.selector) {
        return Err(invalid("spec.selector", "empty selector is invalid"));
    }
    let mut pod_spec = spec
        .template
        .spec
        .clone()
        .ok_or_else(|| invalid("spec.template.spec", "required"))?;
    add_daemon_tolerations(&mut pod_spec);
    let uid = meta::desired_uid("DaemonSet", &ds.metadata);
    let record = observed.daemon_set_status(ns, name);
    let template_hash = hash::pod_template_hash(&spec.template, None);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = ctx.now();
    let involved = Involved {
        kind: "DaemonSet",
        namespace: Some(ns),
        name,
        uid: Some(&uid),
    };
    let mut out = Reconciled::none();
    let delete = |out: &mut Reconciled, p: &Pod| {
        if let Ok(key) = meta_key("Pod", &p.metadata) {
            out.actions.push(Action::Delete {
                key,
                mod_revision: mod_revision(&p.metadata),
            });
            out.actions.push(events::normal(
                ctx,
                involved.clone(),
                reason::SUCCESSFUL_DELETE,
                COMPONENT,
                format!("Deleted pod: {}", meta::name(&p.metadata)),
            ));
        }
    };

    // The DaemonSet's pods by the node they are for.
    let mut by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    // Nodes whose daemon pod failed less than FAILED_POD_BACKOFF ago: no new pod yet.
    let mut backing_off: HashSet<&str> = HashSet::new();
    for p in observed.pods_controlled_by(ns, &uid) {
        if podutil::is_terminating(p) {
            continue;
        }
        if podutil::is_terminal(p) {
            // Failed (or finished) daemon pods are deleted and replaced, once the pod has
            // been failed for FAILED_POD_BACKOFF (the failed pod is the controller's
            // memory of the failure, so a pod failing at once does not spin).
            let until = crate::job::finish_time(p)
                .and_then(|t| t.checked_add(FAILED_POD_BACKOFF).ok())
                .unwrap_or(now);
            match target_node(p) {
                Some(n) if now < until && observed.node(n).is_some() => {
                    backing_off.insert(n);
                    let secs = until.duration_since(now).as_secs().max(0) as u64 + 1;
                    out.requeue_after(Duration::from_secs(secs));
                }
                _ => delete(&mut out, p),
            }
            continue;
        }
        match target_node(p) {
            Some(n) if observed.node(n).is_some() => by_node.entry(n).or_default().push(p),
            _ => delete(&mut out, p),
        }
    }
    for pods in by_node.values_mut() {
        pods.sort_by(|a, b| {
            created(a)
                .cmp(&created(b))
                .then(a.metadata.name.cmp(&b.metadata.name))
        });
    }

    let mut nodes: Vec<&Node> = observed.nodes.iter().collect();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut eligible: Vec<&str> = Vec::new();
    let mut misscheduled = 0;
    // Nodes that get a new pod, and pods to delete.
    let mut to_create: Vec<&str> = Vec::new();
    let mut to_delete: Vec<&Pod> = Vec::new();
    for node in &nodes {
        let node_name = meta::name(&node.metadata);
        let (should_run, may_stay) = node_should_run(&pod_spec, node);
        let pods: &[&Pod] = by_node.get(node_name).map(Vec::as_slice).unwrap_or(&[]);
        if should_run {
            eligible.push(node_name);
        }
        if !may_stay {
            to_delete.extend(pods.iter().copied());
            continue;
        }
        if !should_run && !pods.is_empty() {
            misscheduled += 1;
        }
        if should_run && pods.is_empty() {
            if !backing_off.contains(node_name) {
                to_create.push(node_name);
            }
        } else if pods.len() > 1 {
            // Keep the oldest pod, plus the newest updated one while an update surges.
            let newest_updated = pods
                .iter()
                .rev()
                .find(|p| pod_hash(p) == Some(template_hash.as_str()));
            let keep_old = pods[0];
            for p in pods.iter().skip(1) {
                let surging = newest_updated.is_some_and(|n| std::ptr::eq(*n, *p))
                    && pod_hash(keep_old) != Some(template_hash.as_str());
                if !surging {
                    to_delete.push(p);
                }
            }
        }
    }
    let desired = i32::try_from(eligible.len()).unwrap_or(i32::MAX);

    // Rolling update of nodes whose pod is old.
    let strategy =
        rolling(spec, desired).map_err(|m| invalid("spec.updateStrategy.rollingUpdate", &m))?;
    if let Some((max_surge, max_unavailable)) = strategy {
        let available = |p: &Pod| podutil::is_available(p, min_ready, now);
        let deleting: HashSet<&str> = to_delete.iter().map(|p| meta::name(&p.metadata)).collect();
        let mut unavailable = 0;
        let mut candidates: Vec<&Pod> = Vec::new();
        let mut surging = 0;
        let mut old_only: Vec<(&str, &Pod)> = Vec::new();
        for node_name in &eligible {
            let pods: Vec<&Pod> = by_node
                .get(node_name)
                .map(|v| {
                    v.iter()
                        .copied()
                        .filter(|p| !deleting.contains(meta::name(&p.metadata)))
                        .collect()
                })
                .unwrap_or_default();
            let new = pods
                .iter()
                .find(|p| pod_hash(p) == Some(template_hash.as_str()));
            let old = pods
                .iter()
                .find(|p| pod_hash(p) != Some(template_hash.as_str()));
            if !pods.iter().any(|p| available(p)) {
                unavailable += 1;
            }
            match (old, new) {
                (Some(o), None) if max_surge == 0 => {
                    if available(o) {
                        candidates.push(o);
                    } else {
                        // An old pod that is not available anyway: replacing it is free.
                        to_delete.push(o);
                    }
                }
                (Some(o), None) => old_only.push((node_name, o)),
                (Some(o), Some(n)) => {
                    if available(n) {
                        to_delete.push(o);
                    } else {
                        surging += 1;
                    }
                }
                _ => {}
            }
        }
        if max_surge == 0 {
            let budget = usize::try_from(max_unavailable - unavailable).unwrap_or(0);
            to_delete.extend(candidates.into_iter().take(budget));
        } else {
            for (node_name, o) in old_only {
                if !available(o) || surging < max_surge {
                    if available(o) {
                        surging += 1;
                    }
                    to_create.push(node_name);
                }
            }
        }
    }

    // Writes.
    let mut seen: HashSet<&str> = HashSet::new();
    for p in to_delete {
        if seen.insert(meta::name(&p.metadata)) {
            delete(&mut out, p);
        }
    }
    let mut taken: HashSet<&str> = observed
        .pods
        .iter()
        .filter(|p| meta::namespace(&p.metadata) == ns)
        .map(|p| meta::name(&p.metadata))
        .collect();
    let mut fresh: Vec<String> = Vec::new();
    for node_name in to_create {
        let pod_name = loop {
            let n = ctx.generate_name(&format!("{name}-"));
            if !taken.contains(n.as_str()) && !fresh.contains(&n) {
                break n;
            }
        };
        fresh.push(pod_name.clone());
        let tmeta = spec.template.metadata.clone().unwrap_or_default();
        let mut labels = tmeta.labels.unwrap_or_default();
        labels.insert(CONTROLLER_REVISION_HASH.into(), template_hash.clone());
        let mut ps = pod_spec.clone();
        bind_to(&mut ps, node_name);
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(pod_name.clone()),
                generate_name: Some(format!("{name}-")),
                namespace: Some(ns.to_string()),
                uid: Some(ctx.new_uid()),
                creation_timestamp: Some(ctx.now_time()),
                labels: Some(labels),
                annotations: tmeta.annotations,
                owner_references: Some(vec![meta::controller_ref(
                    "apps/v1",
                    "DaemonSet",
                    name,
                    &uid,
                )]),
                ..Default::default()
            },
            spec: Some(ps),
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
            COMPONENT,
            format!("Created pod: {pod_name}"),
        ));
    }
    taken.clear();

    // Status, from the pods as they are (Kubernetes' updateDaemonSetStatus).
    let (mut current, mut ready, mut available, mut updated) = (0, 0, 0, 0);
    for node_name in &eligible {
        let scheduled: Vec<&Pod> = by_node
            .get(node_name)
            .into_iter()
            .flatten()
            .copied()
            .filter(|p| podutil::node_name(p).is_some())
            .collect();
        let Some(p) = scheduled.first() else {
            continue;
        };
        current += 1;
        if podutil::is_ready(p) {
            ready += 1;
            if podutil::is_available(p, min_ready, now) {
                available += 1;
            } else if let Some(at) = podutil::available_at(p, min_ready) {
                let secs = at.duration_since(now).as_secs().max(0) as u64 + 1;
                out.requeue_after(Duration::from_secs(secs));
            }
        }
        if scheduled
            .iter()
            .any(|p| pod_hash(p) == Some(template_hash.as_str()))
        {
            updated += 1;
        }
    }
    let generation = ds.metadata.generation.unwrap_or(1);
    let status = DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: current,
        number_misscheduled: misscheduled,
        number_ready: ready,
        updated_number_scheduled: Some(updated),
        number_available: Some(available),
        number_unavailable: Some(desired - available).filter(|n| *n > 0),
        observed_generation: Some(generation),
        collision_count: None,
        conditions: None,
    };
    let mut m = ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
        uid: Some(uid.clone()),
        generation: Some(generation),
        labels: ds.metadata.labels.clone(),
        resource_version: record.and_then(|r| r.metadata.resource_version.clone()),
        creation_timestamp: record
            .and_then(|r| r.metadata.creation_timestamp.clone())
            .or(Some(ctx.now_time())),
        ..Default::default()
    };
    if let Some(r) = revision {
        meta::set_annotation(&mut m, meta::REVISION_ANNOTATION, r);
    }
    let changed = match record {
        None => true,
        Some(r) => r.status.as_ref() != Some(&status) || r.metadata.annotations != m.annotations,
    };
    if changed {
        out.actions.push(Action::WriteStatus(
            DaemonSet {
                metadata: m,
                spec: None,
                status: Some(status),
            }
            .into(),
        ));
    }
    Ok(out)
}
