//! The controllers and the scheduler in a loop with a simulated kubelet: rollouts keep
//! their promises at every step and end where they should.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kommit_reconciler::{Desired, deployment, meta, podutil};

fn ready(pods: &[k8s_openapi::api::core::v1::Pod]) -> usize {
    pods.iter().filter(|p| podutil::is_ready(p)).count()
}

fn settle(sim: &mut Sim, app: &str, image: &str, replicas: usize, max_steps: usize) -> usize {
    for i in 0..max_steps {
        sim.step(1);
        let pods = sim.pods_of(app);
        let done = pods.len() == replicas
            && ready(&pods) == replicas
            && pods.iter().all(|p| pod_image(p) == image);
        let st = sim.deployment_status(app);
        let progressed = deployment::condition(&st, "Progressing")
            .and_then(|c| c.reason.as_deref())
            == Some("NewReplicaSetAvailable");
        if done && progressed {
            return i + 1;
        }
    }
    panic!(
        "{app} did not settle on {image} in {max_steps} steps: {:?}",
        sim.pods_of(app)
            .iter()
            .map(|p| (
                p.metadata.name.clone(),
                pod_image(p).to_string(),
                podutil::is_ready(p)
            ))
            .collect::<Vec<_>>()
    );
}

fn first_sim(d: Deployment) -> Sim {
    let mut sim = Sim::new(fixture_all("nodes.yaml"));
    sim.desired = Desired {
        deployments: vec![d],
        revision: Some("c1".into()),
        ..Default::default()
    };
    sim
}

#[test]
fn rolling_update_max_surge_1_max_unavailable_0_never_dips_or_overshoots() {
    let mut sim = first_sim(web("web:1"));
    settle(&mut sim, "web", "web:1", 4, 30);
    // Spread across both nodes.
    let pods = sim.pods_of("web");
    let on_a = pods
        .iter()
        .filter(|p| podutil::node_name(p) == Some("node-a"))
        .count();
    assert_eq!(on_a, 2);

    sim.desired.deployments[0] = web("web:2");
    sim.desired.revision = Some("c2".into());
    let mut max_total = 0;
    let mut min_ready = usize::MAX;
    let mut steps = 0;
    for _ in 0..60 {
        sim.step(1);
        steps += 1;
        let pods = sim.pods_of("web");
        let r = ready(&pods);
        assert!(r >= 4, "step {steps}: only {r} ready");
        assert!(pods.len() <= 5, "step {steps}: {} pods", pods.len());
        max_total = max_total.max(pods.len());
        min_ready = min_ready.min(r);
        if pods.len() == 4 && r == 4 && pods.iter().all(|p| pod_image(p) == "web:2") {
            break;
        }
    }
    assert_eq!(max_total, 5, "the surge was used");
    assert_eq!(min_ready, 4);
    // Final state: one ReplicaSet with 4, the old one at 0 and kept as history.
    settle(&mut sim, "web", "web:2", 4, 10);
    let mut rss = sim.replica_sets();
    rss.sort_by_key(|r| {
        meta::annotation(&r.metadata, meta::DEPLOYMENT_REVISION).map(str::to_string)
    });
    assert_eq!(rss.len(), 2);
    assert_eq!((rs_image(&rss[0]), rs_spec(&rss[0])), ("web:1", 0));
    assert_eq!((rs_image(&rss[1]), rs_spec(&rss[1])), ("web:2", 4));
    let st = sim.deployment_status("web");
    assert_eq!(
        (
            st.replicas,
            st.updated_replicas,
            st.ready_replicas,
            st.available_replicas,
            st.unavailable_replicas
        ),
        (Some(4), Some(4), Some(4), Some(4), Some(0))
    );
    assert_eq!(
        deployment::condition(&st, "Available").unwrap().status,
        "True"
    );
    let record = sim
        .observed()
        .deployment_status("default", "web")
        .unwrap()
        .clone();
    assert_eq!(
        meta::annotation(&record.metadata, meta::DEPLOYMENT_REVISION),
        Some("2")
    );
    // The events tell the story the way kubectl describe would.
    assert!(sim.all_events.iter().any(|(r, _)| r == "ScalingReplicaSet"));
    assert!(sim.all_events.iter().any(|(r, _)| r == "SuccessfulCreate"));
    assert!(sim.all_events.iter().any(|(r, _)| r == "SuccessfulDelete"));
    assert!(sim.all_events.iter().any(|(r, _)| r == "Scheduled"));
}

#[test]
fn rolling_update_with_defaults_keeps_within_25_percent() {
    let mut d = web("web:1");
    d.spec.as_mut().unwrap().strategy = None;
    set_replicas(&mut d, 8);
    let mut sim = first_sim(d.clone());
    settle(&mut sim, "web", "web:1", 8, 30);
    set_image(&mut d, "web:2");
    sim.desired.deployments[0] = d;
    for step in 0..80 {
        sim.step(1);
        let pods = sim.pods_of("web");
        // maxSurge 2, maxUnavailable 2 of 8.
        assert!(pods.len() <= 10, "step {step}: {} pods", pods.len());
        assert!(ready(&pods) >= 6, "step {step}: {} ready", ready(&pods));
    }
    settle(&mut sim, "web", "web:2", 8, 10);
}

#[test]
fn recreate_stops_everything_then_starts_the_new_version() {
    let d: Deployment = fixture("deployment-recreate.yaml");
    let mut sim = first_sim(d.clone());
    settle(&mut sim, "db", "db:1", 2, 20);
    let mut d2 = d;
    set_image(&mut d2, "db:2");
    sim.desired.deployments[0] = d2;
    let mut saw_empty = false;
    for _ in 0..30 {
        sim.step(1);
        let pods = sim.pods_of("db");
        let images: std::collections::HashSet<&str> = pods.iter().map(pod_image).collect();
        assert!(images.len() <= 1, "old and new pods together: {images:?}");
        saw_empty |= pods.is_empty();
    }
    assert!(saw_empty);
    settle(&mut sim, "db", "db:2", 2, 10);
}

#[test]
fn rollover_mid_rollout_supersedes_cleanly() {
    let mut d = web("web:1");
    d.spec
        .as_mut()
        .unwrap()
        .strategy
        .as_mut()
        .unwrap()
        .rolling_update
        .as_mut()
        .unwrap()
        .max_unavailable = Some(IntOrString::Int(1));
    let mut sim = first_sim(d.clone());
    settle(&mut sim, "web", "web:1", 4, 30);
    // v2's pods never become ready (a bad image); v3 arrives while v2 is stuck.
    sim.never_ready = |p| pod_image(p) == "web:2";
    set_image(&mut d, "web:2");
    sim.desired.deployments[0] = d.clone();
    for _ in 0..10 {
        sim.step(1);
        let pods = sim.pods_of("web");
        assert!(pods.len() <= 5);
        assert!(ready(&pods) >= 3);
    }
    assert!(sim.pods_of("web").iter().any(|p| pod_image(p) == "web:2"));
    set_image(&mut d, "web:3");
    sim.desired.deployments[0] = d;
    for _ in 0..40 {
        sim.step(1);
        let pods = sim.pods_of("web");
        assert!(pods.len() <= 5, "{} pods", pods.len());
        assert!(ready(&pods) >= 3, "{} ready", ready(&pods));
    }
    settle(&mut sim, "web", "web:3", 4, 10);
    // Nothing of v2 is left running.
    assert!(sim.pods_of("web").iter().all(|p| pod_image(p) == "web:3"));
    let rss = sim.replica_sets();
    assert_eq!(rss.iter().filter(|r| rs_spec(r) > 0).count(), 1);
}

#[test]
fn stuck_rollout_reports_progress_deadline_exceeded_and_next_commit_recovers() {
    let mut d = web("web:1");
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(30);
    let mut sim = first_sim(d.clone());
    settle(&mut sim, "web", "web:1", 4, 30);
    sim.never_ready = |p| pod_image(p) == "web:bad";
    set_image(&mut d, "web:bad");
    sim.desired.deployments[0] = d.clone();
    for _ in 0..40 {
        sim.step(1);
        assert!(ready(&sim.pods_of("web")) >= 4);
    }
    let st = sim.deployment_status("web");
    let p = deployment::condition(&st, "Progressing").unwrap();
    assert_eq!(
        (p.status.as_str(), p.reason.as_deref()),
        ("False", Some("ProgressDeadlineExceeded"))
    );
    assert_eq!(
        deployment::condition(&st, "Available").unwrap().status,
        "True"
    );
    set_image(&mut d, "web:good");
    sim.desired.deployments[0] = d;
    settle(&mut sim, "web", "web:good", 4, 40);
}

#[test]
fn scale_up_and_down_through_git() {
    let mut d = web("web:1");
    let mut sim = first_sim(d.clone());
    settle(&mut sim, "web", "web:1", 4, 30);
    set_replicas(&mut d, 7);
    sim.desired.deployments[0] = d.clone();
    settle(&mut sim, "web", "web:1", 7, 20);
    set_replicas(&mut d, 2);
    sim.desired.deployments[0] = d;
    settle(&mut sim, "web", "web:1", 2, 20);
    assert_eq!(sim.replica_sets().len(), 1);
}

#[test]
fn a_lost_node_s_pods_are_replaced_on_the_other_node() {
    let mut sim = first_sim(web("web:1"));
    settle(&mut sim, "web", "web:1", 4, 30);
    // node-b's kubelet dies right after its last lease renewal.
    let killed = sim.now;
    sim.live.retain(|n| n != "node-b");
    let on_b = |sim: &Sim| {
        sim.pods_of("web")
            .iter()
            .filter(|p| podutil::node_name(p) == Some("node-b"))
            .count()
    };
    assert_eq!(on_b(&sim), 2);
    let mut unknown_at = None;
    let mut replaced_at = None;
    for _ in 0..400 {
        sim.step(1);
        let obs = sim.observed();
        let b = obs.node("node-b").unwrap();
        if unknown_at.is_none() && kommit_reconciler::scheduler::node_ready(b) == Some("Unknown") {
            unknown_at = Some(sim.now);
        }
        let pods = sim.pods_of("web");
        if replaced_at.is_none() && on_b(&sim) == 0 && ready(&pods) == 4 {
            replaced_at = Some(sim.now);
        }
        // Never more than 2 pods lost to the outage, never more than 4 + surge pods.
        assert!(pods.len() <= 5);
    }
    // Unknown once the lease is more than 40 s old.
    assert_eq!(unknown_at, Some(killed + 41));
    // Its pods are marked for deletion 300 s later and replaced on node-a within seconds.
    let replaced = replaced_at.expect("pods replaced");
    assert!(
        replaced >= killed + 41 + 300 && replaced <= killed + 41 + 300 + 5,
        "replaced at +{}",
        replaced - killed
    );
    let pods = sim.pods_of("web");
    assert_eq!(pods.len(), 4);
    assert!(pods.iter().all(|p| podutil::node_name(p) == Some("node-a")));
    // New pods were never scheduled onto the lost node.
    assert!(
        sim.observed()
            .pods
            .iter()
            .filter(|p| podutil::node_name(p) == Some("node-b"))
            .all(podutil::is_terminating)
    );
}

#[test]
fn deleting_the_deployment_in_git_removes_everything() {
    let mut sim = first_sim(web("web:1"));
    settle(&mut sim, "web", "web:1", 4, 30);
    sim.desired.deployments.clear();
    sim.step(1);
    sim.step(1);
    let obs = sim.observed();
    assert!(obs.pods.is_empty());
    assert!(obs.replica_sets.is_empty());
    assert!(obs.deployments.is_empty());
}
