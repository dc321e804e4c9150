//! Pod predicates shared by controllers and the scheduler (Kubernetes' `podutil`).

use std::cmp::Ordering;

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The pod's phase (`Pending` if unset, as the API server defaults it).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Succeeded or Failed.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Marked for deletion (`metadata.deletionTimestamp` set).
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Counted by its controller: not terminal and not being deleted (`FilterActivePods`).
pub fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && !is_terminating(pod)
}

/// The node the pod is bound to, if any.
pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// A condition of the pod's status.
pub fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

/// When the pod became ready (the Ready condition's lastTransitionTime), if it is ready.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    condition(pod, "Ready")
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Whether the pod has been ready for at least `min_ready_seconds` at `now`
/// (Kubernetes' `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match ready_since(pod) {
        Some(t) => now.duration_since(t) >= SignedDuration::from_secs(i64::from(min_ready_seconds)),
        None => false,
    }
}

/// When a ready pod that is not yet available becomes available, if it will.
pub fn available_at(pod: &Pod, min_ready_seconds: i32) -> Option<Timestamp> {
    let since = ready_since(pod)?;
    since
        .checked_add(SignedDuration::from_secs(i64::from(min_ready_seconds)))
        .ok()
}

fn created(pod: &Pod) -> Option<Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

fn phase_rank(pod: &Pod) -> u8 {
    match phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

/// Orders pods for deletion when scaling down, first to delete first — Kubernetes'
/// `ActivePodsWithRanks`: unscheduled before scheduled; Pending before Unknown before
/// Running; not ready before ready; pods sharing a node with more of their siblings
/// (`rank`) first; ready for a shorter time first; more restarts first; newer first.
pub fn deletion_order(a: (&Pod, usize), b: (&Pod, usize)) -> Ordering {
    let (pa, ra) = a;
    let (pb, rb) = b;
    // Unassigned < assigned.
    let assigned = |p: &Pod| node_name(p).is_some();
    assigned(pa)
        .cmp(&assigned(pb))
        .then_with(|| phase_rank(pa).cmp(&phase_rank(pb)))
        .then_with(|| is_ready(pa).cmp(&is_ready(pb)))
        // Doubled up (higher rank) first.
        .then_with(|| rb.cmp(&ra))
        // Ready more recently (shorter time) first.
        .then_with(|| match (ready_since(pa), ready_since(pb)) {
            (Some(x), Some(y)) => y.cmp(&x),
            _ => Ordering::Equal,
        })
        // More restarts first.
        .then_with(|| restarts(pb).cmp(&restarts(pa)))
        // Newer first; no creation time counts as newest.
        .then_with(|| match (created(pa), created(pb)) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => y.cmp(&x),
        })
        .then_with(|| pa.metadata.name.cmp(&pb.metadata.name))
}
