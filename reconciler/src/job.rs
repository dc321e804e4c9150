//! The Job controller: runs pods to completion, as kube-controller-manager's job
//! controller does.
//!
//! A Job comes either from Git (its spec is in the revision; the controller writes a
//! status record under `/registry/jobs/<ns>/<name>`, as for Deployments) or from a
//! CronJob (a whole observed Job, made by [`crate::cronjob`], whose status is updated in
//! place). Both run the same [`sync`].
//!
//! What it does, in Kubernetes' terms:
//!
//! - `parallelism` (default 1) pods at most run at once; with `completions` set, no more
//!   than `completions - succeeded` are started. Without `completions` (a work queue),
//!   the Job is complete once one pod succeeded and none is left running.
//! - `completionMode: Indexed`: each pod gets an index (annotation and label
//!   `batch.kubernetes.io/job-completion-index`, env `JOB_COMPLETION_INDEX`, hostname
//!   `<job>-<index>`); the Job is complete when every index in `0..completions` has a
//!   Succeeded pod; `status.completedIndexes` lists them (`0-2,4`).
//! - `backoffLimit` (default 6): the Job fails (`Failed`, reason `BackoffLimitExceeded`)
//!   once more pods failed than that; with `restartPolicy: OnFailure` container restarts
//!   of running pods count as failures too. A failed pod is replaced after a back-off of
//!   10 s doubling per failure up to 6 min, as Kubernetes does.
//! - `activeDeadlineSeconds`: the Job fails (reason `DeadlineExceeded`) that long after
//!   `status.startTime`; its running pods are deleted.
//! - `suspend: true` deletes running pods and starts none.
//! - `ttlSecondsAfterFinished`: that long after the Job finished its pods are deleted.
//!   A Job from Git cannot be deleted by the cluster (Git declares it), so only its pods
//!   go and its status record stays, saying Complete or Failed; a Job a CronJob made is
//!   deleted itself (its pods then go with it, by garbage collection).
//! - Pods carry `batch.kubernetes.io/controller-uid` and `batch.kubernetes.io/job-name`
//!   (and the legacy `controller-uid` / `job-name`) labels and a controller owner
//!   reference to the Job; they are the Job's pods by that owner reference.
//! - Status: active, ready, succeeded, failed, startTime, completionTime (on success),
//!   conditions `Complete` / `Failed`. Events as the job controller writes them:
//!   `SuccessfulCreate`, `SuccessfulDelete`, `Completed`, `BackoffLimitExceeded`,
//!   `DeadlineExceeded`.
//!
//! Counting: Kubernetes keeps a finalizer on Job pods until it counted them. Here the
//! succeeded and failed counts are those of the pods present, never lower than the
//! counts already recorded (so a pod removed after it was counted is not lost); pod GC
//! leaves terminated Job pods alone (see [`crate::gc`]). The spec is read from Git on
//! every pass: a change of `parallelism` (or `completions`, `activeDeadlineSeconds`,
//! `suspend`) applies to the running Job; a finished Job is not run again when its
//! template changes (Kubernetes does not allow that change): give it a new name.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::action::{Action, ReconcileError, Reconciled};
use crate::context::Context;
use crate::events::{self, Involved};
use crate::meta;
use crate::object::{meta_key, mod_revision};
use crate::podutil;
use crate::state::Observed;

/// Label with the Job's UID on its pods.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// Label with the Job's name on its pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The pre-1.27 spelling of [`CONTROLLER_UID_LABEL`], still set by Kubernetes.
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
/// The pre-1.27 spelling of [`JOB_NAME_LABEL`], still set by Kubernetes.
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";
/// Annotation and label with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// Environment variable with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// `backoffLimit` when unset.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 6;
/// First delay before a failed pod is replaced.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Longest delay before a failed pod is replaced.
pub const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// Component name on the controller's events.
pub const COMPONENT: &str = "job-controller";

/// Event reasons of the job controller.
pub mod reason {
    /// The Job finished successfully.
    pub const COMPLETED: &str = "Completed";
    /// Too many pods failed.
    pub const BACKOFF_LIMIT_EXCEEDED: &str = "BackoffLimitExceeded";
    /// `activeDeadlineSeconds` passed.
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
}

/// The condition `type_` (`Complete`, `Failed`) of a Job status, if True.
pub fn true_condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// Whether a Job status says Complete or Failed, and since when.
pub fn finished_at(status: &JobStatus) -> Option<Timestamp> {
    ["Complete", "Failed"].iter().find_map(|t| {
        let c = true_condition(status, t)?;
        c.last_transition_time
            .as_ref()
            .map(|x| x.0)
            .or_else(|| status.completion_time.as_ref().map(|x| x.0))
            .or(Some(Timestamp::UNIX_EPOCH))
    })
}

/// Whether a Job (status) is finished: Complete or Failed.
pub fn is_finished(status: Option<&JobStatus>) -> bool {
    status.is_some_and(|s| finished_at(s).is_some())
}

/// The delay before replacing a pod after `failures` failures (Kubernetes' pod failure
/// back-off: 10 s, 20 s, 40 s, ... up to 6 min).
pub fn backoff(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let exp = (failures - 1).min(16) as u32;
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

/// `0-2,4,6-7`: Kubernetes' compressed list of indexes.
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// The completion index of an Indexed Job's pod.
pub fn pod_index(pod: &Pod) -> Option<i32> {
    meta::annotation(&pod.metadata, COMPLETION_INDEX).and_then(|v| v.parse().ok())
}

/// When a terminated pod finished (its containers' latest finish time, else its last
/// condition change, else its creation).
pub fn finish_time(pod: &Pod) -> Option<Timestamp> {
    let st = pod.status.as_ref();
    let containers = st
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    containers
        .or_else(|| {
            st.and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
                .max()
        })
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

fn secs(d: SignedDuration) -> Duration {
    Duration::from_secs(d.as_secs().max(0) as u64 + 1)
}

/// What [`sync`] decided for one Job.
#[derive(Debug, Default)]
pub struct Synced {
    /// Pod writes and their events.
    pub actions: Reconciled,
    /// The Job's new status.
    pub status: JobStatus,
    /// Events that report the status write (Completed, Failed reasons): apply after it.
    pub status_events: Vec<Action>,
    /// `ttlSecondsAfterFinished` ran out: the Job's pods are deleted; a Job that may be
    /// deleted (made by a CronJob) should go too.
    pub expired: bool,
}

/// The identity of a Job being synced.
#[derive(Clone, Copy, Debug)]
pub struct JobRef<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// UID (the one its pods' owner references carry).
    pub uid: &'a str,
}

fn set_condition(st: &mut JobStatus, ctx: &Context, type_: &str, reason: &str, message: &str) {
    let conds = st.conditions.get_or_insert_with(Vec::new);
    conds.retain(|c| c.type_ != type_);
    conds.push(JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(ctx.now_time()),
        last_transition_time: Some(ctx.now_time()),
    });
}

/// One sync of a Job whose spec is `spec` and last status `old`.
pub fn sync(
    ctx: &Context,
    job: JobRef<'_>,
    spec: &JobSpec,
    old: Option<&JobStatus>,
    observed: &Observed,
) -> Result<Synced, ReconcileError> {
    let JobRef {
        namespace,
        name,
        uid,
    } = job;
    let invalid = |field: &str, message: &str| ReconcileError::Invalid {
        object: format!("Job {namespace}/{name}"),
        field: field.into(),
        message: message.into(),
    };
    let template = &spec.template;
    let pod_spec = template
        .spec
        .as_ref()
        .ok_or_else(|| invalid("spec.template.spec", "required"))?;
    let restart_policy = pod_spec.restart_policy.as_deref().unwrap_or("");
    if !matches!(restart_policy, "Never" | "OnFailure") {
        return Err(invalid(
            "spec.template.spec.restartPolicy",
            "must be Never or OnFailure",
        ));
    }
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    if indexed && spec.completions.is_none() {
        return Err(invalid(
            "spec.completions",
            "required when completionMode is Indexed",
        ));
    }
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT);
    let now = ctx.now();
    let mut out = Synced {
        status: old.cloned().unwrap_or_default(),
        ..Synced::default()
    };
    let involved = Involved {
        kind: "Job",
        namespace: Some(namespace),
        name,
        uid: Some(uid),
    };
    let owned: Vec<&Pod> = observed.pods_controlled_by(namespace, uid).collect();
    let active: Vec<&Pod> = owned
        .iter()
        .copied()
        .filter(|p| podutil::is_active(p))
        .collect();
    let delete_pod = |out: &mut Synced, pod: &Pod, event: bool| {
        if let Ok(key) = meta_key("Pod", &pod.metadata) {
            out.actions.actions.push(Action::Delete {
                key,
                mod_revision: mod_revision(&pod.metadata),
            });
            if event {
                out.actions.actions.push(events::normal(
                    ctx,
                    involved.clone(),
                    crate::events::reason::SUCCESSFUL_DELETE,
                    COMPONENT,
                    format!("Deleted pod: {}", meta::name(&pod.metadata)),
                ));
            }
        }
    };
    let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);

    // A finished Job: stop what still runs, and honour the TTL.
    if let Some(at) = finished_at(&out.status) {
        for p in &active {
            delete_pod(&mut out, p, true);
        }
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            let expiry = at
                .checked_add(SignedDuration::from_secs(i64::from(ttl.max(0))))
                .unwrap_or(at);
            if now >= expiry {
                out.expired = true;
                for p in owned.iter().filter(|p| podutil::is_terminal(p)) {
                    delete_pod(&mut out, p, false);
                }
            } else {
                out.actions.requeue_after(secs(expiry.duration_since(now)));
            }
        }
        out.status.active = None;
        out.status.ready = Some(0);
        return Ok(out);
    }

    let suspended = spec.suspend.unwrap_or(false);
    if out.status.start_time.is_none() && !suspended {
        out.status.start_time = Some(ctx.now_time());
    }
    let is_phase = |p: &&&Pod, ph: &str| podutil::phase(p) == ph;
    let succeeded_indexes: BTreeSet<i32> = owned
        .iter()
        .filter(|p| is_phase(p, "Succeeded"))
        .filter_map(|p| pod_index(p))
        .filter(|i| *i >= 0 && *i < spec.completions.unwrap_or(0))
        .collect();
    let succeeded_pods = if indexed {
        succeeded_indexes.len()
    } else {
        owned.iter().filter(|p| is_phase(p, "Succeeded")).count()
    };
    let failed_pods: Vec<&Pod> = owned
        .iter()
        .copied()
        .filter(|p| podutil::phase(p) == "Failed")
        .collect();
    let succeeded = as_i32(succeeded_pods).max(out.status.succeeded.unwrap_or(0));
    let failed = as_i32(failed_pods.len()).max(out.status.failed.unwrap_or(0));
    // Zero counts are left out, as Kubernetes' omitempty does.
    out.status.succeeded = Some(succeeded).filter(|n| *n > 0);
    out.status.failed = Some(failed).filter(|n| *n > 0);
    if indexed {
        let s = format_indexes(&succeeded_indexes);
        out.status.completed_indexes = Some(s).filter(|s| !s.is_empty());
    }
    let restart_failures: i32 = if restart_policy == "OnFailure" {
        active.iter().map(|p| restarts(p)).sum()
    } else {
        0
    };

    // Why the Job fails, if it does.
    let mut failure: Option<(&str, &str)> = None;
    if failed.saturating_add(restart_failures) > backoff_limit {
        failure = Some((
            reason::BACKOFF_LIMIT_EXCEEDED,
            "Job has reached the specified backoff limit",
        ));
    } else if let (Some(deadline), Some(start)) =
        (spec.active_deadline_seconds, out.status.start_time.as_ref())
        && !suspended
    {
        let end = start
            .0
            .checked_add(SignedDuration::from_secs(deadline.max(0)))
            .unwrap_or(start.0);
        if now >= end {
            failure = Some((
                reason::DEADLINE_EXCEEDED,
                "Job was active longer than specified deadline",
            ));
        } else {
            out.actions.requeue_after(secs(end.duration_since(now)));
        }
    }
    let complete = match spec.completions {
        Some(c) => succeeded >= c,
        None => succeeded >= 1 && active.is_empty(),
    };

    let mut running = active.len();
    if let Some((why, message)) = failure {
        for p in &active {
            delete_pod(&mut out, p, true);
        }
        running = 0;
        set_condition(&mut out.status, ctx, "Failed", why, message);
        out.status_events.push(events::warning(
            ctx,
            involved.clone(),
            why,
            COMPONENT,
            message.to_string(),
        ));
    } else if complete {
        for p in &active {
            delete_pod(&mut out, p, true);
        }
        running = 0;
        set_condition(
            &mut out.status,
            ctx,
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        );
        out.status.completion_time = Some(ctx.now_time());
        out.status_events.push(events::normal(
            ctx,
            involved.clone(),
            reason::COMPLETED,
            COMPONENT,
            "Job completed".into(),
        ));
    } else if suspended {
        for p in &active {
            delete_pod(&mut out, p, true);
        }
        running = 0;
    } else {
        let wanted = match spec.completions {
            Some(c) => parallelism.min(c.saturating_sub(succeeded)).max(0),
            None if succeeded > 0 => 0,
            None => parallelism,
        } as usize;
        if running > wanted {
            let mut ranked: Vec<(&Pod, usize)> = active.iter().map(|p| (*p, 0)).collect();
            ranked.sort_by(|a, b| podutil::deletion_order(*a, *b));
            for (p, _) in ranked.into_iter().take(running - wanted) {
                delete_pod(&mut out, p, true);
            }
            running = wanted;
        } else if running < wanted {
            // Back off after failures: the next pod waits 10 s · 2^(failures-1).
            let last_failure = failed_pods.iter().filter_map(|p| finish_time(p)).max();
            let wait_until = last_failure.and_then(|t| {
                let d = SignedDuration::try_from(backoff(failed)).ok()?;
                t.checked_add(d).ok()
            });
            match wait_until {
                Some(until) if failed > 0 && now < until => {
                    out.actions.requeue_after(secs(until.duration_since(now)));
                }
                _ => {
                    let busy: BTreeSet<i32> = active.iter().filter_map(|p| pod_index(p)).collect();
                    let mut free = (0..spec.completions.unwrap_or(0))
                        .filter(|i| !succeeded_indexes.contains(i) && !busy.contains(i));
                    let mut taken: BTreeSet<&str> = observed
                        .pods
                        .iter()
                        .filter(|p| meta::namespace(&p.metadata) == namespace)
                        .map(|p| meta::name(&p.metadata))
                        .collect();
                    let mut fresh: Vec<String> = Vec::new();
                    let missing = wanted - running;
                    for _ in 0..missing {
                        let index = if indexed {
                            match free.next() {
                                Some(i) => Some(i),
                                None => break,
                            }
                        } else {
                            None
                        };
                        let base = match index {
                            Some(i) => format!("{name}-{i}-"),
                            None => format!("{name}-"),
                        };
                        let pod_name = loop {
                            let n = ctx.generate_name(&base);
                            if !taken.contains(n.as_str()) && !fresh.contains(&n) {
                                break n;
                            }
                        };
                        fresh.push(pod_name.clone());
                        let pod = new_pod(ctx, job, spec, &pod_name, &base, index);
                        out.actions.actions.push(Action::Create(pod.into()));
                        out.actions.actions.push(events::normal(
                            ctx,
                            involved.clone(),
                            crate::events::reason::SUCCESSFUL_CREATE,
                            COMPONENT,
                            format!("Created pod: {pod_name}"),
                        ));
                        running += 1;
                    }
                    taken.clear();
                }
            }
        }
    }
    out.status.active = Some(as_i32(running)).filter(|n| *n > 0);
    let ready = active.iter().filter(|p| podutil::is_ready(p)).count();
    out.status.ready = Some(as_i32(ready.min(running)));
    Ok(out)
}

/// A pod of the Job from its template.
fn new_pod(
    ctx: &Context,
    job: JobRef<'_>,
    spec: &JobSpec,
    pod_name: &str,
    generate_name: &str,
    index: Option<i32>,
) -> Pod {
    let tmeta = spec.template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    for (k, v) in [
        (CONTROLLER_UID_LABEL, job.uid),
        (LEGACY_CONTROLLER_UID_LABEL, job.uid),
        (JOB_NAME_LABEL, job.name),
        (LEGACY_JOB_NAME_LABEL, job.name),
    ] {
        labels.insert(k.to_string(), v.to_string());
    }
    let mut metadata = ObjectMeta {
        name: Some(pod_name.to_string()),
        generate_name: Some(generate_name.to_string()),
        namespace: Some(job.namespace.to_string()),
        uid: Some(ctx.new_uid()),
        creation_timestamp: Some(ctx.now_time()),
        labels: Some(labels),
        annotations: tmeta.annotations,
        owner_references: Some(vec![meta::controller_ref(
            "batch/v1", "Job", job.name, job.uid,
        )]),
        ..Default::default()
    };
    let mut pod_spec = spec.template.spec.clone();
    if let Some(i) = index {
        meta::set_annotation(&mut metadata, COMPLETION_INDEX, i.to_string());
        if let Some(l) = metadata.labels.as_mut() {
            l.insert(COMPLETION_INDEX.to_string(), i.to_string());
        }
        if let Some(ps) = pod_spec.as_mut() {
            if ps.hostname.is_none() {
                ps.hostname = Some(format!("{}-{i}", job.name));
            }
            for c in ps
                .containers
                .iter_mut()
                .chain(ps.init_containers.iter_mut().flatten())
            {
                let env = c.env.get_or_insert_with(Vec::new);
                env.retain(|e| e.name != COMPLETION_INDEX_ENV);
                env.push(EnvVar {
                    name: COMPLETION_INDEX_ENV.into(),
                    value: Some(i.to_string()),
                    value_from: None,
                });
            }
        }
    }
    Pod {
        metadata,
        spec: pod_spec,
        status: Some(PodStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        }),
    }
}

/// Reconciles a Job from Git: pods, and its status record (`/registry/jobs/<ns>/<name>`,
/// metadata and status, no spec).
pub fn reconcile_desired(
    ctx: &Context,
    job: &Job,
    observed: &Observed,
    revision: Option<&str>,
) -> Result<Reconciled, ReconcileError> {
    let name = meta::name(&job.metadata);
    let ns = meta::namespace(&job.metadata);
    let spec = job.spec.as_ref().ok_or_else(|| ReconcileError::Invalid {
        object: format!("Job {ns}/{name}"),
        field: "spec".into(),
        message: "required".into(),
    })?;
    let uid = meta::desired_uid("Job", &job.metadata);
    let record = observed.job(ns, name);
    if record.is_some_and(|r| r.spec.is_some()) {
        return Err(ReconcileError::Invalid {
            object: format!("Job {ns}/{name}"),
            field: "metadata.name".into(),
            message: "a Job made by a CronJob has this name".into(),
        });
    }
    let old = record.and_then(|r| r.status.as_ref());
    let synced = sync(
        ctx,
        JobRef {
            namespace: ns,
            name,
            uid: &uid,
        },
        spec,
        old,
        observed,
    )?;
    let mut out = synced.actions;
    let mut m = ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
        uid: Some(uid.clone()),
        generation: Some(job.metadata.generation.unwrap_or(1)),
        labels: job.metadata.labels.clone(),
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
        Some(r) => r.status.as_ref() != Some(&synced.status) || r.metadata.labels != m.labels,
    };
    if changed {
        out.actions.push(Action::WriteStatus(
            Job {
                metadata: m,
                spec: None,
                status: Some(synced.status),
            }
            .into(),
        ));
        out.actions.extend(synced.status_events);
    }
    Ok(out)
}

/// Reconciles an observed Job (one a CronJob made): pods, its status in place, and the
/// Job itself once `ttlSecondsAfterFinished` ran out.
pub fn reconcile_observed(
    ctx: &Context,
    job: &Job,
    observed: &Observed,
) -> Result<Reconciled, ReconcileError> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Reconciled::none());
    }
    let name = meta::name(&job.metadata);
    let ns = meta::namespace(&job.metadata);
    let invalid = |field: &str| ReconcileError::Invalid {
        object: format!("Job {ns}/{name}"),
        field: field.into(),
        message: "required".into(),
    };
    let spec = job.spec.as_ref().ok_or_else(|| invalid("spec"))?;
    let uid = job
        .metadata
        .uid
        .clone()
        .ok_or_else(|| invalid("metadata.uid"))?;
    let synced = sync(
        ctx,
        JobRef {
            namespace: ns,
            name,
            uid: &uid,
        },
        spec,
        job.status.as_ref(),
        observed,
    )?;
    let mut out = synced.actions;
    if synced.expired {
        if let Ok(key) = meta_key("Job", &job.metadata) {
            out.actions.push(Action::Delete {
                key,
                mod_revision: mod_revision(&job.metadata),
            });
        }
        return Ok(out);
    }
    if job.status.as_ref() != Some(&synced.status) {
        let mut updated = job.clone();
        updated.status = Some(synced.status);
        out.actions.push(Action::Update(updated.into()));
        out.actions.extend(synced.status_events);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_compressed_like_kubernetes() {
        let s: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(format_indexes(&s), "0-2,4,6-7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn failure_backoff_doubles_up_to_six_minutes() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(10), Duration::from_secs(360));
    }
}
