//! Rollout records: what became of each commit the cluster saw.
//!
//! Two parts, both pure:
//!
//! - [`assess`]: desired state at a revision and observed state → per-object progress and
//!   health ([`Assessment`]): Deployments (updated / ready / available replicas of the new
//!   ReplicaSet vs desired, old pods left), bare Pods, Jobs and DaemonSets, whether the
//!   cluster has converged, and why the rollout failed if it did.
//! - [`CommitRecord`]: the record of one commit (a `kommit.dev/v1` `Commit` object kept in
//!   the cache under [`record_key`]), with its life as a state machine: a commit is
//!   [`RolloutState::Rejected`] (validation errors) or [`RolloutState::Progressing`]
//!   until [`CommitRecord::observe`] finds it [`RolloutState::Converged`] or
//!   [`RolloutState::Failed`], or [`CommitRecord::supersede`] ends it because a newer
//!   commit was applied. The last three and Rejected are final.
//!
//! A rollout fails when a Deployment reports `Progressing=False` with
//! `ProgressDeadlineExceeded` (set by the Deployment controller after
//! `progressDeadlineSeconds` without progress), when a pod of the revision crash-loops
//! (a container waiting in `CrashLoopBackOff` after [`CRASH_LOOP_RESTARTS`] restarts),
//! when a Job of the revision fails, or when a bare Pod of the revision ends `Failed`.
//! Conditions that date from before the rollout started are not held against it.
//!
//! A rollout is Converged once the revision has stayed converged for
//! [`SETTLE_SECONDS`] (`status.readySince` records since when): without it a pod that
//! exits right after starting would count as ready, and a final record could never
//! report its crash loop.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::context::truncate_seconds;
use crate::state::{Desired, Observed};
use crate::{hash, job, meta, podutil};

/// `apiVersion` of a commit record.
pub const API_VERSION: &str = "kommit.dev/v1";
/// `kind` of a commit record.
pub const KIND: &str = "Commit";
/// Key prefix of commit records in the cache (`/registry/commits/<sha>`).
pub const RECORD_PREFIX: &str = "/registry/commits/";
/// Label holding the record's state, for `kubectl get commits -l kommit.dev/state=Failed`.
pub const STATE_LABEL: &str = "kommit.dev/state";
/// Restarts after which a container waiting in `CrashLoopBackOff` fails the rollout.
pub const CRASH_LOOP_RESTARTS: i32 = 3;
/// Seconds the revision must stay converged before its record says Converged: a pod
/// that starts, counts as ready and exits at once is caught here, not after the record
/// became final.
pub const SETTLE_SECONDS: i64 = 3;

/// The cache key of the record of `commit` (full hex id).
pub fn record_key(commit: &str) -> String {
    format!("{RECORD_PREFIX}{commit}")
}

/// Where a commit's rollout stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutState {
    /// Applied; the cluster is converging on it.
    #[default]
    Progressing,
    /// The cluster runs it: every workload of the revision is updated and ready.
    Converged,
    /// The rollout cannot finish (see the record's reason).
    Failed,
    /// A newer commit was applied before this one's rollout ended.
    Superseded,
    /// Validation failed: never applied.
    Rejected,
}

impl RolloutState {
    /// Whether the record can no longer change.
    pub fn is_final(self) -> bool {
        self != RolloutState::Progressing
    }

    /// The name shown in tables and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Progressing => "Progressing",
            RolloutState::Converged => "Converged",
            RolloutState::Failed => "Failed",
            RolloutState::Superseded => "Superseded",
            RolloutState::Rejected => "Rejected",
        }
    }
}

impl std::fmt::Display for RolloutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Health of one object of the revision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Not there yet.
    #[default]
    Progressing,
    /// Updated and ready (or, for Jobs, complete).
    Healthy,
    /// Cannot get there.
    Failed,
}

/// Progress of one workload of the revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectProgress {
    /// `Deployment`, `Pod`, `Job`, `DaemonSet`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pods wanted (replicas, completions, nodes to run on; 1 for a bare Pod).
    pub desired: i32,
    /// Pods of the current template (Deployments, DaemonSets), or succeeded (Jobs).
    pub updated: i32,
    /// Updated pods that are ready.
    pub ready: i32,
    /// Updated pods that are available (ready for minReadySeconds).
    pub available: i32,
    /// Pods of older templates still running.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub old: i32,
    /// Healthy, progressing or failed.
    pub health: Health,
    /// One line for people: `2/3 ready, 1 old`.
    pub message: String,
    /// Why it failed (`ProgressDeadlineExceeded`, `CrashLoopBackOff`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl ObjectProgress {
    /// Health from the object's failure, if any, and whether it is done; a failure's
    /// reason becomes the object's.
    fn settle(&mut self, failure: Option<&Failure>, done: bool) {
        self.health = match failure {
            Some(f) => {
                self.reason = Some(f.reason.clone());
                Health::Failed
            }
            None if done => Health::Healthy,
            None => Health::Progressing,
        };
    }

    /// `Deployment default/web`.
    pub fn id(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// `default/web: 2/3 ready` (the progress line `kommit up` prints).
    pub fn line(&self) -> String {
        format!("{}/{}: {}", self.namespace, self.name, self.message)
    }
}

/// Why a rollout failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The object at fault (`Deployment default/web`).
    pub object: String,
    /// Machine-readable reason (`ProgressDeadlineExceeded`, `CrashLoopBackOff`,
    /// `BackoffLimitExceeded`, `PodFailed`).
    pub reason: String,
    /// For people.
    pub message: String,
    /// When the cluster said so, if it did (conditions); `None`: observed now.
    pub at: Option<Timestamp>,
}

/// The rollout of a revision as observed at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assessment {
    /// Every workload of the revision, ordered by kind, namespace, name.
    pub objects: Vec<ObjectProgress>,
    /// Controller-owned pods that no workload of the revision explains (to be removed).
    pub leftover_pods: usize,
    /// Everything matches the revision (failed Jobs and pods count as finished).
    pub converged: bool,
    /// Failures, in object order.
    pub failures: Vec<Failure>,
}

fn uid(m: &ObjectMeta) -> String {
    m.uid.clone().unwrap_or_default()
}

fn unschedulable(pod: &Pod) -> Option<String> {
    let c = podutil::condition(pod, "PodScheduled")?;
    (c.status == "False").then(|| c.message.clone().unwrap_or_else(|| "unschedulable".into()))
}

/// The first container of `pod` crash-looping past [`CRASH_LOOP_RESTARTS`]: (name, restarts).
pub fn crash_loop(pod: &Pod) -> Option<(String, i32)> {
    let st = pod.status.as_ref()?;
    st.init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
        .find(|c| {
            c.restart_count >= CRASH_LOOP_RESTARTS
                && c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("CrashLoopBackOff")
        })
        .map(|c| (c.name.clone(), c.restart_count))
}

fn crash_failure(object: &str, pod: &Pod) -> Option<Failure> {
    let (container, restarts) = crash_loop(pod)?;
    Some(Failure {
        object: object.to_owned(),
        reason: "CrashLoopBackOff".into(),
        message: format!(
            "pod {} container {container} is crash-looping ({restarts} restarts)",
            meta::name(&pod.metadata)
        ),
        at: None,
    })
}

/// The rollout of `desired` as `observed` shows it.
pub fn assess(desired: &Desired, observed: &Observed) -> Assessment {
    let mut a = Assessment {
        converged: true,
        ..Assessment::default()
    };
    let mut explained: BTreeSet<String> = BTreeSet::new();
    deployments(desired, observed, &mut explained, &mut a);
    bare_pods(desired, observed, &mut explained, &mut a);
    jobs(desired, observed, &mut explained, &mut a);
    daemon_sets(desired, observed, &mut explained, &mut a);
    a.leftover_pods = observed
        .pods
        .iter()
        .filter(|p| {
            !explained.contains(&uid(&p.metadata)) && meta::controller_of(&p.metadata).is_some()
        })
        .count();
    if a.leftover_pods > 0 {
        a.converged = false;
    }
    a
}

fn deployments(
    desired: &Desired,
    observed: &Observed,
    explained: &mut BTreeSet<String>,
    a: &mut Assessment,
) {
    for d in &desired.deployments {
        let ns = meta::namespace(&d.metadata);
        let name = meta::name(&d.metadata);
        let Some(d_uid) = desired.uid_of("Deployment", ns, name) else {
            continue;
        };
        let spec = d.spec.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1);
        let owned: Vec<&ReplicaSet> = observed
            .replica_sets
            .iter()
            .filter(|rs| meta::controller_of(&rs.metadata).is_some_and(|o| o.uid == d_uid))
            .collect();
        let new_rs = owned.iter().find(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| hash::equal_ignore_hash(t, &spec.template))
        });
        let new_uid = new_rs.map(|rs| uid(&rs.metadata));
        let mut p = ObjectProgress {
            kind: "Deployment".into(),
            namespace: ns.into(),
            name: name.into(),
            desired: replicas,
            available: new_rs
                .and_then(|rs| rs.status.as_ref())
                .and_then(|s| s.available_replicas)
                .unwrap_or(0),
            ..ObjectProgress::default()
        };
        let id = p.id();
        let mut pending: Option<String> = None;
        let mut failures = Vec::new();
        for pod in &observed.pods {
            let Some(owner) = meta::controller_of(&pod.metadata) else {
                continue;
            };
            if !owned.iter().any(|rs| uid(&rs.metadata) == owner.uid) {
                continue;
            }
            explained.insert(uid(&pod.metadata));
            if podutil::is_terminal(pod) {
                continue;
            }
            if Some(&owner.uid) == new_uid.as_ref() && !podutil::is_terminating(pod) {
                p.updated += 1;
                if podutil::phase(pod) == "Running" && podutil::is_ready(pod) {
                    p.ready += 1;
                }
                if let Some(why) = unschedulable(pod) {
                    pending = Some(why);
                }
                failures.extend(crash_failure(&id, pod));
            } else {
                p.old += 1;
            }
        }
        p.available = p.available.min(p.updated);
        let mut message = format!("{}/{replicas} ready", p.ready);
        if p.old > 0 {
            message.push_str(&format!(", {} old", p.old));
        }
        if let Some(why) = pending {
            message.push_str(&format!(" (Pending: {why})"));
        }
        let done = p.ready == replicas && p.updated == replicas && p.old == 0;
        if !done {
            a.converged = false;
        }
        let progressing = observed
            .deployment_status(ns, name)
            .and_then(|r| r.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Progressing"));
        if let Some(c) = progressing
            && c.status == "False"
            && c.reason.as_deref() == Some(crate::deployment::TIMED_OUT_REASON)
            && !done
        {
            failures.insert(
                0,
                Failure {
                    object: id.clone(),
                    reason: crate::deployment::TIMED_OUT_REASON.into(),
                    message: c
                        .message
                        .clone()
                        .unwrap_or_else(|| "the rollout made no progress in time".into()),
                    at: c
                        .last_update_time
                        .as_ref()
                        .or(c.last_transition_time.as_ref())
                        .map(|t| t.0),
                },
            );
        }
        p.health = if done {
            Health::Healthy
        } else if let Some(f) = failures.first() {
            p.reason = Some(f.reason.clone());
            message.push_str(&format!(" ({})", f.reason));
            Health::Failed
        } else {
            Health::Progressing
        };
        p.message = message;
        a.objects.push(p);
        a.failures.extend(failures);
    }
}

fn bare_pods(
    desired: &Desired,
    observed: &Observed,
    explained: &mut BTreeSet<String>,
    a: &mut Assessment,
) {
    for d in &desired.pods {
        let ns = meta::namespace(&d.metadata);
        let name = meta::name(&d.metadata);
        let mut p = ObjectProgress {
            kind: "Pod".into(),
            namespace: ns.into(),
            name: name.into(),
            desired: 1,
            ..ObjectProgress::default()
        };
        let found = observed
            .pods
            .iter()
            .find(|x| meta::namespace(&x.metadata) == ns && meta::name(&x.metadata) == name);
        match found {
            None => {
                a.converged = false;
                p.message = "not created yet".into();
            }
            Some(pod) => {
                explained.insert(uid(&pod.metadata));
                let phase = podutil::phase(pod).to_owned();
                let ready = phase == "Running" && podutil::is_ready(pod);
                let done = podutil::is_terminal(pod) || ready;
                p.updated = 1;
                p.ready = i32::from(ready);
                p.available = p.ready;
                if !done {
                    a.converged = false;
                }
                p.message = match unschedulable(pod) {
                    Some(why) => format!("{phase} ({why})"),
                    None => phase.clone(),
                };
                let failure = if phase == "Failed" {
                    Some(Failure {
                        object: p.id(),
                        reason: "PodFailed".into(),
                        message: pod
                            .status
                            .as_ref()
                            .and_then(|s| s.message.clone())
                            .unwrap_or_else(|| format!("pod {name} failed")),
                        at: None,
                    })
                } else if done {
                    None
                } else {
                    crash_failure(&p.id(), pod)
                };
                p.settle(failure.as_ref(), done);
                a.failures.extend(failure);
            }
        }
        a.objects.push(p);
    }
}

fn jobs(
    desired: &Desired,
    observed: &Observed,
    explained: &mut BTreeSet<String>,
    a: &mut Assessment,
) {
    let mut owners: BTreeSet<String> = observed
        .jobs
        .iter()
        .filter_map(|j| j.metadata.uid.clone())
        .collect();
    for j in &desired.jobs {
        let (ns, name) = (meta::namespace(&j.metadata), meta::name(&j.metadata));
        owners.insert(meta::desired_uid("Job", &j.metadata));
        let status = observed
            .job(ns, name)
            .and_then(|r| r.status.clone())
            .unwrap_or_default();
        let completions = j.spec.as_ref().and_then(|s| s.completions).unwrap_or(1);
        let succeeded = status.succeeded.unwrap_or(0);
        let mut p = ObjectProgress {
            kind: "Job".into(),
            namespace: ns.into(),
            name: name.into(),
            desired: completions,
            updated: succeeded,
            ready: status.ready.unwrap_or(0),
            available: succeeded,
            ..ObjectProgress::default()
        };
        if let Some(c) = job::true_condition(&status, "Failed") {
            let reason = c.reason.clone().unwrap_or_else(|| "Failed".into());
            p.message = format!("Failed ({reason})");
            p.health = Health::Failed;
            p.reason = Some(reason.clone());
            a.failures.push(Failure {
                object: p.id(),
                reason,
                message: c
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("job {name} failed")),
                at: c.last_transition_time.as_ref().map(|t| t.0),
            });
        } else if job::true_condition(&status, "Complete").is_some() {
            p.message = format!("Complete ({succeeded}/{completions} succeeded)");
            p.health = Health::Healthy;
        } else {
            a.converged = false;
            p.message = format!(
                "{} active, {succeeded}/{completions} succeeded",
                status.active.unwrap_or(0)
            );
        }
        a.objects.push(p);
    }
    for pod in &observed.pods {
        if meta::controller_of(&pod.metadata).is_some_and(|o| owners.contains(&o.uid)) {
            explained.insert(uid(&pod.metadata));
        }
    }
}

fn daemon_sets(
    desired: &Desired,
    observed: &Observed,
    explained: &mut BTreeSet<String>,
    a: &mut Assessment,
) {
    for d in &desired.daemon_sets {
        let (ns, name) = (meta::namespace(&d.metadata), meta::name(&d.metadata));
        let d_uid = meta::desired_uid("DaemonSet", &d.metadata);
        let st = observed
            .daemon_set_status(ns, name)
            .and_then(|r| r.status.clone());
        let mut p = ObjectProgress {
            kind: "DaemonSet".into(),
            namespace: ns.into(),
            name: name.into(),
            ..ObjectProgress::default()
        };
        let id = p.id();
        match &st {
            Some(s) => {
                p.desired = s.desired_number_scheduled;
                p.updated = s.updated_number_scheduled.unwrap_or(0);
                p.ready = s.number_ready;
                p.available = s.number_available.unwrap_or(0);
                p.message = format!(
                    "{}/{} ready (daemon)",
                    s.number_ready, s.desired_number_scheduled
                );
            }
            None => p.message = "not synced yet (daemon)".into(),
        }
        let done = st.as_ref().is_some_and(|s| {
            s.observed_generation == Some(d.metadata.generation.unwrap_or(1))
                && s.number_ready == s.desired_number_scheduled
                && s.current_number_scheduled == s.desired_number_scheduled
                && s.updated_number_scheduled == Some(s.desired_number_scheduled)
                && s.number_misscheduled == 0
        });
        let failure = if done {
            None
        } else {
            observed
                .pods_controlled_by(ns, &d_uid)
                .filter(|pod| podutil::is_active(pod))
                .find_map(|pod| crash_failure(&id, pod))
        };
        if !done {
            a.converged = false;
        }
        p.settle(failure.as_ref(), done);
        a.failures.extend(failure);
        a.objects.push(p);
    }
    let owners: BTreeSet<String> = desired
        .daemon_sets
        .iter()
        .map(|d| meta::desired_uid("DaemonSet", &d.metadata))
        .collect();
    for pod in &observed.pods {
        if meta::controller_of(&pod.metadata).is_some_and(|o| owners.contains(&o.uid)) {
            explained.insert(uid(&pod.metadata));
        }
    }
}

/// Who made a commit and what it says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitSpec {
    /// The full commit id (hex).
    pub commit: String,
    /// `Name <email>`.
    #[serde(default)]
    pub author: String,
    /// The whole commit message.
    #[serde(default)]
    pub message: String,
    /// When the commit was made (the committer's time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<Time>,
    /// The tracked branch.
    #[serde(default)]
    pub branch: String,
    /// The commit the cluster ran when this one was detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

impl CommitSpec {
    /// The first line of the message.
    pub fn subject(&self) -> &str {
        self.message.lines().next().unwrap_or("")
    }

    /// The first 8 hex digits of the commit id.
    pub fn short(&self) -> &str {
        self.commit.get(..8).unwrap_or(&self.commit)
    }
}

/// One object the commit adds, changes or removes (from the plan's diff).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangedObject {
    /// `Added`, `Changed` or `Removed`.
    pub action: String,
    /// Kind.
    pub kind: String,
    /// Namespace (empty for cluster-scoped kinds).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    pub name: String,
    /// What the rollout does to it ("3 pods replaced, rolling with maxSurge 1 ...").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
}

/// The life of a commit so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitStatus {
    /// Where it stands.
    pub state: RolloutState,
    /// Why it ended that way (`ProgressDeadlineExceeded`, `CrashLoopBackOff`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// For people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the commit was detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the rollout ended (any final state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// Since when everything has been updated and ready (reset when that stops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since: Option<Time>,
    /// The newer commit that superseded this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// Objects the commit changes (empty for a rejected commit).
    #[serde(default)]
    pub changes: Vec<ChangedObject>,
    /// Progress of every workload of the revision, as last observed.
    #[serde(default)]
    pub objects: Vec<ObjectProgress>,
    /// Validation errors of a rejected commit, one per line as `kommit validate` prints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// The record of one commit: a `kommit.dev/v1` `Commit` object named by its full id.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitRecord {
    /// [`API_VERSION`].
    pub api_version: String,
    /// [`KIND`].
    pub kind: String,
    /// Name (the commit id), creationTimestamp (detection), the state label.
    pub metadata: ObjectMeta,
    /// The commit.
    pub spec: CommitSpec,
    /// Its rollout.
    pub status: CommitStatus,
}

fn time(t: Timestamp) -> Time {
    Time(truncate_seconds(t))
}

impl CommitRecord {
    fn new(spec: CommitSpec, state: RolloutState, now: Timestamp) -> CommitRecord {
        let mut r = CommitRecord {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            metadata: ObjectMeta {
                name: Some(spec.commit.clone()),
                creation_timestamp: Some(time(now)),
                ..ObjectMeta::default()
            },
            spec,
            status: CommitStatus {
                state,
                start_time: Some(time(now)),
                ..CommitStatus::default()
            },
        };
        r.set_label();
        r
    }

    /// A commit applied at `now`, changing `changes`: its rollout starts.
    pub fn applied(spec: CommitSpec, changes: Vec<ChangedObject>, now: Timestamp) -> Self {
        let mut r = CommitRecord::new(spec, RolloutState::Progressing, now);
        r.status.changes = changes;
        r
    }

    /// A commit rejected at `now` with its validation errors.
    pub fn rejected(spec: CommitSpec, errors: Vec<String>, now: Timestamp) -> Self {
        let mut r = CommitRecord::new(spec, RolloutState::Rejected, now);
        r.status.reason = "ValidationFailed".into();
        r.status.message = format!(
            "{} validation error{}; the cluster keeps the last applied commit",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        );
        r.status.errors = errors;
        r.status.end_time = Some(time(now));
        r
    }

    /// The record's cache key.
    pub fn key(&self) -> String {
        record_key(&self.spec.commit)
    }

    fn set_label(&mut self) {
        self.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(STATE_LABEL.into(), self.status.state.as_str().into());
    }

    fn finish(&mut self, state: RolloutState, reason: String, message: String, now: Timestamp) {
        self.status.state = state;
        self.status.reason = reason;
        self.status.message = message;
        self.status.end_time = Some(time(now));
        self.set_label();
    }

    /// Takes in an assessment of the rollout made at `now`. Returns whether the record
    /// changed (a final record never changes).
    pub fn observe(&mut self, a: &Assessment, now: Timestamp) -> bool {
        if self.status.state.is_final() {
            return false;
        }
        let before = self.clone();
        self.status.objects = a.objects.clone();
        let started = self.status.start_time.as_ref().map(|t| t.0);
        // A condition written before this rollout began (an earlier commit's timeout)
        // says nothing about this one.
        let failure = a.failures.iter().find(|f| match (f.at, started) {
            (Some(at), Some(start)) => at >= start,
            _ => true,
        });
        if let Some(f) = failure {
            self.finish(
                RolloutState::Failed,
                f.reason.clone(),
                format!("{}: {}", f.object, f.message),
                now,
            );
        } else if a.converged
            && now.as_second()
                - self
                    .status
                    .ready_since
                    .get_or_insert_with(|| time(now))
                    .0
                    .as_second()
                < SETTLE_SECONDS
        {
            self.status.message =
                format!("everything is updated and ready; settling for {SETTLE_SECONDS}s");
        } else if a.converged {
            let ready: i32 = a.objects.iter().map(|o| o.ready).sum();
            self.finish(
                RolloutState::Converged,
                String::new(),
                format!(
                    "{} workload{} updated and ready ({ready} pod{})",
                    a.objects.len(),
                    if a.objects.len() == 1 { "" } else { "s" },
                    if ready == 1 { "" } else { "s" }
                ),
                now,
            );
        } else {
            self.status.ready_since = None;
            let mut waiting: Vec<String> = a
                .objects
                .iter()
                .filter(|o| o.health != Health::Healthy)
                .map(|o| o.id())
                .collect();
            if a.leftover_pods > 0 {
                waiting.push(format!("{} pod(s) to remove", a.leftover_pods));
            }
            self.status.message = format!("waiting for {}", waiting.join(", "));
        }
        *self != before
    }

    /// Ends a rollout still in progress because `newer` was applied at `now`. Returns
    /// whether the record changed.
    pub fn supersede(&mut self, newer: &str, now: Timestamp) -> bool {
        if self.status.state.is_final() {
            return false;
        }
        let short = newer.get(..8).unwrap_or(newer);
        self.status.superseded_by = Some(newer.to_owned());
        self.finish(
            RolloutState::Superseded,
            "NewerCommit".into(),
            format!("commit {short} was applied before this rollout ended"),
            now,
        );
        true
    }
}
