//! The CronJob controller on a fake clock: schedules, concurrency policies, deadlines,
//! history limits, and the Jobs it makes run by the Job controller.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kommit_reconciler::cronjob::{self, parse_schedule};
use kommit_reconciler::{Desired, Requeue, job, meta, podutil};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[test]
fn schedules_follow_kubernetes_cron_syntax() {
    let at = ts("2024-03-10T10:17:30Z");
    let next = |s: &str, tz: Option<&str>| {
        parse_schedule(s, tz)
            .unwrap()
            .next_after(at)
            .unwrap()
            .to_string()
    };
    assert_eq!(next("* * * * *", None), "2024-03-10T10:18:00Z");
    assert_eq!(next("*/15 * * * *", None), "2024-03-10T10:30:00Z");
    assert_eq!(next("@hourly", None), "2024-03-10T11:00:00Z");
    assert_eq!(next("@daily", None), "2024-03-11T00:00:00Z");
    assert_eq!(next("@midnight", None), "2024-03-11T00:00:00Z");
    assert_eq!(next("@weekly", None), "2024-03-17T00:00:00Z");
    assert_eq!(next("@monthly", None), "2024-04-01T00:00:00Z");
    assert_eq!(next("@yearly", None), "2025-01-01T00:00:00Z");
    assert_eq!(next("0 9 * * MON-FRI", None), "2024-03-11T09:00:00Z");
    assert_eq!(next("30 2 1 JAN *", None), "2025-01-01T02:30:00Z");
    // Day of month OR day of week, as Vixie cron: the 15th or any Monday.
    assert_eq!(next("0 0 15 * 1", None), "2024-03-11T00:00:00Z");
    // Time zones: 03:00 in New York (EDT since that morning) is 07:00 UTC.
    assert_eq!(
        next("0 3 * * *", Some("America/New_York")),
        "2024-03-11T07:00:00Z"
    );
    assert_eq!(
        next("TZ=Europe/Paris 0 12 * * *", None),
        "2024-03-10T11:00:00Z"
    );
    assert!(parse_schedule("* * * *", None).is_err());
    assert!(
        parse_schedule("0 * * * * *", None).is_err(),
        "no seconds field"
    );
    assert!(parse_schedule("61 * * * *", None).is_err());
    assert!(parse_schedule("* * * * *", Some("Mars/Olympus")).is_err());
}

#[test]
fn missed_times_are_counted_and_the_latest_is_due() {
    let s = parse_schedule("*/10 * * * *", None).unwrap();
    let (due, n) = s.most_recent(ts("2024-01-01T00:00:00Z"), ts("2024-01-01T00:35:00Z"));
    assert_eq!(n, 3);
    assert_eq!(due.unwrap().to_string(), "2024-01-01T00:30:00Z");
    let (due, n) = s.most_recent(ts("2024-01-01T00:00:00Z"), ts("2024-01-05T00:05:00Z"));
    assert!(n > cronjob::MAX_MISSED);
    assert_eq!(due.unwrap().to_string(), "2024-01-05T00:00:00Z");
    let (due, n) = s.most_recent(ts("2024-01-01T00:31:00Z"), ts("2024-01-01T00:35:00Z"));
    assert_eq!((due, n), (None, 0));
}

fn cron(extra: &str) -> CronJob {
    yaml(&format!(
        "apiVersion: batch/v1
kind: CronJob
metadata:
  name: tick
  namespace: default
spec:
  schedule: \"*/5 * * * *\"
{extra}  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: tick
            image: kommit.dev/demo:1
"
    ))
}

/// T0 is 22:13:20 UTC: the next */5 time is 22:15:00, 100 s later.
const TO_FIRST: i64 = 100;

fn sim_with(cj: CronJob) -> Sim {
    let nodes: Vec<Node> = fixture_all("nodes.yaml");
    let mut sim = Sim::new(nodes);
    sim.desired = Desired {
        cron_jobs: vec![cj],
        ..Desired::default()
    };
    // The controller first sees the CronJob at T0.
    sim.reconcile();
    sim
}

fn jobs(sim: &Sim) -> Vec<Job> {
    let mut j: Vec<Job> = sim
        .observed()
        .jobs
        .into_iter()
        .filter(|j| j.spec.is_some())
        .collect();
    j.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    j
}

fn status(sim: &Sim) -> CronJobStatus {
    sim.observed()
        .cron_job_status("default", "tick")
        .and_then(|c| c.status.clone())
        .unwrap_or_default()
}

/// When the CronJob controller alone asks to run again.
fn requeue(sim: &Sim) -> Requeue {
    cronjob::reconcile(
        &ctx(sim.now),
        &sim.desired.cron_jobs[0],
        &sim.observed(),
        None,
    )
    .unwrap()
    .requeue
}

fn job_pods(sim: &Sim, job: &str) -> Vec<Pod> {
    sim.observed()
        .pods
        .into_iter()
        .filter(|p| meta::controller_of(&p.metadata).is_some_and(|o| o.name == job))
        .collect()
}

/// Ends every running pod of a Job successfully.
fn succeed_pods(sim: &mut Sim, job: &str) {
    for mut p in job_pods(sim, job) {
        if podutil::phase(&p) == "Running" {
            p.status.as_mut().unwrap().phase = Some("Succeeded".into());
            p.status.as_mut().unwrap().conditions = None;
            sim.store.put(p.into()).unwrap();
        }
    }
}

#[test]
fn a_job_is_made_at_each_schedule_time_and_run_by_the_job_controller() {
    let mut sim = sim_with(cron(""));
    sim.step(0);
    assert!(jobs(&sim).is_empty(), "nothing before the first time");
    assert_eq!(
        requeue(&sim),
        Requeue::After(std::time::Duration::from_secs(TO_FIRST as u64 + 1)),
        "requeued at the next schedule time"
    );
    sim.step(TO_FIRST);
    let made = jobs(&sim);
    assert_eq!(made.len(), 1);
    let j = &made[0];
    let first = cronjob::job_name("tick", t(TO_FIRST));
    assert_eq!(meta::name(&j.metadata), first);
    assert_eq!(
        meta::annotation(&j.metadata, cronjob::SCHEDULED_TIMESTAMP_ANNOTATION),
        Some("2023-11-14T22:15:00Z")
    );
    let uid = meta::desired_uid("CronJob", &sim.desired.cron_jobs[0].metadata);
    assert!(meta::is_controlled_by(&j.metadata, "CronJob", "tick", &uid));
    let st = status(&sim);
    assert_eq!(st.active.as_ref().map(Vec::len), Some(1));
    assert_eq!(
        st.last_schedule_time.as_ref().map(|t| t.0.to_string()),
        Some("2023-11-14T22:15:00Z".into())
    );
    // The Job controller runs it: a pod, then Complete.
    for _ in 0..4 {
        sim.step(1);
    }
    assert_eq!(job_pods(&sim, &first).len(), 1);
    succeed_pods(&mut sim, &first);
    sim.step(1);
    sim.step(1);
    let done = jobs(&sim)
        .into_iter()
        .find(|j| meta::name(&j.metadata) == first)
        .unwrap();
    assert!(job::true_condition(done.status.as_ref().unwrap(), "Complete").is_some());
    let st = status(&sim);
    assert!(st.active.is_none(), "{st:?}");
    assert!(st.last_successful_time.is_some());
    assert!(sim.all_events.iter().any(|(r, _)| r == "SawCompletedJob"));
    // The next one, five minutes later; nothing in between.
    sim.step(200);
    assert_eq!(jobs(&sim).len(), 1);
    sim.step(100);
    assert_eq!(jobs(&sim).len(), 2);
}

#[test]
fn forbid_waits_for_the_running_job_and_replace_replaces_it() {
    let mut sim = sim_with(cron("  concurrencyPolicy: Forbid\n"));
    sim.step(TO_FIRST);
    sim.step(300);
    assert_eq!(jobs(&sim).len(), 1, "Forbid: no second Job while one runs");
    assert!(sim.all_events.iter().any(|(r, _)| r == "JobAlreadyActive"));
    // Once the first is done, the missed time (no deadline) starts.
    let first = meta::name(&jobs(&sim)[0].metadata).to_string();
    for _ in 0..3 {
        sim.step(1);
    }
    succeed_pods(&mut sim, &first);
    for _ in 0..3 {
        sim.step(1);
    }
    assert_eq!(jobs(&sim).len(), 2);

    let mut sim = sim_with(cron("  concurrencyPolicy: Replace\n"));
    sim.step(TO_FIRST);
    let first = meta::name(&jobs(&sim)[0].metadata).to_string();
    sim.step(300);
    let now: Vec<String> = jobs(&sim)
        .iter()
        .map(|j| meta::name(&j.metadata).to_string())
        .collect();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], first, "Replace: the running Job is deleted");
    assert!(
        sim.all_events
            .iter()
            .any(|(r, m)| r == "SuccessfulDelete" && m.contains(&first))
    );
    // Its pods go with it.
    sim.step(1);
    sim.step(1);
    assert!(job_pods(&sim, &first).is_empty());
}

#[test]
fn allow_runs_jobs_side_by_side() {
    let mut sim = sim_with(cron(""));
    sim.step(TO_FIRST);
    sim.step(300);
    sim.step(300);
    assert_eq!(jobs(&sim).len(), 3);
    assert_eq!(status(&sim).active.map(|a| a.len()), Some(3));
}

#[test]
fn a_time_past_the_starting_deadline_is_skipped() {
    let mut sim = sim_with(cron("  startingDeadlineSeconds: 30\n"));
    sim.step(10);
    // The controller was away for the 22:15 time; it looks again at 22:15:40.
    sim.now += TO_FIRST - 10 + 40;
    sim.reconcile();
    assert!(jobs(&sim).is_empty(), "too late for 22:15 (deadline 30 s)");
    // Counting from now - deadline, the 22:15 time is not even due any more.
    assert!(sim.all_events.iter().all(|(r, _)| r != "SuccessfulCreate"));
    sim.step(260);
    assert_eq!(jobs(&sim).len(), 1, "22:20 starts on time");
}

#[test]
fn a_missed_time_within_the_deadline_starts_late() {
    let mut sim = sim_with(cron("  startingDeadlineSeconds: 120\n"));
    sim.step(10);
    sim.now += TO_FIRST - 10 + 60;
    sim.reconcile();
    assert_eq!(jobs(&sim).len(), 1);
}

#[test]
fn suspended_cronjobs_start_nothing() {
    let mut sim = sim_with(cron("  suspend: true\n"));
    sim.step(TO_FIRST);
    sim.step(300);
    assert!(jobs(&sim).is_empty());
    assert_eq!(requeue(&sim), Requeue::AwaitChange);
}

#[test]
fn history_limits_keep_the_newest_finished_jobs() {
    let mut sim = sim_with(cron(
        "  successfulJobsHistoryLimit: 1\n  failedJobsHistoryLimit: 0\n",
    ));
    sim.step(TO_FIRST);
    for round in 0..3 {
        for _ in 0..3 {
            sim.step(1);
        }
        let all = jobs(&sim);
        let newest = meta::name(&all.last().unwrap().metadata).to_string();
        succeed_pods(&mut sim, &newest);
        sim.step(1);
        sim.step(1);
        if round < 2 {
            sim.step(300 - 5);
        }
    }
    let left = jobs(&sim);
    assert_eq!(
        left.len(),
        1,
        "{:?}",
        left.iter().map(|j| &j.metadata.name).collect::<Vec<_>>()
    );
    assert!(
        sim.all_events
            .iter()
            .filter(|(r, _)| r == "SuccessfulDelete")
            .count()
            >= 2
    );
}

#[test]
fn removing_the_cronjob_from_git_removes_its_jobs_and_pods() {
    let mut sim = sim_with(cron(""));
    sim.step(TO_FIRST);
    for _ in 0..3 {
        sim.step(1);
    }
    assert_eq!(jobs(&sim).len(), 1);
    sim.desired.cron_jobs.clear();
    sim.step(1);
    sim.step(1);
    assert!(jobs(&sim).is_empty());
    assert!(
        sim.observed()
            .pods
            .iter()
            .all(|p| meta::controller_of(&p.metadata).is_none())
    );
    assert!(sim.observed().cron_job_status("default", "tick").is_none());
}

#[test]
fn ttl_deletes_a_cronjob_made_job() {
    let mut cj = cron("");
    cj.spec
        .as_mut()
        .unwrap()
        .job_template
        .spec
        .as_mut()
        .unwrap()
        .ttl_seconds_after_finished = Some(10);
    let mut sim = sim_with(cj);
    sim.step(TO_FIRST);
    for _ in 0..3 {
        sim.step(1);
    }
    let name = meta::name(&jobs(&sim)[0].metadata).to_string();
    succeed_pods(&mut sim, &name);
    sim.step(1);
    sim.step(11);
    assert!(
        jobs(&sim).is_empty(),
        "the finished Job is deleted after its TTL"
    );
    sim.step(1);
    assert!(job_pods(&sim, &name).is_empty());
}

#[test]
fn forbid_never_runs_two_jobs_over_an_hour_of_slow_runs() {
    let mut cj = cron("  concurrencyPolicy: Forbid\n");
    cj.spec.as_mut().unwrap().schedule = "* * * * *".into();
    let mut sim = sim_with(cj);
    // Each run takes 90 s, longer than the schedule's minute.
    let mut started: std::collections::BTreeMap<String, i64> = Default::default();
    let mut max_active = 0;
    for _ in 0..(60 * 60 / 5) {
        sim.step(5);
        let running: Vec<Job> = jobs(&sim)
            .into_iter()
            .filter(|j| !job::is_finished(j.status.as_ref()))
            .collect();
        max_active = max_active.max(running.len());
        for j in &running {
            let name = meta::name(&j.metadata).to_string();
            let since = *started.entry(name.clone()).or_insert(sim.now);
            if sim.now - since >= 90 {
                succeed_pods(&mut sim, &name);
            }
        }
    }
    assert_eq!(max_active, 1, "Forbid: one Job at a time");
    // Runs follow each other: about one every 90-100 s over the hour.
    assert!(started.len() >= 30, "{} runs", started.len());
    // History: three successful Jobs kept.
    let finished = jobs(&sim)
        .into_iter()
        .filter(|j| job::is_finished(j.status.as_ref()))
        .count();
    assert!(finished <= 3, "{finished} finished Jobs kept");
}
