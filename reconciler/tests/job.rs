//! The Job controller from fixtures, in a simulated cluster whose kubelet runs pods and a
//! test hand that decides how they end.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kommit_reconciler::{Desired, Object, Requeue, job, meta, podutil, reconcile_all};

fn job_yaml(extra: &str, restart: &str, indexed: bool) -> Job {
    let mode = if indexed {
        "  completionMode: Indexed\n"
    } else {
        ""
    };
    yaml(&format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: pi
  namespace: default
spec:
{extra}{mode}  template:
    metadata:
      labels: {{app: pi}}
    spec:
      restartPolicy: {restart}
      containers:
      - name: pi
        image: kommit.dev/demo:1
"
    ))
}

fn sim_with(job: Job) -> Sim {
    let nodes: Vec<Node> = fixture_all("nodes.yaml");
    let mut sim = Sim::new(nodes);
    sim.desired = Desired {
        jobs: vec![job],
        ..Desired::default()
    };
    sim
}

fn job_pods(sim: &Sim) -> Vec<Pod> {
    sim.observed()
        .pods
        .into_iter()
        .filter(|p| meta::controller_of(&p.metadata).is_some_and(|o| o.kind == "Job"))
        .collect()
}

fn status(sim: &Sim) -> JobStatus {
    sim.observed()
        .job("default", "pi")
        .and_then(|j| j.status.clone())
        .unwrap_or_default()
}

/// Ends a running pod with `exit code` at the simulation's time.
fn finish(sim: &mut Sim, pod: &Pod, code: i32) {
    let mut p = pod.clone();
    let st = p.status.get_or_insert_with(Default::default);
    st.phase = Some(if code == 0 { "Succeeded" } else { "Failed" }.into());
    st.conditions = None;
    if let Some(cs) = st.container_statuses.as_mut() {
        for c in cs {
            c.ready = false;
            c.state = Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    finished_at: Some(Time(t(sim.now))),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    sim.store.put(p.into()).unwrap();
}

fn running(sim: &Sim) -> Vec<Pod> {
    job_pods(sim)
        .into_iter()
        .filter(|p| podutil::phase(p) == "Running")
        .collect()
}

/// Steps one second at a time until `n` job pods run (created, bound, started).
fn until_running(sim: &mut Sim, n: usize) {
    for _ in 0..5 {
        if running(sim).len() >= n {
            return;
        }
        sim.step(1);
    }
    assert_eq!(running(sim).len(), n);
}

fn condition(st: &JobStatus, type_: &str) -> Option<(String, String)> {
    job::true_condition(st, type_).map(|c| {
        (
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default(),
        )
    })
}

#[test]
fn completions_run_at_most_parallelism_at_once_and_complete() {
    let mut sim = sim_with(job_yaml(
        "  completions: 3\n  parallelism: 2\n",
        "Never",
        false,
    ));
    let mut max_active = 0;
    for _ in 0..20 {
        sim.step(1);
        let active = job_pods(&sim)
            .iter()
            .filter(|p| podutil::is_active(p))
            .count();
        max_active = max_active.max(active);
        // One pod finishes per step.
        if let Some(p) = running(&sim).first() {
            finish(&mut sim, p, 0);
        }
        if job::is_finished(Some(&status(&sim))) {
            break;
        }
    }
    let st = status(&sim);
    assert_eq!(st.succeeded, Some(3), "{st:?}");
    assert_eq!(st.active, None);
    assert!(condition(&st, "Complete").is_some(), "{st:?}");
    assert!(st.completion_time.is_some() && st.start_time.is_some());
    assert_eq!(max_active, 2, "parallelism 2");
    let pods = job_pods(&sim);
    assert_eq!(pods.len(), 3, "no pod beyond the completions");
    for p in &pods {
        let l = p.metadata.labels.as_ref().unwrap();
        assert_eq!(l.get(job::JOB_NAME_LABEL).map(String::as_str), Some("pi"));
        let uid = meta::desired_uid("Job", &sim.desired.jobs[0].metadata);
        assert_eq!(l.get(job::CONTROLLER_UID_LABEL), Some(&uid));
        assert!(meta::is_controlled_by(&p.metadata, "Job", "pi", &uid));
    }
    let created = sim
        .all_events
        .iter()
        .filter(|(r, _)| r == "SuccessfulCreate")
        .count();
    assert_eq!(created, 3);
    assert!(
        sim.all_events
            .iter()
            .any(|(r, m)| r == "Completed" && m == "Job completed")
    );
    // A finished Job makes nothing more.
    let later = sim.step(30);
    assert!(created_kind(&later, "Pod").is_empty());
}

fn created_kind(actions: &[kommit_reconciler::Action], kind: &str) -> Vec<String> {
    created(actions, kind)
        .into_iter()
        .map(|o| meta::name(o.metadata()).to_string())
        .collect()
}

#[test]
fn failing_pods_stop_at_the_backoff_limit_with_backoff_between_them() {
    let mut sim = sim_with(job_yaml("  backoffLimit: 2\n", "Never", false));
    let mut created_at = Vec::new();
    for _ in 0..200 {
        let actions = sim.step(1);
        if !created_kind(&actions, "Pod").is_empty() {
            created_at.push(sim.now);
        }
        for p in running(&sim) {
            finish(&mut sim, &p, 1);
        }
        if job::is_finished(Some(&status(&sim))) {
            break;
        }
    }
    let st = status(&sim);
    assert_eq!(
        condition(&st, "Failed"),
        Some((
            "BackoffLimitExceeded".into(),
            "Job has reached the specified backoff limit".into()
        )),
        "{st:?}"
    );
    assert_eq!(
        st.failed,
        Some(3),
        "backoffLimit 2: the third failure fails the Job"
    );
    assert_eq!(created_at.len(), 3);
    // 10 s after the first failure, 20 s after the second (pods end one step after start).
    let gaps: Vec<i64> = created_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] >= 10 && gaps[1] >= 20,
        "back-off between pods: {gaps:?}"
    );
    assert!(
        sim.all_events
            .iter()
            .any(|(r, _)| r == "BackoffLimitExceeded")
    );
}

#[test]
fn on_failure_restarts_count_against_the_backoff_limit() {
    let mut sim = sim_with(job_yaml("  backoffLimit: 1\n", "OnFailure", false));
    until_running(&mut sim, 1);
    let mut p = running(&sim).remove(0);
    p.status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .restart_count = 2;
    sim.store.put(p.into()).unwrap();
    sim.step(1);
    let st = status(&sim);
    assert_eq!(
        condition(&st, "Failed").map(|c| c.0),
        Some("BackoffLimitExceeded".into())
    );
    assert!(job_pods(&sim).iter().all(|p| !podutil::is_active(p)));
}

#[test]
fn active_deadline_fails_the_job_and_stops_its_pods() {
    let mut sim = sim_with(job_yaml(
        "  activeDeadlineSeconds: 30\n  parallelism: 2\n  completions: 4\n",
        "Never",
        false,
    ));
    let first = sim.step(1);
    assert_eq!(created_kind(&first, "Pod").len(), 2);
    // The controller asks to look again when the deadline passes.
    let ctx = ctx(sim.now);
    let pass = reconcile_all(&ctx, &sim.desired, &sim.observed(), &sim.config);
    match pass.outcome.requeue {
        Requeue::After(d) => assert!(d.as_secs() <= 31, "{d:?}"),
        Requeue::AwaitChange => panic!("no requeue for the deadline"),
    }
    until_running(&mut sim, 2);
    sim.step(10);
    assert_eq!(running(&sim).len(), 2);
    sim.step(25);
    let st = status(&sim);
    assert_eq!(
        condition(&st, "Failed"),
        Some((
            "DeadlineExceeded".into(),
            "Job was active longer than specified deadline".into()
        ))
    );
    sim.step(1);
    assert!(job_pods(&sim).is_empty(), "running pods deleted");
}

#[test]
fn ttl_after_finished_removes_the_pods_and_keeps_the_status() {
    let mut sim = sim_with(job_yaml("  ttlSecondsAfterFinished: 60\n", "Never", false));
    until_running(&mut sim, 1);
    let p = running(&sim).remove(0);
    finish(&mut sim, &p, 0);
    sim.step(1);
    assert!(condition(&status(&sim), "Complete").is_some());
    sim.step(30);
    assert_eq!(job_pods(&sim).len(), 1, "kept until the TTL");
    sim.step(31);
    assert!(job_pods(&sim).is_empty(), "pods removed after the TTL");
    let st = status(&sim);
    assert!(condition(&st, "Complete").is_some());
    assert_eq!(st.succeeded, Some(1));
    sim.step(5);
    assert!(job_pods(&sim).is_empty());
}

#[test]
fn indexed_jobs_give_every_index_one_success() {
    let mut sim = sim_with(job_yaml(
        "  completions: 3\n  parallelism: 3\n",
        "Never",
        true,
    ));
    until_running(&mut sim, 3);
    let pods = running(&sim);
    let mut idx: Vec<i32> = pods.iter().filter_map(job::pod_index).collect();
    idx.sort();
    assert_eq!(idx, vec![0, 1, 2]);
    let env = &pods[0].spec.as_ref().unwrap().containers[0].env;
    assert!(
        env.iter()
            .flatten()
            .any(|e| e.name == "JOB_COMPLETION_INDEX")
    );
    // Index 1 fails, the others succeed: only index 1 runs again.
    for p in &pods {
        let code = if job::pod_index(p) == Some(1) { 1 } else { 0 };
        finish(&mut sim, p, code);
    }
    sim.step(1);
    assert_eq!(status(&sim).completed_indexes.as_deref(), Some("0,2"));
    sim.step(15);
    until_running(&mut sim, 1);
    let again = running(&sim);
    assert_eq!(again.len(), 1);
    assert_eq!(job::pod_index(&again[0]), Some(1));
    finish(&mut sim, &again[0], 0);
    sim.step(1);
    let st = status(&sim);
    assert_eq!(st.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(st.succeeded, Some(3));
    assert_eq!(st.failed, Some(1));
    assert!(condition(&st, "Complete").is_some());
}

#[test]
fn suspended_jobs_run_nothing() {
    let mut sim = sim_with(job_yaml("  suspend: true\n", "Never", false));
    sim.step(1);
    sim.step(1);
    assert!(job_pods(&sim).is_empty());
    assert!(status(&sim).start_time.is_none());
}

#[test]
fn pods_of_a_job_removed_from_git_are_collected_but_status_records_too() {
    let mut sim = sim_with(job_yaml(
        "  parallelism: 2\n  completions: 2\n",
        "Never",
        false,
    ));
    sim.step(1);
    assert_eq!(job_pods(&sim).len(), 2);
    sim.desired.jobs.clear();
    sim.step(1);
    assert!(job_pods(&sim).is_empty());
    assert!(sim.observed().job("default", "pi").is_none());
}

#[test]
fn terminated_job_pods_are_left_to_the_job_by_pod_gc() {
    let mut sim = sim_with(job_yaml(
        "  parallelism: 3\n  completions: 3\n",
        "Never",
        false,
    ));
    sim.config.gc.terminated_pod_threshold = 0;
    until_running(&mut sim, 3);
    for p in running(&sim) {
        finish(&mut sim, &p, 0);
    }
    sim.step(1);
    sim.step(1);
    assert_eq!(job_pods(&sim).len(), 3);
    assert_eq!(status(&sim).succeeded, Some(3));
}

#[test]
fn a_job_status_record_carries_no_spec() {
    let mut sim = sim_with(job_yaml("", "Never", false));
    sim.step(1);
    let rec = sim.observed().job("default", "pi").cloned().unwrap();
    assert!(rec.spec.is_none());
    assert_eq!(
        rec.metadata.uid,
        Some(meta::desired_uid("Job", &sim.desired.jobs[0].metadata))
    );
    let _ = Object::from(rec);
}
