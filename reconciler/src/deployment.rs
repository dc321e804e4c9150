//! The Deployment controller: a Deployment from Git → ReplicaSets → (via the ReplicaSet
//! controller) Pods, rolled out as Kubernetes' deployment controller does.
//!
//! One call of [`reconcile`] is one `syncDeployment`: it finds the Deployment's
//! ReplicaSets (controller owner reference), decides which is new (template equal ignoring
//! `pod-template-hash`) and which are old, and then either scales (the Deployment's
//! replicas changed), or takes one rollout step:
//!
//! - **RollingUpdate**: scale the new ReplicaSet up to at most `replicas + maxSurge` pods
//!   in total; otherwise scale old ReplicaSets down (unhealthy replicas first, then oldest
//!   ReplicaSets first) while keeping at least `replicas - maxUnavailable` available.
//!   `maxSurge` rounds up, `maxUnavailable` rounds down; if both resolve to 0,
//!   `maxUnavailable` becomes 1. A template change mid-rollout (rollover) makes the
//!   previous new ReplicaSet an old one, scaled down with the others.
//! - **Recreate**: scale every old ReplicaSet to 0, wait until none of their pods runs,
//!   then create/scale the new one.
//! - A change of `replicas` mid-rollout is spread over the active ReplicaSets in
//!   proportion to their size (`deployment.kubernetes.io/max-replicas`), largest first.
//!
//! Status (replicas, updated, ready, available, unavailable, observedGeneration,
//! conditions Available and Progressing with `ProgressDeadlineExceeded`) is written to
//! the Deployment's status record; ReplicaSets beyond `revisionHistoryLimit` that are
//! scaled to zero are deleted once the rollout is complete.

use std::cmp::Ordering;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::SignedDuration;

use crate::action::{Action, ReconcileError, Reconciled};
use crate::context::Context;
use crate::events::{self, Involved, component, reason};
use crate::hash::{equal_ignore_hash, pod_template_hash};
use crate::meta::{self, DEPLOYMENT_REVISION, DESIRED_REPLICAS, MAX_REPLICAS, POD_TEMPLATE_HASH};
use crate::object::meta_key;
use crate::podutil;
use crate::state::Observed;

/// Progressing reason: a new ReplicaSet was created.
pub const NEW_RS_REASON: &str = "NewReplicaSetCreated";
/// Progressing reason: the Deployment's new ReplicaSet was found (first time noticed).
pub const FOUND_NEW_RS_REASON: &str = "FoundNewReplicaSet";
/// Progressing reason: the new ReplicaSet made progress.
pub const RS_UPDATED_REASON: &str = "ReplicaSetUpdated";
/// Progressing reason: the rollout completed.
pub const NEW_RS_AVAILABLE_REASON: &str = "NewReplicaSetAvailable";
/// Progressing reason: no progress within progressDeadlineSeconds.
pub const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";
/// Available reason: at least replicas - maxUnavailable available.
pub const MIN_AVAILABLE_REASON: &str = "MinimumReplicasAvailable";
/// Available reason: fewer than replicas - maxUnavailable available.
pub const MIN_UNAVAILABLE_REASON: &str = "MinimumReplicasUnavailable";

const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
const DEFAULT_PROGRESS_DEADLINE: i32 = 600;

/// Rollout strategy with resolved defaults.
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// Kill all old pods before creating new ones.
    Recreate,
    /// Replace pods gradually.
    RollingUpdate {
        /// Pods above `replicas` allowed during the rollout (rounded up from percent).
        max_surge: i32,
        /// Pods below `replicas` allowed unavailable (rounded down from percent).
        max_unavailable: i32,
    },
}

/// Resolves an int-or-percent against `total`, rounding up or down
/// (Kubernetes' `GetScaledValueFromIntOrPercent`).
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse().ok())
                .ok_or_else(|| {
                    format!("invalid value {s:?}: must be an integer or a percentage")
                })?;
            let scaled = pct * i64::from(total);
            let v = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(v).map_err(|_| format!("value {s:?} out of range"))
        }
    }
}

fn is_zero(v: &IntOrString) -> bool {
    match v {
        IntOrString::Int(i) => *i == 0,
        IntOrString::String(s) => s.trim_end_matches('%').trim().parse::<i64>() == Ok(0),
    }
}

/// `(maxSurge, maxUnavailable)` of a Deployment for `replicas` (Kubernetes'
/// `ResolveFenceposts`, plus the validation that both may not be zero).
pub fn strategy(d: &Deployment) -> Result<Strategy, ReconcileError> {
    let spec = d.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let st = spec.and_then(|s| s.strategy.as_ref());
    let type_ = st
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate");
    let invalid = |field: &str, message: String| ReconcileError::Invalid {
        object: format!(
            "Deployment {}/{}",
            meta::namespace(&d.metadata),
            meta::name(&d.metadata)
        ),
        field: field.to_string(),
        message,
    };
    match type_ {
        "Recreate" => Ok(Strategy::Recreate),
        "RollingUpdate" => {
            let ru = st.and_then(|s| s.rolling_update.as_ref());
            let pct25 = IntOrString::String("25%".into());
            let surge = ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&pct25);
            let unavail = ru
                .and_then(|r| r.max_unavailable.as_ref())
                .unwrap_or(&pct25);
            if is_zero(surge) && is_zero(unavail) {
                return Err(invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    "may not be 0 when `maxSurge` is 0".into(),
                ));
            }
            let max_surge = scaled_value(surge, replicas, true)
                .map_err(|m| invalid("spec.strategy.rollingUpdate.maxSurge", m))?;
            let mut max_unavailable = scaled_value(unavail, replicas, false)
                .map_err(|m| invalid("spec.strategy.rollingUpdate.maxUnavailable", m))?;
            if max_surge < 0 || max_unavailable < 0 {
                return Err(invalid(
                    "spec.strategy.rollingUpdate",
                    "must not be negative".into(),
                ));
            }
            if max_surge == 0 && max_unavailable == 0 {
                // Rounding made both zero: Kubernetes allows one unavailable.
                max_unavailable = 1;
            }
            Ok(Strategy::RollingUpdate {
                max_surge,
                max_unavailable,
            })
        }
        other => Err(invalid(
            "spec.strategy.type",
            format!(
                "unsupported value {other:?}: supported values are \"Recreate\", \"RollingUpdate\""
            ),
        )),
    }
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn set_rs_replicas(rs: &mut ReplicaSet, n: i32) {
    rs.spec.get_or_insert_with(Default::default).replicas = Some(n);
}

fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

fn rs_revision(rs: &ReplicaSet) -> i64 {
    meta::annotation(&rs.metadata, DEPLOYMENT_REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rs_template(rs: &ReplicaSet) -> Option<&PodTemplateSpec> {
    rs.spec.as_ref()?.template.as_ref()
}

fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    t(a).cmp(&t(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// The condition of `type_` in a status.
pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|c| c.type_ != type_);
        if c.is_empty() {
            status.conditions = None;
        }
    }
}

/// Kubernetes' `SetDeploymentCondition`: no change if status and reason are the same;
/// keeps lastTransitionTime when only the reason changes.
fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    if let Some(cur) = condition(status, &cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(status, &cond.type_);
    status.conditions.get_or_insert_with(Vec::new).push(cond);
}

fn new_condition(
    ctx: &Context,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: Some(ctx.now_time()),
        last_transition_time: Some(ctx.now_time()),
    }
}

struct Rs {
    obj: ReplicaSet,
    original: Option<ReplicaSet>,
}

struct Sync<'a> {
    ctx: &'a Context,
    d: &'a Deployment,
    revision: Option<&'a str>,
    name: String,
    ns: String,
    uid: String,
    replicas: i32,
    strategy: Strategy,
    min_ready: i32,
    progress_deadline: Option<i32>,
    history_limit: i32,
    generation: i64,
    template: PodTemplateSpec,
    selector: LabelSelector,
    /// `d.Status` as the controller sees it (read from the record, updated as we go).
    status: DeploymentStatus,
    /// The revision annotation of the Deployment.
    deploy_revision: Option<String>,
    record: Option<&'a Deployment>,
    /// The status to write (computed by the last status step).
    status_out: Option<DeploymentStatus>,
    rss: Vec<Rs>,
    deleted: Vec<usize>,
    /// Events, each with the index of the ReplicaSet whose write it reports.
    events: Vec<(usize, Action)>,
    observed: &'a Observed,
}

/// Runs one sync of Deployment `d` (desired, from Git) against observed state.
/// `revision` is the applied Git revision, recorded on ReplicaSets it creates.
pub fn reconcile(
    ctx: &Context,
    d: &Deployment,
    observed: &Observed,
    revision: Option<&str>,
) -> Result<Reconciled, ReconcileError> {
    let mut s = Sync::new(ctx, d, observed, revision)?;
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    if paused || s.is_scaling_event() {
        s.sync_scale(paused);
    } else {
        match s.strategy {
            Strategy::Recreate => s.rollout_recreate(),
            Strategy::RollingUpdate { .. } => s.rollout_rolling()?,
        }
    }
    Ok(s.finish())
}

impl<'a> Sync<'a> {
    fn new(
        ctx: &'a Context,
        d: &'a Deployment,
        observed: &'a Observed,
        revision: Option<&'a str>,
    ) -> Result<Self, ReconcileError> {
        let name = meta::name(&d.metadata).to_string();
        let ns = meta::namespace(&d.metadata).to_string();
        let invalid = |field: &str, message: &str| ReconcileError::Invalid {
            object: format!("Deployment {ns}/{name}"),
            field: field.into(),
            message: message.into(),
        };
        let spec = d.spec.as_ref().ok_or_else(|| invalid("spec", "required"))?;
        if meta::selector_is_empty(&spec.selector) {
            return Err(invalid(
                "spec.selector",
                "empty selector is invalid for deployment",
            ));
        }
        let uid = meta::desired_uid("Deployment", &d.metadata);
        let record = observed.deployment_status(&ns, &name);
        let status = record.and_then(|r| r.status.clone()).unwrap_or_default();
        let deploy_revision = record
            .and_then(|r| meta::annotation(&r.metadata, DEPLOYMENT_REVISION))
            .map(str::to_string);
        let mut rss: Vec<Rs> = observed
            .replica_sets
            .iter()
            .filter(|rs| {
                meta::namespace(&rs.metadata) == ns
                    && meta::is_controlled_by(&rs.metadata, "Deployment", &name, &uid)
            })
            .map(|rs| Rs {
                obj: rs.clone(),
                original: Some(rs.clone()),
            })
            .collect();
        rss.sort_by(|a, b| by_creation(&a.obj, &b.obj));
        Ok(Sync {
            ctx,
            d,
            revision,
            replicas: spec.replicas.unwrap_or(1),
            strategy: strategy(d)?,
            min_ready: spec.min_ready_seconds.unwrap_or(0),
            progress_deadline: Some(
                spec.progress_deadline_seconds
                    .unwrap_or(DEFAULT_PROGRESS_DEADLINE),
            ),
            history_limit: spec
                .revision_history_limit
                .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT),
            generation: d.metadata.generation.unwrap_or(1),
            template: spec.template.clone(),
            selector: spec.selector.clone(),
            status,
            deploy_revision,
            record,
            status_out: None,
            rss,
            deleted: Vec::new(),
            events: Vec::new(),
            observed,
            name,
            ns,
            uid,
        })
    }

    fn max_surge(&self) -> i32 {
        match self.strategy {
            Strategy::RollingUpdate { max_surge, .. } => max_surge,
            Strategy::Recreate => 0,
        }
    }

    /// Kubernetes' `MaxUnavailable`: 0 for Recreate or no replicas, at most `replicas`.
    fn max_unavailable(&self) -> i32 {
        match self.strategy {
            Strategy::RollingUpdate {
                max_unavailable, ..
            } if self.replicas > 0 => max_unavailable.min(self.replicas),
            _ => 0,
        }
    }

    fn involved(&self) -> Involved<'_> {
        Involved {
            kind: "Deployment",
            namespace: Some(&self.ns),
            name: &self.name,
            uid: Some(&self.uid),
        }
    }

    /// Splits into (new, old) indexes. The new ReplicaSet is the oldest one whose template
    /// equals the Deployment's ignoring the hash label.
    fn split(&self) -> (Option<usize>, Vec<usize>) {
        let mut new = None;
        let mut old = Vec::new();
        for (i, rs) in self.rss.iter().enumerate() {
            if self.deleted.contains(&i) {
                continue;
            }
            let same = rs_template(&rs.obj).is_some_and(|t| equal_ignore_hash(t, &self.template));
            if same && new.is_none() {
                new = Some(i);
            } else {
                old.push(i);
            }
        }
        (new, old)
    }

    fn active(&self, idx: &[usize]) -> Vec<usize> {
        idx.iter()
            .copied()
            .filter(|&i| rs_replicas(&self.rss[i].obj) > 0)
            .collect()
    }

    fn sum_spec(&self, idx: impl IntoIterator<Item = usize>) -> i32 {
        idx.into_iter().map(|i| rs_replicas(&self.rss[i].obj)).sum()
    }

    fn all(&self, new: Option<usize>, old: &[usize]) -> Vec<usize> {
        let mut all = old.to_vec();
        all.extend(new);
        all
    }

    /// Kubernetes' `getAllReplicaSetsAndSyncRevision`: syncs the new ReplicaSet's revision
    /// and annotations, creating it when `create` and it does not exist.
    fn sync_revision(&mut self, create: bool) -> (Option<usize>, Vec<usize>) {
        let (new, old) = self.split();
        let max_old = old
            .iter()
            .map(|&i| rs_revision(&self.rss[i].obj))
            .max()
            .unwrap_or(0);
        let new_revision = max_old + 1;
        if let Some(n) = new {
            let min_ready = self.min_ready;
            let annotations_updated = self.set_new_rs_annotations(n, new_revision, true);
            let spec = self.rss[n].obj.spec.get_or_insert_with(Default::default);
            if annotations_updated || spec.min_ready_seconds.unwrap_or(0) != min_ready {
                spec.min_ready_seconds = Some(min_ready);
            }
            self.deploy_revision = meta::annotation(&self.rss[n].obj.metadata, DEPLOYMENT_REVISION)
                .map(str::to_string);
            if self.progress_deadline.is_some() && condition(&self.status, "Progressing").is_none()
            {
                let msg = format!(
                    "Found new replica set {:?}",
                    meta::name(&self.rss[n].obj.metadata)
                );
                let c = new_condition(self.ctx, "Progressing", "True", FOUND_NEW_RS_REASON, msg);
                set_condition(&mut self.status, c);
            }
            return (Some(n), old);
        }
        if !create {
            return (None, old);
        }
        // Create the new ReplicaSet; a name taken by a ReplicaSet with another template is
        // a hash collision: count it in status (the next hash differs) and try again.
        let hash = pod_template_hash(&self.template, self.status.collision_count);
        let rs_name = format!("{}-{}", self.name, hash);
        if let Some(existing) = self.observed.replica_sets.iter().find(|rs| {
            meta::namespace(&rs.metadata) == self.ns && meta::name(&rs.metadata) == rs_name
        }) {
            let ours =
                meta::is_controlled_by(&existing.metadata, "Deployment", &self.name, &self.uid);
            let same = rs_template(existing).is_some_and(|t| equal_ignore_hash(t, &self.template));
            if !(ours && same) {
                self.status.collision_count = Some(self.status.collision_count.unwrap_or(0) + 1);
            }
            return (None, old);
        }
        let mut template = self.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = self.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(rs_name.clone()),
                namespace: Some(self.ns.clone()),
                uid: Some(self.ctx.new_uid()),
                generation: Some(1),
                creation_timestamp: Some(self.ctx.now_time()),
                labels,
                owner_references: Some(vec![meta::controller_ref(
                    "apps/v1",
                    "Deployment",
                    &self.name,
                    &self.uid,
                )]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: Some(self.min_ready),
                selector,
                template: Some(template),
            }),
            status: None,
        };
        self.rss.push(Rs {
            obj: rs,
            original: None,
        });
        let n = self.rss.len() - 1;
        let all = self.all(Some(n), &old);
        let count = self.new_rs_new_replicas(&all, n);
        set_rs_replicas(&mut self.rss[n].obj, count);
        self.set_new_rs_annotations(n, new_revision, false);
        if count > 0 {
            let msg = format!("Scaled up replica set {rs_name} from 0 to {count}");
            let ev = events::normal(
                self.ctx,
                self.involved(),
                reason::SCALING_REPLICA_SET,
                component::DEPLOYMENT,
                msg,
            );
            self.events.push((n, ev));
        }
        self.deploy_revision = Some(new_revision.to_string());
        if self.progress_deadline.is_some() {
            let msg = format!("Created new replica set {rs_name:?}");
            let c = new_condition(self.ctx, "Progressing", "True", NEW_RS_REASON, msg);
            set_condition(&mut self.status, c);
        }
        (Some(n), old)
    }

    /// Kubernetes' `SetNewReplicaSetAnnotations`: copies the Deployment's annotations,
    /// raises the revision, sets the replica annotations of a new ReplicaSet.
    fn set_new_rs_annotations(&mut self, n: usize, new_revision: i64, exists: bool) -> bool {
        let desired = self.replicas;
        let max = self.replicas + self.max_surge();
        let revision = self.revision;
        let copied: Vec<(String, String)> = self
            .d
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| {
                !k.starts_with("deployment.kubernetes.io/")
                    && k.as_str() != "kubectl.kubernetes.io/last-applied-configuration"
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let m = &mut self.rss[n].obj.metadata;
        let mut changed = false;
        for (k, v) in copied {
            if meta::annotation(m, &k) != Some(v.as_str()) {
                meta::set_annotation(m, &k, v);
                changed = true;
            }
        }
        let old_revision: i64 = meta::annotation(m, DEPLOYMENT_REVISION)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if old_revision < new_revision {
            meta::set_annotation(m, DEPLOYMENT_REVISION, new_revision.to_string());
            if let Some(r) = revision {
                meta::set_annotation(m, meta::REVISION_ANNOTATION, r);
            }
            changed = true;
        }
        if !exists {
            meta::set_annotation(m, DESIRED_REPLICAS, desired.to_string());
            meta::set_annotation(m, MAX_REPLICAS, max.to_string());
            changed = true;
        }
        changed
    }

    /// Kubernetes' `NewRSNewReplicas`.
    fn new_rs_new_replicas(&self, all: &[usize], new: usize) -> i32 {
        let cur = rs_replicas(&self.rss[new].obj);
        match self.strategy {
            Strategy::Recreate => self.replicas,
            Strategy::RollingUpdate { .. } => {
                let current = self.sum_spec(all.iter().copied());
                let max_total = self.replicas + self.max_surge();
                if current >= max_total {
                    return cur;
                }
                let up = (max_total - current).min(self.replicas - cur);
                cur + up.max(0)
            }
        }
    }

    /// Kubernetes' `scaleReplicaSet`: sets size and replica annotations, records an event.
    fn scale(&mut self, i: usize, to: i32) -> bool {
        let desired = self.replicas.to_string();
        let max = (self.replicas + self.max_surge()).to_string();
        let rs = &mut self.rss[i].obj;
        let from = rs_replicas(rs);
        let size = from != to;
        let ann = meta::annotation(&rs.metadata, DESIRED_REPLICAS) != Some(desired.as_str())
            || meta::annotation(&rs.metadata, MAX_REPLICAS) != Some(max.as_str());
        if size || ann {
            set_rs_replicas(rs, to);
            meta::set_annotation(&mut rs.metadata, DESIRED_REPLICAS, desired);
            meta::set_annotation(&mut rs.metadata, MAX_REPLICAS, max);
        }
        if size {
            let op = if to > from { "up" } else { "down" };
            let msg = format!(
                "Scaled {op} replica set {} from {from} to {to}",
                meta::name(&rs.metadata)
            );
            let ev = events::normal(
                self.ctx,
                self.involved(),
                reason::SCALING_REPLICA_SET,
                component::DEPLOYMENT,
                msg,
            );
            self.events.push((i, ev));
        }
        size
    }

    /// Kubernetes' `isScalingEvent`: an active ReplicaSet was sized for another replicas.
    fn is_scaling_event(&mut self) -> bool {
        let (new, old) = self.split();
        let all = self.all(new, &old);
        self.active(&all).iter().any(|&i| {
            meta::annotation(&self.rss[i].obj.metadata, DESIRED_REPLICAS)
                .and_then(|v| v.parse::<i32>().ok())
                .is_some_and(|v| v != self.replicas)
        })
    }

    /// Kubernetes' `sync`: scale (proportionally during a rolling update), clean up when paused.
    fn sync_scale(&mut self, paused: bool) {
        let (new, old) = self.sync_revision(false);
        self.scale_all(new, &old);
        if paused {
            self.cleanup(&old);
        }
        self.calculate_status(new, &old);
    }

    /// Kubernetes' `scale`.
    fn scale_all(&mut self, new: Option<usize>, old: &[usize]) {
        // One active (or else the newest) ReplicaSet gets the whole count.
        let all = self.all(new, old);
        let active = self.active(&all);
        let active_or_latest = match active.len() {
            1 => Some(active[0]),
            0 => new.or_else(|| {
                old.iter()
                    .copied()
                    .max_by(|&a, &b| by_creation(&self.rss[a].obj, &self.rss[b].obj))
            }),
            _ => None,
        };
        if let Some(i) = active_or_latest {
            if rs_replicas(&self.rss[i].obj) != self.replicas {
                self.scale(i, self.replicas);
            }
            return;
        }
        // A saturated new ReplicaSet: old ones go to zero.
        if let Some(n) = new {
            let rs = &self.rss[n].obj;
            if rs_replicas(rs) == self.replicas && rs_available(rs) >= self.replicas {
                for i in self.active(old) {
                    self.scale(i, 0);
                }
                return;
            }
        }
        if !matches!(self.strategy, Strategy::RollingUpdate { .. }) {
            return;
        }
        let mut rss = active;
        let total = self.sum_spec(rss.iter().copied());
        let allowed = if self.replicas > 0 {
            self.replicas + self.max_surge()
        } else {
            0
        };
        let to_add = allowed - total;
        let newer = |a: &ReplicaSet, b: &ReplicaSet| by_creation(b, a);
        if to_add > 0 {
            // Larger first; equal sizes: newer first.
            rss.sort_by(|&a, &b| {
                let (ra, rb) = (&self.rss[a].obj, &self.rss[b].obj);
                rs_replicas(rb)
                    .cmp(&rs_replicas(ra))
                    .then_with(|| newer(ra, rb))
            });
        } else if to_add < 0 {
            // Larger first; equal sizes: older first.
            rss.sort_by(|&a, &b| {
                let (ra, rb) = (&self.rss[a].obj, &self.rss[b].obj);
                rs_replicas(rb)
                    .cmp(&rs_replicas(ra))
                    .then_with(|| by_creation(ra, rb))
            });
        }
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::with_capacity(rss.len());
        for &i in &rss {
            let rs = &self.rss[i].obj;
            let cur = rs_replicas(rs);
            if to_add != 0 {
                let p = self.proportion(rs, to_add, added);
                sizes.push(cur + p);
                added += p;
            } else {
                sizes.push(cur);
            }
        }
        if let Some(first) = sizes.first_mut()
            && to_add != 0
        {
            *first = (*first + to_add - added).max(0);
        }
        for (k, &i) in rss.iter().enumerate() {
            self.scale(i, sizes[k]);
        }
    }

    /// Kubernetes' `GetProportion`.
    fn proportion(&self, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
        let cur = rs_replicas(rs);
        if cur == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = if self.replicas == 0 {
            -cur
        } else {
            let max_now = self.replicas + self.max_surge();
            let before = meta::annotation(&rs.metadata, MAX_REPLICAS)
                .and_then(|v| v.parse::<i32>().ok())
                .filter(|v| *v != 0)
                .unwrap_or(self.status.replicas.unwrap_or(0));
            if before == 0 {
                0
            } else {
                let size = f64::from(cur) * f64::from(max_now) / f64::from(before);
                size.round() as i32 - cur
            }
        };
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// Kubernetes' `rolloutRolling`: one step.
    fn rollout_rolling(&mut self) -> Result<(), ReconcileError> {
        let (new, old) = self.sync_revision(true);
        let Some(n) = new else {
            // Hash collision recorded in status; next sync uses the new hash.
            self.sync_rollout_status(None, &old);
            return Ok(());
        };
        let all = self.all(new, &old);
        if self.reconcile_new(&all, n) {
            self.sync_rollout_status(new, &old);
            return Ok(());
        }
        let active_old = self.active(&old);
        if self.reconcile_old(&all, &active_old, n) {
            self.sync_rollout_status(new, &old);
            return Ok(());
        }
        if self.complete(&self.status.clone()) {
            self.cleanup(&old);
        }
        self.sync_rollout_status(new, &old);
        Ok(())
    }

    /// Kubernetes' `reconcileNewReplicaSet`.
    fn reconcile_new(&mut self, all: &[usize], n: usize) -> bool {
        let cur = rs_replicas(&self.rss[n].obj);
        if cur == self.replicas {
            return false;
        }
        if cur > self.replicas {
            return self.scale(n, self.replicas);
        }
        let to = self.new_rs_new_replicas(all, n);
        self.scale(n, to)
    }

    /// Kubernetes' `reconcileOldReplicaSets`.
    fn reconcile_old(&mut self, all: &[usize], old: &[usize], n: usize) -> bool {
        let old_count = self.sum_spec(old.iter().copied());
        if old_count == 0 {
            return false;
        }
        let all_count = self.sum_spec(all.iter().copied());
        let min_available = self.replicas - self.max_unavailable();
        let new_rs = &self.rss[n].obj;
        let new_unavailable = rs_replicas(new_rs) - rs_available(new_rs);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        // Unhealthy replicas of old ReplicaSets go first (they count for nothing).
        let mut old_sorted = old.to_vec();
        old_sorted.sort_by(|&a, &b| by_creation(&self.rss[a].obj, &self.rss[b].obj));
        let mut cleaned = 0;
        for &i in &old_sorted {
            if cleaned >= max_scaled_down {
                break;
            }
            let rs = &self.rss[i].obj;
            let (spec, avail) = (rs_replicas(rs), rs_available(rs));
            if spec == 0 || spec == avail {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(spec - avail);
            self.scale(i, spec - down);
            cleaned += down;
        }
        // Then available ones, oldest ReplicaSet first, keeping minAvailable.
        let available: i32 = all.iter().map(|&i| rs_available(&self.rss[i].obj)).sum();
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for &i in &old_sorted {
                if scaled >= total {
                    break;
                }
                let spec = rs_replicas(&self.rss[i].obj);
                if spec == 0 {
                    continue;
                }
                let down = spec.min(total - scaled);
                self.scale(i, spec - down);
                scaled += down;
            }
        }
        cleaned + scaled > 0
    }

    /// Kubernetes' `rolloutRecreate`: one step.
    fn rollout_recreate(&mut self) {
        let (mut new, mut old) = self.sync_revision(false);
        let mut scaled_down = false;
        for i in self.active(&old) {
            if rs_replicas(&self.rss[i].obj) != 0 {
                self.scale(i, 0);
                scaled_down = true;
            }
        }
        if scaled_down || self.old_pods_running(new, &old) {
            self.sync_rollout_status(new, &old);
            return;
        }
        if new.is_none() {
            (new, old) = self.sync_revision(true);
        }
        if let Some(n) = new
            && rs_replicas(&self.rss[n].obj) != self.replicas
        {
            self.scale(n, self.replicas);
        }
        if self.complete(&self.status.clone()) {
            self.cleanup(&old);
        }
        self.sync_rollout_status(new, &old);
    }

    /// Kubernetes' `oldPodsRunning`.
    fn old_pods_running(&self, new: Option<usize>, old: &[usize]) -> bool {
        if old
            .iter()
            .map(|&i| rs_status_replicas(&self.rss[i].obj))
            .sum::<i32>()
            > 0
        {
            return true;
        }
        self.rss.iter().enumerate().any(|(i, rs)| {
            Some(i) != new
                && rs.obj.metadata.uid.as_deref().is_some_and(|uid| {
                    self.observed
                        .pods_controlled_by(&self.ns, uid)
                        .any(|p| !podutil::is_terminal(p))
                })
        })
    }

    /// Kubernetes' `cleanupDeployment`: deletes the oldest old ReplicaSets beyond
    /// revisionHistoryLimit that have no replicas.
    fn cleanup(&mut self, old: &[usize]) {
        let mut cleanable: Vec<usize> = old
            .iter()
            .copied()
            .filter(|&i| self.rss[i].obj.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = cleanable.len() as i64 - i64::from(self.history_limit.max(0));
        if diff <= 0 {
            return;
        }
        cleanable.sort_by(|&a, &b| {
            let (ra, rb) = (&self.rss[a].obj, &self.rss[b].obj);
            rs_revision(ra)
                .cmp(&rs_revision(rb))
                .then_with(|| by_creation(ra, rb))
        });
        for &i in cleanable.iter().take(diff as usize) {
            let rs = &self.rss[i].obj;
            let observed_gen = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_status_replicas(rs) != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed_gen
            {
                continue;
            }
            self.deleted.push(i);
        }
    }

    /// Kubernetes' `DeploymentComplete`.
    fn complete(&self, st: &DeploymentStatus) -> bool {
        st.updated_replicas.unwrap_or(0) == self.replicas
            && st.replicas.unwrap_or(0) == self.replicas
            && st.available_replicas.unwrap_or(0) == self.replicas
            && st.observed_generation.unwrap_or(0) >= self.generation
    }

    /// Kubernetes' `calculateStatus`, with its Available condition.
    fn calculate_status(&mut self, new: Option<usize>, old: &[usize]) -> DeploymentStatus {
        let all = self.all(new, old);
        let available: i32 = all.iter().map(|&i| rs_available(&self.rss[i].obj)).sum();
        let total = self.sum_spec(all.iter().copied());
        let mut st = DeploymentStatus {
            observed_generation: Some(self.generation),
            replicas: Some(
                all.iter()
                    .map(|&i| rs_status_replicas(&self.rss[i].obj))
                    .sum(),
            ),
            updated_replicas: Some(
                new.map(|n| rs_status_replicas(&self.rss[n].obj))
                    .unwrap_or(0),
            ),
            ready_replicas: Some(all.iter().map(|&i| rs_ready(&self.rss[i].obj)).sum()),
            available_replicas: Some(available),
            unavailable_replicas: Some((total - available).max(0)),
            collision_count: self.status.collision_count,
            conditions: self.status.conditions.clone(),
            terminating_replicas: None,
        };
        let cond = if available >= self.replicas - self.max_unavailable() {
            new_condition(
                self.ctx,
                "Available",
                "True",
                MIN_AVAILABLE_REASON,
                "Deployment has minimum availability.".into(),
            )
        } else {
            new_condition(
                self.ctx,
                "Available",
                "False",
                MIN_UNAVAILABLE_REASON,
                "Deployment does not have minimum availability.".into(),
            )
        };
        set_condition(&mut st, cond);
        self.status_out = Some(st.clone());
        st
    }

    /// Kubernetes' `syncRolloutStatus`: status plus the Progressing condition.
    fn sync_rollout_status(&mut self, new: Option<usize>, old: &[usize]) {
        let mut st = self.calculate_status(new, old);
        if self.progress_deadline.is_none() {
            remove_condition(&mut st, "Progressing");
        }
        let current = condition(&self.status, "Progressing").cloned();
        let is_complete = st.replicas == st.updated_replicas
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE_REASON));
        let new_name = new.map(|n| meta::name(&self.rss[n].obj.metadata).to_string());
        if self.progress_deadline.is_some() && !is_complete {
            if self.complete(&st) {
                let msg = match &new_name {
                    Some(n) => format!("ReplicaSet {n:?} has successfully progressed."),
                    None => format!("Deployment {:?} has successfully progressed.", self.name),
                };
                set_condition(
                    &mut st,
                    new_condition(
                        self.ctx,
                        "Progressing",
                        "True",
                        NEW_RS_AVAILABLE_REASON,
                        msg,
                    ),
                );
            } else if self.progressing(&st) {
                let msg = match &new_name {
                    Some(n) => format!("ReplicaSet {n:?} is progressing."),
                    None => format!("Deployment {:?} is progressing.", self.name),
                };
                let mut c = new_condition(self.ctx, "Progressing", "True", RS_UPDATED_REASON, msg);
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut st, "Progressing");
                }
                // Always refresh lastUpdateTime on progress (not via set_condition).
                st.conditions.get_or_insert_with(Vec::new).push(c);
            } else if self.timed_out(&st) {
                let msg = match &new_name {
                    Some(n) => format!("ReplicaSet {n:?} has timed out progressing."),
                    None => format!("Deployment {:?} has timed out progressing.", self.name),
                };
                set_condition(
                    &mut st,
                    new_condition(self.ctx, "Progressing", "False", TIMED_OUT_REASON, msg),
                );
            }
        }
        self.status_out = Some(st);
    }

    /// Kubernetes' `DeploymentProgressing`.
    fn progressing(&self, st: &DeploymentStatus) -> bool {
        let old = &self.status;
        let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
        let new_old = st.replicas.unwrap_or(0) - st.updated_replicas.unwrap_or(0);
        st.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
            || new_old < old_old
            || st.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
            || st.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
    }

    /// Kubernetes' `DeploymentTimedOut`.
    fn timed_out(&self, st: &DeploymentStatus) -> bool {
        let Some(deadline) = self.progress_deadline else {
            return false;
        };
        let Some(c) = condition(st, "Progressing") else {
            return false;
        };
        match c.reason.as_deref() {
            Some(NEW_RS_AVAILABLE_REASON) => false,
            Some(TIMED_OUT_REASON) => true,
            _ => c.last_update_time.as_ref().is_some_and(|from| {
                self.ctx.since(from.0) > SignedDuration::from_secs(i64::from(deadline))
            }),
        }
    }

    /// Turns the working copies into actions.
    fn finish(mut self) -> Reconciled {
        let mut out = Reconciled::none();
        let now = self.ctx.now_time();
        for (i, rs) in self.rss.iter_mut().enumerate() {
            if self.deleted.contains(&i) {
                if let Ok(key) = meta_key("ReplicaSet", &rs.obj.metadata) {
                    out.actions.push(Action::Delete {
                        key,
                        mod_revision: crate::object::mod_revision(&rs.obj.metadata),
                    });
                }
                continue;
            }
            match &rs.original {
                None => out.actions.push(Action::Create(rs.obj.clone().into())),
                Some(orig) if *orig != rs.obj => {
                    if orig.spec != rs.obj.spec {
                        rs.obj.metadata.generation =
                            Some(orig.metadata.generation.unwrap_or(1) + 1);
                    }
                    out.actions.push(Action::Update(rs.obj.clone().into()));
                }
                Some(_) => {}
            }
            // Each event right after the write it reports (see `Action`).
            out.actions.extend(
                self.events
                    .iter()
                    .filter(|(j, _)| *j == i)
                    .map(|(_, e)| e.clone()),
            );
        }
        let status = self
            .status_out
            .take()
            .unwrap_or_else(|| self.status.clone());
        let mut record = ObjectMeta {
            name: Some(self.name.clone()),
            namespace: Some(self.ns.clone()),
            uid: Some(self.uid.clone()),
            generation: Some(self.generation),
            resource_version: self
                .record
                .and_then(|r| r.metadata.resource_version.clone()),
            creation_timestamp: self
                .record
                .and_then(|r| r.metadata.creation_timestamp.clone())
                .or(Some(now)),
            ..Default::default()
        };
        if let Some(r) = &self.deploy_revision {
            meta::set_annotation(&mut record, DEPLOYMENT_REVISION, r.clone());
        }
        if let Some(r) = self.revision {
            meta::set_annotation(&mut record, meta::REVISION_ANNOTATION, r);
        }
        let changed = match self.record {
            None => true,
            Some(r) => {
                r.status.as_ref() != Some(&status) || r.metadata.annotations != record.annotations
            }
        };
        // Check the deadline again when it would pass.
        if let (Some(deadline), Some(c)) =
            (self.progress_deadline, condition(&status, "Progressing"))
            && c.status == "True"
            && c.reason.as_deref() != Some(NEW_RS_AVAILABLE_REASON)
            && let Some(from) = &c.last_update_time
        {
            let left = SignedDuration::from_secs(i64::from(deadline)) - self.ctx.since(from.0);
            let secs = left.as_secs().max(0) as u64 + 1;
            out.requeue_after(Duration::from_secs(secs));
        }
        if changed {
            out.actions.push(Action::WriteStatus(
                Deployment {
                    metadata: record,
                    spec: None,
                    status: Some(status),
                }
                .into(),
            ));
        }
        out
    }
}
