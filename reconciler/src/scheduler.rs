//! The scheduler: binds Pending pods to nodes, as kube-scheduler's default profile does
//! for the plugins kommit needs.
//!
//! Filters, in kube-scheduler's order, each with its message: NodeUnschedulable,
//! NodeName, TaintToleration (NoSchedule and NoExecute; a node whose Ready condition is
//! not True counts as tainted `node.kubernetes.io/not-ready` or `unreachable`, as the
//! node lifecycle controller would taint it), NodeAffinity (nodeSelector and required
//! node affinity), NodePorts, NodeResourcesFit (CPU, memory, pod count against
//! allocatable minus what bound, non-terminated pods request).
//!
//! Scores, compared in order: fewest pods of the same controller on the node (spread),
//! then most free CPU and memory after placing the pod (least allocated, with
//! kube-scheduler's non-zero defaults of 100m CPU / 200Mi for pods without requests),
//! then node name — so ties are deterministic.
//!
//! A pod that fits nowhere gets `PodScheduled=False` reason `Unschedulable` and a
//! `FailedScheduling` event with kube-scheduler's message, e.g.
//! `0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node
//! affinity/selector.` It is tried again on every run, that is whenever nodes or pods
//! change; the event is written again only when the reason changes.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodCondition, PodSpec, Taint, Toleration,
};

use crate::action::{Action, Reconciled};
use crate::context::Context;
use crate::events::{self, Involved, component, reason};
use crate::meta;
use crate::podutil;
use crate::quantity;
use crate::state::Observed;

/// The taint of nodes whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of nodes whose Ready condition is Unknown (lost).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of cordoned nodes.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

const DEFAULT_CPU_REQUEST: i64 = 100; // millicores, scoring only
const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024; // bytes, scoring only

/// What a pod asks of a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// CPU, millicores.
    pub cpu: i64,
    /// Memory, bytes.
    pub memory: i64,
}

/// A pod's effective requests: the sum over containers, or the largest init container if
/// that is more, plus overhead (Kubernetes' `PodRequests`). Unparseable quantities count 0.
pub fn pod_requests(spec: &PodSpec) -> Requests {
    let get = |rr: Option<&k8s_openapi::api::core::v1::ResourceRequirements>| {
        let req = rr.and_then(|r| r.requests.as_ref());
        Requests {
            cpu: req
                .and_then(|r| r.get("cpu"))
                .and_then(|q| quantity::cpu_millis(q).ok())
                .unwrap_or(0),
            memory: req
                .and_then(|r| r.get("memory"))
                .and_then(|q| quantity::value(q).ok())
                .unwrap_or(0),
        }
    };
    let mut sum = Requests::default();
    for c in &spec.containers {
        let r = get(c.resources.as_ref());
        sum.cpu += r.cpu;
        sum.memory += r.memory;
    }
    for c in spec.init_containers.iter().flatten() {
        let r = get(c.resources.as_ref());
        sum.cpu = sum.cpu.max(r.cpu);
        sum.memory = sum.memory.max(r.memory);
    }
    if let Some(o) = &spec.overhead {
        sum.cpu += o
            .get("cpu")
            .and_then(|q| quantity::cpu_millis(q).ok())
            .unwrap_or(0);
        sum.memory += o
            .get("memory")
            .and_then(|q| quantity::value(q).ok())
            .unwrap_or(0);
    }
    sum
}

fn non_zero(r: Requests, spec: &PodSpec) -> Requests {
    // kube-scheduler scores containers without requests as if they asked for defaults.
    let mut out = r;
    let no_cpu = spec.containers.iter().all(|c| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .is_none_or(|r| !r.contains_key("cpu"))
    });
    let no_mem = spec.containers.iter().all(|c| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .is_none_or(|r| !r.contains_key("memory"))
    });
    if no_cpu {
        out.cpu += DEFAULT_CPU_REQUEST * spec.containers.len() as i64;
    }
    if no_mem {
        out.memory += DEFAULT_MEMORY_REQUEST * spec.containers.len() as i64;
    }
    out
}

/// Allocatable CPU, memory and pod count of a node (pods default to 110 as the kubelet's).
pub fn allocatable(node: &Node) -> (Requests, i64) {
    let alloc = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
    let cpu = alloc
        .and_then(|a| a.get("cpu"))
        .and_then(|q| quantity::cpu_millis(q).ok())
        .unwrap_or(0);
    let memory = alloc
        .and_then(|a| a.get("memory"))
        .and_then(|q| quantity::value(q).ok())
        .unwrap_or(0);
    let pods = alloc
        .and_then(|a| a.get("pods"))
        .and_then(|q| quantity::value(q).ok())
        .unwrap_or(110);
    (Requests { cpu, memory }, pods)
}

/// The status of a node's Ready condition (`None` if it never reported one).
pub fn node_ready(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// A node's taints plus those its conditions imply (not-ready / unreachable, NoSchedule).
pub fn effective_taints(node: &Node) -> Vec<Taint> {
    let mut taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let implied = match node_ready(node) {
        Some("True") => None,
        Some("Unknown") => Some(TAINT_UNREACHABLE),
        _ => Some(TAINT_NOT_READY),
    };
    if let Some(key) = implied
        && !taints
            .iter()
            .any(|t| t.key == key && t.effect == "NoSchedule")
    {
        taints.push(Taint {
            key: key.into(),
            effect: "NoSchedule".into(),
            value: None,
            time_added: None,
        });
    }
    taints
}

/// Whether `toleration` tolerates `taint` (Kubernetes' `ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            // An empty key with Equal matches nothing but an empty-key taint.
            (!key.is_empty() || taint.key.is_empty())
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

fn label_expr_matches(e: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = e.values.as_deref().unwrap_or(&[]);
    match e.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if e.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node.metadata.labels.as_ref();
    let exprs_ok = term
        .match_expressions
        .iter()
        .flatten()
        .all(|e| label_expr_matches(e, labels.and_then(|l| l.get(&e.key)).map(String::as_str)));
    let fields_ok = term.match_fields.iter().flatten().all(|e| {
        let v = (e.key == "metadata.name").then(|| meta::name(&node.metadata));
        label_expr_matches(e, v)
    });
    let empty = term.match_expressions.as_ref().is_none_or(|v| v.is_empty())
        && term.match_fields.as_ref().is_none_or(|v| v.is_empty());
    !empty && exprs_ok && fields_ok
}

/// Whether a node satisfies the pod's nodeSelector and required node affinity.
pub fn node_affinity_matches(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.as_ref();
    if let Some(sel) = &spec.node_selector
        && !sel
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(r) => r.node_selector_terms.iter().any(|t| term_matches(t, node)),
        None => true,
    }
}

fn host_ports(spec: &PodSpec) -> Vec<(String, i32)> {
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            p.host_port
                .filter(|h| *h > 0)
                .map(|h| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), h))
        })
        .collect()
}

/// What is already placed on one node.
#[derive(Clone, Debug, Default)]
struct NodeUse {
    requested: Requests,
    scoring: Requests,
    pods: i64,
    ports: Vec<(String, i32)>,
    owners: HashMap<String, usize>,
}

impl NodeUse {
    fn add(&mut self, pod: &Pod) {
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        let r = pod_requests(spec);
        let s = non_zero(r, spec);
        self.requested.cpu += r.cpu;
        self.requested.memory += r.memory;
        self.scoring.cpu += s.cpu;
        self.scoring.memory += s.memory;
        self.pods += 1;
        self.ports.extend(host_ports(spec));
        if let Some(o) = meta::controller_of(&pod.metadata) {
            *self.owners.entry(o.uid.clone()).or_default() += 1;
        }
    }
}

/// Why one node cannot take a pod: kube-scheduler's reasons (possibly several from
/// NodeResourcesFit).
pub fn filter(pod: &Pod, node: &Node, used: &NodeUseView<'_>) -> Vec<String> {
    let Some(spec) = pod.spec.as_ref() else {
        return vec!["pod has no spec".into()];
    };
    let node_name = meta::name(&node.metadata);
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    // NodeUnschedulable.
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        let t = Taint {
            key: TAINT_UNSCHEDULABLE.into(),
            effect: "NoSchedule".into(),
            value: None,
            time_added: None,
        };
        if !tolerations.iter().any(|tol| tolerates(tol, &t)) {
            return vec!["node(s) were unschedulable".into()];
        }
    }
    // NodeName.
    if let Some(want) = spec.node_name.as_deref().filter(|n| !n.is_empty())
        && want != node_name
    {
        return vec!["node(s) didn't match the requested node name".into()];
    }
    // TaintToleration.
    for t in effective_taints(node) {
        if (t.effect == "NoSchedule" || t.effect == "NoExecute")
            && !tolerations.iter().any(|tol| tolerates(tol, &t))
        {
            return vec![format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            )];
        }
    }
    // NodeAffinity.
    if !node_affinity_matches(spec, node) {
        return vec!["node(s) didn't match Pod's node affinity/selector".into()];
    }
    // NodePorts.
    let want_ports = host_ports(spec);
    if want_ports.iter().any(|p| used.0.ports.contains(p)) {
        return vec!["node(s) didn't have free ports for the requested pod ports".into()];
    }
    // NodeResourcesFit.
    let (alloc, max_pods) = allocatable(node);
    let req = pod_requests(spec);
    let mut reasons = Vec::new();
    if used.0.pods + 1 > max_pods {
        reasons.push("Too many pods".to_string());
    }
    if req.cpu > 0 && used.0.requested.cpu + req.cpu > alloc.cpu {
        reasons.push("Insufficient cpu".to_string());
    }
    if req.memory > 0 && used.0.requested.memory + req.memory > alloc.memory {
        reasons.push("Insufficient memory".to_string());
    }
    reasons
}

/// Read-only view of a node's use, for [`filter`].
pub struct NodeUseView<'a>(&'a NodeUse);

fn least_allocated(node: &Node, used: &NodeUse, pod: &Requests) -> i64 {
    let (alloc, _) = allocatable(node);
    let score = |cap: i64, req: i64| {
        if cap <= 0 || req > cap {
            0
        } else {
            (cap - req) * 100 / cap
        }
    };
    (score(alloc.cpu, used.scoring.cpu + pod.cpu)
        + score(alloc.memory, used.scoring.memory + pod.memory))
        / 2
}

/// kube-scheduler's FitError message: `0/N nodes are available: <count> <reason>, ...`
/// with the reasons sorted as strings.
pub fn fit_error_message(nodes: usize, reasons: &BTreeMap<String, usize>) -> String {
    if nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!("0/{nodes} nodes are available: {}.", parts.join(", "))
}

fn is_pending_for_us(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    podutil::node_name(pod).is_none()
        && podutil::is_active(pod)
        && spec
            .scheduler_name
            .as_deref()
            .is_none_or(|s| s == component::SCHEDULER)
}

/// Binds every schedulable Pending pod; marks the rest Unschedulable.
pub fn schedule(ctx: &Context, observed: &Observed) -> Reconciled {
    let mut out = Reconciled::none();
    let mut nodes: Vec<&Node> = observed.nodes.iter().collect();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut usage: HashMap<&str, NodeUse> = nodes
        .iter()
        .map(|n| (meta::name(&n.metadata), NodeUse::default()))
        .collect();
    for p in observed.pods.iter().filter(|p| !podutil::is_terminal(p)) {
        if let Some(u) = podutil::node_name(p).and_then(|n| usage.get_mut(n)) {
            u.add(p);
        }
    }
    let mut pending: Vec<&Pod> = observed
        .pods
        .iter()
        .filter(|p| is_pending_for_us(p))
        .collect();
    pending.sort_by(|a, b| {
        let prio = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        prio(b)
            .cmp(&prio(a))
            .then_with(|| {
                let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b))
            })
            .then_with(|| a.metadata.namespace.cmp(&b.metadata.namespace))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    for pod in pending {
        let Some(spec) = pod.spec.as_ref() else {
            continue;
        };
        let (ns, name) = (meta::namespace(&pod.metadata), meta::name(&pod.metadata));
        let owner = meta::controller_of(&pod.metadata).map(|o| o.uid.clone());
        let req = non_zero(pod_requests(spec), spec);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut best: Option<(&Node, (usize, i64))> = None;
        for node in &nodes {
            let used = &usage[meta::name(&node.metadata)];
            let why = filter(pod, node, &NodeUseView(used));
            if !why.is_empty() {
                for r in why {
                    *reasons.entry(r).or_default() += 1;
                }
                continue;
            }
            let same_owner = owner
                .as_ref()
                .and_then(|o| used.owners.get(o))
                .copied()
                .unwrap_or(0);
            let score = (same_owner, least_allocated(node, used, &req));
            // Fewer siblings first, then more free; nodes are in name order so the first wins ties.
            let better = match &best {
                None => true,
                Some((_, (s, l))) => score.0 < *s || (score.0 == *s && score.1 > *l),
            };
            if better {
                best = Some((node, score));
            }
        }
        let involved = Involved {
            kind: "Pod",
            namespace: Some(ns),
            name,
            uid: pod.metadata.uid.as_deref(),
        };
        match best {
            Some((node, _)) => {
                let node_name = meta::name(&node.metadata).to_string();
                let mut bound = pod.clone();
                if let Some(s) = bound.spec.as_mut() {
                    s.node_name = Some(node_name.clone());
                }
                set_pod_condition(ctx, &mut bound, "PodScheduled", "True", None, None);
                if let Some(u) = usage.get_mut(node_name.as_str()) {
                    u.add(&bound);
                }
                out.actions.push(Action::Update(bound.into()));
                out.actions.push(events::normal(
                    ctx,
                    involved,
                    reason::SCHEDULED,
                    component::SCHEDULER,
                    format!("Successfully assigned {ns}/{name} to {node_name}"),
                ));
            }
            None => {
                let msg = fit_error_message(nodes.len(), &reasons);
                let current = podutil::condition(pod, "PodScheduled");
                let unchanged = current.is_some_and(|c| {
                    c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                        && c.message.as_deref() == Some(msg.as_str())
                });
                if unchanged {
                    continue;
                }
                let mut p = pod.clone();
                set_pod_condition(
                    ctx,
                    &mut p,
                    "PodScheduled",
                    "False",
                    Some("Unschedulable"),
                    Some(msg.clone()),
                );
                out.actions.push(Action::Update(p.into()));
                out.actions.push(events::warning(
                    ctx,
                    involved,
                    reason::FAILED_SCHEDULING,
                    component::SCHEDULER,
                    msg,
                ));
            }
        }
    }
    out
}

/// Sets a pod condition, keeping lastTransitionTime when the status does not change.
pub fn set_pod_condition(
    ctx: &Context,
    pod: &mut Pod,
    type_: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<String>,
) {
    let st = pod.status.get_or_insert_with(Default::default);
    let conds = st.conditions.get_or_insert_with(Vec::new);
    let now = ctx.now_time();
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(now.clone());
            }
            c.status = status.to_string();
            c.reason = reason.map(str::to_string);
            c.message = message;
            c.last_probe_time = None;
        }
        None => conds.push(PodCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.map(str::to_string),
            message,
            last_transition_time: Some(now),
            ..Default::default()
        }),
    }
}
