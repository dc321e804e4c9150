//! The CronJob controller: makes Jobs on a schedule, as kube-controller-manager's cronjob
//! controller (v2) does.
//!
//! - Schedules are Kubernetes' five-field cron syntax (minute hour day-of-month month
//!   day-of-week, names like `MON`/`JAN`, ranges and steps; day-of-month and
//!   day-of-week combine with OR as in Vixie cron) and `@yearly`, `@annually`,
//!   `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`, evaluated with the
//!   `croner` crate. `spec.timeZone` (or a `TZ=`/`CRON_TZ=` prefix) names an IANA zone;
//!   without one the schedule is read in UTC (Kubernetes uses kube-controller-manager's
//!   local zone; kommit picks UTC so the same Git revision means the same times
//!   everywhere).
//! - Time comes from the [`Context`] clock. The controller finds the most recent
//!   schedule time since `status.lastScheduleTime` (or since it first saw the CronJob);
//!   with `startingDeadlineSeconds` only times within that deadline count, and a time
//!   found too late is skipped with a `MissSchedule` warning. It asks to run again at the
//!   next schedule time ([`crate::Requeue::After`]).
//! - The Job for schedule time `t` is named `<cronjob>-<t in minutes since the epoch>`
//!   (as Kubernetes names it), annotated `batch.kubernetes.io/cronjob-scheduled-timestamp`,
//!   controlled by the CronJob, and stored as an observed object under
//!   `/registry/jobs/<ns>/<name>`; the Job controller then runs it ([`crate::job`]).
//! - `concurrencyPolicy`: `Allow` (default) starts Jobs regardless; `Forbid` skips a
//!   schedule time while a Job is running (the time stays due, and starts once the Job
//!   finished if still within `startingDeadlineSeconds`); `Replace` deletes the running
//!   Jobs first.
//! - `suspend: true` starts nothing. `successfulJobsHistoryLimit` (default 3) and
//!   `failedJobsHistoryLimit` (default 1) finished Jobs are kept, the oldest beyond
//!   them deleted.
//! - Status (a record under `/registry/cronjobs/<ns>/<name>`): active (references to the
//!   running Jobs), lastScheduleTime, lastSuccessfulTime. Events: `SuccessfulCreate`,
//!   `SawCompletedJob`, `SuccessfulDelete`, `MissSchedule`, `JobAlreadyActive`,
//!   `TooManyMissedTimes` (a warning event is written once, not on every pass).

use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::action::{Action, ReconcileError, Reconciled};
use crate::context::{Context, truncate_seconds};
use crate::events::{self, Involved};
use crate::job;
use crate::meta;
use crate::object::{meta_key, mod_revision};
use crate::state::Observed;

/// Annotation on a Job with the schedule time it was made for (RFC 3339).
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Component name on the controller's events.
pub const COMPONENT: &str = "cronjob-controller";
/// Kubernetes' limit of missed schedule times before it warns.
pub const MAX_MISSED: usize = 100;

/// Event reasons of the cronjob controller.
pub mod reason {
    /// A Job was created.
    pub const SUCCESSFUL_CREATE: &str = "SuccessfulCreate";
    /// A Job was deleted (history limit, Replace).
    pub const SUCCESSFUL_DELETE: &str = "SuccessfulDelete";
    /// A Job the CronJob made finished.
    pub const SAW_COMPLETED_JOB: &str = "SawCompletedJob";
    /// A schedule time was found past `startingDeadlineSeconds`.
    pub const MISS_SCHEDULE: &str = "MissSchedule";
    /// Forbid: a Job is still running.
    pub const JOB_ALREADY_ACTIVE: &str = "JobAlreadyActive";
    /// More than 100 schedule times were missed.
    pub const TOO_MANY_MISSED_TIMES: &str = "TooManyMissedTimes";
}

/// A parsed schedule in its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
}

/// Parses a Kubernetes schedule, with an optional `spec.timeZone`.
pub fn parse_schedule(schedule: &str, time_zone: Option<&str>) -> Result<Schedule, String> {
    let mut text = schedule.trim();
    let mut zone = time_zone.map(str::to_string);
    for prefix in ["TZ=", "CRON_TZ="] {
        if let Some(rest) = text.strip_prefix(prefix) {
            let (z, r) = rest
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("`{schedule}`: a time zone prefix needs a schedule"))?;
            zone = Some(z.to_string());
            text = r.trim();
        }
    }
    let text = match text {
        // croner knows the others; Kubernetes also accepts @midnight.
        "@midnight" => "0 0 * * *",
        t => t,
    };
    if !text.starts_with('@') && text.split_whitespace().count() != 5 {
        return Err(format!("`{schedule}`: a schedule has five fields"));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("`{schedule}`: {e}"))?;
    let tz = match zone.as_deref() {
        None | Some("") => TimeZone::UTC,
        Some(z) => TimeZone::get(z).map_err(|e| format!("unknown time zone `{z}`: {e}"))?,
    };
    Ok(Schedule { cron, tz })
}

impl Schedule {
    /// The first schedule time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let z = t.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&z, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The latest schedule time in `(after, now]`, and how many there are (counted up
    /// to [`MAX_MISSED`] + 1).
    pub fn most_recent(&self, after: Timestamp, now: Timestamp) -> (Option<Timestamp>, usize) {
        let mut count = 0;
        let mut t = after;
        let mut last = None;
        while let Some(next) = self.next_after(t) {
            if next > now {
                break;
            }
            count += 1;
            last = Some(next);
            t = next;
            if count > MAX_MISSED {
                // Jump to the latest one before `now` directly.
                let z = now.to_zoned(self.tz.clone());
                last = self
                    .cron
                    .find_previous_occurrence(&z, true)
                    .ok()
                    .map(|z| z.timestamp())
                    .or(last);
                break;
            }
        }
        (last, count)
    }
}

/// The name of the Job for schedule time `t` (`<cronjob>-<minutes since the epoch>`).
pub fn job_name(cron_job: &str, t: Timestamp) -> String {
    format!("{cron_job}-{}", t.as_second().div_euclid(60))
}

fn job_ref(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        resource_version: None,
        ..Default::default()
    }
}

fn job_time(j: &Job) -> Option<Timestamp> {
    j.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(j.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

/// Runs one sync of a CronJob from Git.
pub fn reconcile(
    ctx: &Context,
    cj: &CronJob,
    observed: &Observed,
    revision: Option<&str>,
) -> Result<Reconciled, ReconcileError> {
    let name = meta::name(&cj.metadata);
    let ns = meta::namespace(&cj.metadata);
    let invalid = |field: &str, message: &str| ReconcileError::Invalid {
        object: format!("CronJob {ns}/{name}"),
        field: field.into(),
        message: message.into(),
    };
    let spec = cj
        .spec
        .as_ref()
        .ok_or_else(|| invalid("spec", "required"))?;
    let uid = meta::desired_uid("CronJob", &cj.metadata);
    let record = observed.cron_job_status(ns, name);
    let old = record.and_then(|r| r.status.clone()).unwrap_or_default();
    let mut status = old.clone();
    let now = ctx.now();
    let involved = Involved {
        kind: "CronJob",
        namespace: Some(ns),
        name,
        uid: Some(&uid),
    };
    // A warning/notice written once per distinct message (passes run on every change).
    let once = |out: &mut Reconciled, type_: &str, why: &str, message: String| {
        let seen = observed.events.iter().any(|e| {
            e.involved_object.uid.as_deref() == Some(uid.as_str())
                && e.reason.as_deref() == Some(why)
                && e.message.as_deref() == Some(message.as_str())
        });
        if !seen {
            out.actions.push(events::event(
                ctx,
                involved.clone(),
                type_,
                why,
                COMPONENT,
                message,
            ));
        }
    };
    let mut out = Reconciled::none();
    let mut created_ref: Option<ObjectReference> = None;

    // The Jobs it made.
    let mut children: Vec<&Job> = observed
        .jobs
        .iter()
        .filter(|j| {
            meta::namespace(&j.metadata) == ns
                && meta::is_controlled_by(&j.metadata, "CronJob", name, &uid)
                && j.metadata.deletion_timestamp.is_none()
        })
        .collect();
    children.sort_by(|a, b| {
        job_time(a)
            .cmp(&job_time(b))
            .then(a.metadata.name.cmp(&b.metadata.name))
    });
    let was_active = |j: &Job| {
        old.active
            .iter()
            .flatten()
            .any(|r| r.uid.is_some() && r.uid == j.metadata.uid)
    };
    let mut running: Vec<&Job> = Vec::new();
    let (mut succeeded, mut failed): (Vec<&Job>, Vec<&Job>) = (Vec::new(), Vec::new());
    for j in &children {
        let st = j.status.as_ref();
        if !job::is_finished(st) {
            running.push(j);
            continue;
        }
        let complete = st.is_some_and(|s| job::true_condition(s, "Complete").is_some());
        if complete {
            succeeded.push(j);
            if let Some(t) = st.and_then(|s| s.completion_time.as_ref())
                && status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|l| l.0 < t.0)
            {
                status.last_successful_time = Some(t.clone());
            }
        } else {
            failed.push(j);
        }
        if was_active(j) {
            let cond = if complete { "Complete" } else { "Failed" };
            out.actions.push(events::normal(
                ctx,
                involved.clone(),
                reason::SAW_COMPLETED_JOB,
                COMPONENT,
                format!(
                    "Saw completed job: {}, condition: {cond}",
                    meta::name(&j.metadata)
                ),
            ));
        }
    }
    let delete_job = |out: &mut Reconciled, j: &Job| {
        if let Ok(key) = meta_key("Job", &j.metadata) {
            out.actions.push(Action::Delete {
                key,
                mod_revision: mod_revision(&j.metadata),
            });
            out.actions.push(events::normal(
                ctx,
                involved.clone(),
                reason::SUCCESSFUL_DELETE,
                COMPONENT,
                format!("Deleted job {}", meta::name(&j.metadata)),
            ));
        }
    };
    // History limits, oldest first.
    for (list, limit) in [
        (&succeeded, spec.successful_jobs_history_limit.unwrap_or(3)),
        (&failed, spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let limit = usize::try_from(limit).unwrap_or(0);
        if list.len() > limit {
            for j in &list[..list.len() - limit] {
                delete_job(&mut out, j);
            }
        }
    }

    let schedule = parse_schedule(&spec.schedule, spec.time_zone.as_deref())
        .map_err(|m| invalid("spec.schedule", &m))?;
    let suspended = spec.suspend.unwrap_or(false);
    if !suspended {
        // Since when schedule times count.
        let seen_since = record
            .and_then(|r| r.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)
            .unwrap_or(now);
        let mut earliest = status
            .last_schedule_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(seen_since);
        if let Some(d) = spec.starting_deadline_seconds {
            let floor = now
                .checked_sub(SignedDuration::from_secs(d.max(0)))
                .unwrap_or(now);
            earliest = earliest.max(floor);
        }
        if let Some(next) = schedule.next_after(now) {
            let left = next.duration_since(now).as_secs().max(0) as u64;
            out.requeue_after(Duration::from_secs(left + 1));
        }
        let (due, missed) = schedule.most_recent(earliest, now);
        if missed > MAX_MISSED {
            once(
                &mut out,
                "Warning",
                reason::TOO_MANY_MISSED_TIMES,
                format!(
                    "too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
                ),
            );
        }
        if let Some(t) = due {
            let jname = job_name(name, t);
            let too_late = spec
                .starting_deadline_seconds
                .is_some_and(|d| now.duration_since(t) > SignedDuration::from_secs(d));
            let exists = observed
                .jobs
                .iter()
                .any(|j| meta::namespace(&j.metadata) == ns && meta::name(&j.metadata) == jname);
            let stamp = |t: Timestamp| Some(Time(truncate_seconds(t)));
            if exists {
                // Made on an earlier pass whose status write did not land.
                if status.last_schedule_time.as_ref().is_none_or(|l| l.0 < t) {
                    status.last_schedule_time = stamp(t);
                }
            } else if too_late {
                once(
                    &mut out,
                    "Warning",
                    reason::MISS_SCHEDULE,
                    format!("Missed scheduled time to start a job: {t}"),
                );
            } else {
                let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
                let blocked = policy == "Forbid" && !running.is_empty();
                if blocked {
                    once(
                        &mut out,
                        "Normal",
                        reason::JOB_ALREADY_ACTIVE,
                        format!(
                            "Not starting job because prior execution is running and concurrency policy is Forbid (scheduled {t})"
                        ),
                    );
                } else {
                    if policy == "Replace" {
                        for j in running.drain(..) {
                            delete_job(&mut out, j);
                        }
                    }
                    let job = new_job(ctx, cj, &uid, &jname, t);
                    created_ref = Some(job_ref(&job));
                    status.last_schedule_time = stamp(t);
                    out.actions.push(Action::Create(job.into()));
                    out.actions.push(events::normal(
                        ctx,
                        involved.clone(),
                        reason::SUCCESSFUL_CREATE,
                        COMPONENT,
                        format!("Created job {jname}"),
                    ));
                }
            }
        }
    }
    // Active references: the running Jobs, and the one just made.
    let mut active: Vec<ObjectReference> = running.iter().map(|j| job_ref(j)).collect();
    active.extend(created_ref);
    status.active = Some(active).filter(|a| !a.is_empty());

    let mut m = ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
        uid: Some(uid.clone()),
        generation: Some(cj.metadata.generation.unwrap_or(1)),
        labels: cj.metadata.labels.clone(),
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
            CronJob {
                metadata: m,
                spec: None,
                status: Some(status),
            }
            .into(),
        ));
    }
    Ok(out)
}

/// The Job for schedule time `t` from the CronJob's template.
fn new_job(ctx: &Context, cj: &CronJob, uid: &str, name: &str, t: Timestamp) -> Job {
    let name_cj = meta::name(&cj.metadata);
    let ns = meta::namespace(&cj.metadata);
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut metadata = ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
        uid: Some(ctx.new_uid()),
        generation: Some(1),
        creation_timestamp: Some(ctx.now_time()),
        labels: tmeta.labels,
        annotations: tmeta.annotations,
        owner_references: Some(vec![meta::controller_ref(
            "batch/v1", "CronJob", name_cj, uid,
        )]),
        ..Default::default()
    };
    meta::set_annotation(
        &mut metadata,
        SCHEDULED_TIMESTAMP_ANNOTATION,
        truncate_seconds(t).to_string(),
    );
    Job {
        metadata,
        spec: template.spec,
        status: None,
    }
}
