//! Node lifecycle, as kube-controller-manager's node lifecycle controller does it.
//!
//! - A node is heard from through its Lease in `kube-node-lease` (renewTime), its Ready
//!   condition's lastHeartbeatTime, or, before either, its creation. When nothing was
//!   heard for the grace period (40 s), its conditions become Unknown (`NodeStatusUnknown`,
//!   "Kubelet stopped posting node status."), a `NodeNotReady` event is recorded and its
//!   pods are marked not Ready.
//! - Nodes are tainted from their Ready condition: Unknown → `node.kubernetes.io/unreachable`,
//!   False → `node.kubernetes.io/not-ready`, both NoSchedule and NoExecute; the taints go
//!   when the node is Ready again.
//! - Pods on a NoExecute-tainted node are marked for deletion once their toleration of the
//!   taint runs out: `tolerationSeconds` of a matching toleration, 300 s without one (what
//!   Kubernetes' DefaultTolerationSeconds admission gives every pod), never with a
//!   matching toleration without seconds. Marked pods (deletionTimestamp set,
//!   `DisruptionTarget` condition) no longer count for their ReplicaSet, which replaces them.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::action::{Action, Reconciled};
use crate::context::Context;
use crate::events::{self, Involved, component, reason};
use crate::meta;
use crate::podutil;
use crate::scheduler::{TAINT_NOT_READY, TAINT_UNREACHABLE, set_pod_condition, tolerates};
use crate::state::Observed;

/// Namespace of node heartbeat leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Timing of the node lifecycle controller.
#[derive(Clone, Debug)]
pub struct NodeLifecycleConfig {
    /// Silence after which a node is Unknown (Kubernetes' node-monitor-grace-period, 40 s).
    pub grace_period: SignedDuration,
    /// Toleration given to pods that declare none for not-ready/unreachable (300 s).
    pub default_toleration: SignedDuration,
    /// Grace period of evicted pods without terminationGracePeriodSeconds (30 s).
    pub default_termination_grace: i64,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            grace_period: SignedDuration::from_secs(40),
            default_toleration: SignedDuration::from_secs(300),
            default_termination_grace: 30,
        }
    }
}

fn secs_ceil(d: SignedDuration) -> Duration {
    let s = d.as_secs().max(0) as u64;
    Duration::from_secs(if d.subsec_nanos() > 0 { s + 1 } else { s })
}

/// When the node was last heard from.
pub fn last_heard(node: &Node, observed: &Observed) -> Option<Timestamp> {
    let name = meta::name(&node.metadata);
    let lease = observed
        .leases
        .iter()
        .find(|l| {
            meta::name(&l.metadata) == name && meta::namespace(&l.metadata) == LEASE_NAMESPACE
        })
        .and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
        .map(|t| t.0);
    let heartbeat = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
    [lease, heartbeat, created].into_iter().flatten().max()
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// Runs the node lifecycle controller over every node.
pub fn reconcile(ctx: &Context, observed: &Observed, config: &NodeLifecycleConfig) -> Reconciled {
    let mut out = Reconciled::none();
    let now = ctx.now();
    for node in &observed.nodes {
        let name = meta::name(&node.metadata);
        let mut updated = node.clone();
        let mut became_unknown = false;

        // 1. Heartbeat: Unknown after the grace period.
        let heard = last_heard(node, observed).unwrap_or(now);
        let silent = ctx.since(heard);
        let ready_status = ready_condition(node).map(|c| c.status.clone());
        if silent > config.grace_period {
            if ready_status.as_deref() != Some("Unknown") {
                became_unknown = true;
                let st = updated.status.get_or_insert_with(Default::default);
                let conds = st.conditions.get_or_insert_with(Vec::new);
                if !conds.iter().any(|c| c.type_ == "Ready") {
                    conds.push(NodeCondition {
                        type_: "Ready".into(),
                        status: "Unknown".into(),
                        reason: Some("NodeStatusNeverUpdated".into()),
                        message: Some("Kubelet never posted node status.".into()),
                        last_heartbeat_time: Some(Time(heard)),
                        last_transition_time: Some(ctx.now_time()),
                    });
                }
                for c in conds.iter_mut() {
                    if matches!(
                        c.type_.as_str(),
                        "Ready" | "MemoryPressure" | "DiskPressure" | "PIDPressure"
                    ) && c.status != "Unknown"
                    {
                        c.status = "Unknown".into();
                        c.reason = Some("NodeStatusUnknown".into());
                        c.message = Some("Kubelet stopped posting node status.".into());
                        c.last_transition_time = Some(ctx.now_time());
                    }
                }
            }
        } else {
            let left = config.grace_period - silent;
            out.requeue_after(secs_ceil(left) + Duration::from_secs(1));
        }

        // 2. Taints from the Ready condition.
        let ready_now = ready_condition(&updated).map(|c| c.status.clone());
        let want_key = match ready_now.as_deref() {
            Some("True") | None => None,
            Some("Unknown") => Some(TAINT_UNREACHABLE),
            Some(_) => Some(TAINT_NOT_READY),
        };
        let mut taints: Vec<Taint> = updated
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let before = taints.clone();
        taints.retain(|t| {
            !((t.key == TAINT_UNREACHABLE || t.key == TAINT_NOT_READY)
                && Some(t.key.as_str()) != want_key)
        });
        if let Some(key) = want_key {
            for effect in ["NoSchedule", "NoExecute"] {
                if !taints.iter().any(|t| t.key == key && t.effect == effect) {
                    taints.push(Taint {
                        key: key.into(),
                        effect: effect.into(),
                        value: None,
                        time_added: (effect == "NoExecute").then(|| ctx.now_time()),
                    });
                }
            }
        }
        if taints != before {
            updated.spec.get_or_insert_with(Default::default).taints = if taints.is_empty() {
                None
            } else {
                Some(taints.clone())
            };
        }

        if updated != *node {
            out.actions.push(Action::Update(updated.clone().into()));
        }
        if became_unknown {
            out.actions.push(events::normal(
                ctx,
                Involved {
                    kind: "Node",
                    namespace: None,
                    name,
                    uid: node.metadata.uid.as_deref(),
                },
                reason::NODE_NOT_READY,
                component::NODE,
                format!("Node {name} status is now: NodeNotReady"),
            ));
        }

        // 3. Pods on the node: not Ready when it went silent; evicted when their
        //    toleration of the NoExecute taint is over.
        let no_execute = taints
            .iter()
            .find(|t| t.effect == "NoExecute" && Some(t.key.as_str()) == want_key);
        for pod in observed
            .pods
            .iter()
            .filter(|p| podutil::node_name(p) == Some(name))
        {
            if !podutil::is_active(pod) {
                continue;
            }
            let mut p = pod.clone();
            let mut changed = false;
            let mut eviction_event = None;
            if became_unknown && podutil::is_ready(pod) {
                set_pod_condition(ctx, &mut p, "Ready", "False", None, None);
                changed = true;
            }
            if let Some(taint) = no_execute {
                let since = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
                match toleration_for(pod, taint, config) {
                    None => {}
                    Some(tol) if ctx.since(since) >= tol => {
                        evict(ctx, &mut p, config);
                        changed = true;
                        eviction_event = Some(events::normal(
                            ctx,
                            Involved {
                                kind: "Pod",
                                namespace: Some(meta::namespace(&pod.metadata)),
                                name: meta::name(&pod.metadata),
                                uid: pod.metadata.uid.as_deref(),
                            },
                            reason::TAINT_MANAGER_EVICTION,
                            component::NODE,
                            format!(
                                "Marking for deletion Pod {}/{}",
                                meta::namespace(&pod.metadata),
                                meta::name(&pod.metadata)
                            ),
                        ));
                    }
                    Some(tol) => out.requeue_after(secs_ceil(tol - ctx.since(since))),
                }
            }
            if changed {
                out.actions.push(Action::Update(p.into()));
                out.actions.extend(eviction_event);
            }
        }
    }
    out
}

/// How long `pod` tolerates `taint`: `None` for ever.
fn toleration_for(
    pod: &Pod,
    taint: &Taint,
    config: &NodeLifecycleConfig,
) -> Option<SignedDuration> {
    let tols = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let matching: Vec<_> = tols.iter().filter(|t| tolerates(t, taint)).collect();
    if matching.is_empty() {
        return Some(config.default_toleration);
    }
    // The shortest bounded toleration applies; any unbounded one means for ever.
    if matching.iter().any(|t| t.toleration_seconds.is_none()) {
        return None;
    }
    matching
        .iter()
        .filter_map(|t| t.toleration_seconds)
        .min()
        .map(|s| SignedDuration::from_secs(s.max(0)))
}

fn evict(ctx: &Context, pod: &mut Pod, config: &NodeLifecycleConfig) {
    let grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(config.default_termination_grace);
    let at = ctx
        .now()
        .checked_add(SignedDuration::from_secs(grace))
        .unwrap_or(ctx.now());
    pod.metadata.deletion_timestamp = Some(Time(crate::context::truncate_seconds(at)));
    pod.metadata.deletion_grace_period_seconds = Some(grace);
    set_pod_condition(
        ctx,
        pod,
        "DisruptionTarget",
        "True",
        Some("DeletionByTaintManager"),
        Some("Taint manager: deleting due to NoExecute taint".into()),
    );
}
