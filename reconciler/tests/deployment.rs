//! Deployment controller decisions, one sync at a time, from fixtures.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kommit_reconciler::deployment::{self, Strategy, scaled_value};
use kommit_reconciler::meta::{self, DEPLOYMENT_REVISION, POD_TEMPLATE_HASH};
use kommit_reconciler::{Action, Object, Observed, ReconcileError, Requeue};

/// The ReplicaSet the controller makes for `d`, with `replicas` of which `available`
/// are available, at `revision`, created at `T0 + created`.
fn rs_for(
    d: &Deployment,
    replicas: i32,
    available: i32,
    revision: i64,
    created: i64,
) -> ReplicaSet {
    let out = deployment::reconcile(&ctx(created), d, &Observed::default(), None).unwrap();
    let mut rs = match created_rs(&out.actions) {
        Some(rs) => rs,
        None => panic!("no ReplicaSet created"),
    };
    rs.spec.as_mut().unwrap().replicas = Some(replicas);
    meta::set_annotation(&mut rs.metadata, DEPLOYMENT_REVISION, revision.to_string());
    meta::set_annotation(
        &mut rs.metadata,
        meta::DESIRED_REPLICAS,
        d.spec.as_ref().unwrap().replicas.unwrap().to_string(),
    );
    rs.metadata.resource_version = Some(format!("{}", 10 + created));
    rs.metadata.creation_timestamp = Some(Time(t(created)));
    rs.status = Some(ReplicaSetStatus {
        replicas,
        ready_replicas: Some(available),
        available_replicas: Some(available),
        observed_generation: Some(1),
        ..Default::default()
    });
    rs
}

fn created_rs(actions: &[Action]) -> Option<ReplicaSet> {
    created(actions, "ReplicaSet")
        .into_iter()
        .next()
        .map(|o| match o {
            Object::ReplicaSet(rs) => rs.clone(),
            _ => unreachable!(),
        })
}

fn updated_rs(actions: &[Action]) -> Vec<ReplicaSet> {
    updated(actions, "ReplicaSet")
        .into_iter()
        .map(|o| match o {
            Object::ReplicaSet(rs) => rs.clone(),
            _ => unreachable!(),
        })
        .collect()
}

fn written_status(actions: &[Action]) -> Option<Deployment> {
    actions.iter().find_map(|a| match a {
        Action::WriteStatus(Object::Deployment(d)) => Some(d.clone()),
        _ => None,
    })
}

fn observed_with(rss: Vec<ReplicaSet>, status: Option<DeploymentStatus>) -> Observed {
    let mut o = Observed {
        replica_sets: rss,
        ..Default::default()
    };
    if let Some(s) = status {
        o.deployments.push(Deployment {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                resource_version: Some("5".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(s),
        });
    }
    o
}

fn cond<'a>(
    s: &'a DeploymentStatus,
    type_: &str,
) -> &'a k8s_openapi::api::apps::v1::DeploymentCondition {
    deployment::condition(s, type_).unwrap()
}

#[test]
fn new_deployment_creates_hashed_owned_replicaset() {
    let d = web("web:1");
    let out = deployment::reconcile(&ctx(0), &d, &Observed::default(), Some("abc123")).unwrap();
    let rs = created_rs(&out.actions).unwrap();
    let hash = rs.metadata.labels.as_ref().unwrap()[POD_TEMPLATE_HASH].clone();
    assert_eq!(meta::name(&rs.metadata), format!("web-{hash}"));
    let spec = rs.spec.as_ref().unwrap();
    assert_eq!(
        spec.selector.match_labels.as_ref().unwrap()[POD_TEMPLATE_HASH],
        hash
    );
    assert_eq!(spec.selector.match_labels.as_ref().unwrap()["app"], "web");
    let tlabels = spec
        .template
        .as_ref()
        .unwrap()
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(tlabels[POD_TEMPLATE_HASH], hash);
    // replicas + maxSurge allows all 4 at once for a fresh Deployment.
    assert_eq!(spec.replicas, Some(4));
    let owner = meta::controller_of(&rs.metadata).unwrap();
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Deployment", "web")
    );
    assert_eq!(owner.uid, meta::desired_uid("Deployment", &d.metadata));
    assert_eq!(
        meta::annotation(&rs.metadata, DEPLOYMENT_REVISION),
        Some("1")
    );
    assert_eq!(
        meta::annotation(&rs.metadata, meta::REVISION_ANNOTATION),
        Some("abc123")
    );
    assert_eq!(
        events(&out.actions),
        vec![(
            "ScalingReplicaSet".into(),
            format!("Scaled up replica set web-{hash} from 0 to 4")
        )]
    );
    let status = written_status(&out.actions).unwrap();
    assert_eq!(
        meta::annotation(&status.metadata, DEPLOYMENT_REVISION),
        Some("1")
    );
    let s = status.status.unwrap();
    let p = cond(&s, "Progressing");
    assert_eq!(
        (p.status.as_str(), p.reason.as_deref()),
        ("True", Some("NewReplicaSetCreated"))
    );
    assert_eq!(
        p.message.as_deref(),
        Some(format!("Created new replica set \"web-{hash}\"").as_str())
    );
    assert_eq!(cond(&s, "Available").status, "False");
    // The deadline is watched.
    assert!(matches!(out.requeue, Requeue::After(_)));
    // Same template, same name: the hash is stable.
    let again = deployment::reconcile(&ctx(5), &d, &Observed::default(), None).unwrap();
    assert_eq!(
        created_rs(&again.actions).unwrap().metadata.name,
        rs.metadata.name
    );
}

#[test]
fn fenceposts_round_like_kubernetes() {
    let pct = |s: &str| IntOrString::String(s.into());
    assert_eq!(scaled_value(&pct("25%"), 10, true), Ok(3));
    assert_eq!(scaled_value(&pct("25%"), 10, false), Ok(2));
    assert_eq!(scaled_value(&pct("25%"), 4, true), Ok(1));
    assert_eq!(scaled_value(&IntOrString::Int(2), 10, true), Ok(2));
    assert!(scaled_value(&pct("abc"), 10, true).is_err());

    let mut d = web("web:1");
    d.spec.as_mut().unwrap().strategy = None;
    set_replicas(&mut d, 10);
    assert_eq!(
        deployment::strategy(&d).unwrap(),
        Strategy::RollingUpdate {
            max_surge: 3,
            max_unavailable: 2
        }
    );

    // Both zero is invalid...
    let mut z: Deployment = yaml(
        "metadata: {name: z}\nspec:\n  selector: {matchLabels: {a: b}}\n  template: {}\n  strategy:\n    rollingUpdate: {maxSurge: 0, maxUnavailable: '0%'}\n",
    );
    let err = deployment::strategy(&z).unwrap_err();
    assert!(
        matches!(&err, ReconcileError::Invalid { field, .. } if field == "spec.strategy.rollingUpdate.maxUnavailable")
    );
    assert!(
        err.to_string()
            .contains("may not be 0 when `maxSurge` is 0")
    );
    // ...but rounding to zero allows one unavailable.
    z.spec
        .as_mut()
        .unwrap()
        .strategy
        .as_mut()
        .unwrap()
        .rolling_update
        .as_mut()
        .unwrap()
        .max_unavailable = Some(pct("10%"));
    assert_eq!(
        deployment::strategy(&z).unwrap(),
        Strategy::RollingUpdate {
            max_surge: 0,
            max_unavailable: 1
        }
    );
}

#[test]
fn invalid_strategy_is_an_error_not_a_panic() {
    let mut d = web("web:1");
    d.spec.as_mut().unwrap().strategy.as_mut().unwrap().type_ = Some("BlueGreen".into());
    let err = deployment::reconcile(&ctx(0), &d, &Observed::default(), None).unwrap_err();
    assert!(err.to_string().contains("spec.strategy.type"), "{err}");
}

#[test]
fn scaling_a_settled_deployment_resizes_its_replicaset() {
    let d1 = web("web:1");
    let rs = rs_for(&d1, 4, 4, 1, 0);
    let mut d = d1.clone();
    set_replicas(&mut d, 6);
    let out =
        deployment::reconcile(&ctx(100), &d, &observed_with(vec![rs.clone()], None), None).unwrap();
    let up = updated_rs(&out.actions);
    assert_eq!(up.len(), 1);
    assert_eq!(rs_spec(&up[0]), 6);
    assert_eq!(
        meta::annotation(&up[0].metadata, meta::DESIRED_REPLICAS),
        Some("6")
    );
    // The update replaces what was read (compare-and-swap) and bumps the generation.
    assert_eq!(
        up[0].metadata.resource_version,
        rs.metadata.resource_version
    );
    assert_eq!(up[0].metadata.generation, Some(2));
    assert_eq!(
        events(&out.actions),
        vec![(
            "ScalingReplicaSet".into(),
            format!(
                "Scaled up replica set {} from 4 to 6",
                meta::name(&rs.metadata)
            )
        )]
    );
    set_replicas(&mut d, 1);
    let out =
        deployment::reconcile(&ctx(100), &d, &observed_with(vec![rs.clone()], None), None).unwrap();
    assert_eq!(rs_spec(&updated_rs(&out.actions)[0]), 1);
    assert!(
        events(&out.actions)[0]
            .1
            .starts_with("Scaled down replica set")
    );
}

#[test]
fn rolling_update_surges_one_then_scales_old_down_as_new_become_available() {
    let old = rs_for(&web("web:1"), 4, 4, 1, 0);
    let d = web("web:2");
    // Step 1: a new ReplicaSet with one pod (maxSurge 1), nothing scaled down (maxUnavailable 0).
    let out = deployment::reconcile(&ctx(100), &d, &observed_with(vec![old.clone()], None), None)
        .unwrap();
    let new = created_rs(&out.actions).unwrap();
    assert_eq!(rs_spec(&new), 1);
    assert_eq!(
        meta::annotation(&new.metadata, DEPLOYMENT_REVISION),
        Some("2")
    );
    assert_eq!(rs_image(&new), "web:2");
    assert!(
        updated_rs(&out.actions)
            .iter()
            .all(|r| r.metadata.name != old.metadata.name)
    );

    // Step 2: the new pod is not available yet: nothing moves.
    let mut new_rs = new.clone();
    new_rs.metadata.resource_version = Some("50".into());
    new_rs.status = Some(ReplicaSetStatus {
        replicas: 1,
        available_replicas: Some(0),
        ..Default::default()
    });
    let out = deployment::reconcile(
        &ctx(101),
        &d,
        &observed_with(vec![old.clone(), new_rs.clone()], None),
        None,
    )
    .unwrap();
    assert!(
        updated_rs(&out.actions)
            .iter()
            .all(|r| rs_spec(r) == rs_spec(&new_rs) || r.metadata.name == new_rs.metadata.name)
    );
    assert!(
        !updated_rs(&out.actions)
            .iter()
            .any(|r| r.metadata.name == old.metadata.name)
    );

    // Step 3: it is available: one old pod goes.
    new_rs.status = Some(ReplicaSetStatus {
        replicas: 1,
        available_replicas: Some(1),
        ready_replicas: Some(1),
        ..Default::default()
    });
    let out = deployment::reconcile(
        &ctx(102),
        &d,
        &observed_with(vec![old.clone(), new_rs.clone()], None),
        None,
    )
    .unwrap();
    let up = updated_rs(&out.actions);
    let old_up = up
        .iter()
        .find(|r| r.metadata.name == old.metadata.name)
        .unwrap();
    assert_eq!(rs_spec(old_up), 3);
    assert!(
        !up.iter()
            .any(|r| r.metadata.name == new_rs.metadata.name && rs_spec(r) != 1)
    );

    // Step 4: old at 3, new at 1 available: the new one grows to 2 (total 5 = 4 + surge).
    let mut old3 = old.clone();
    old3.spec.as_mut().unwrap().replicas = Some(3);
    old3.status.as_mut().unwrap().replicas = 3;
    old3.status.as_mut().unwrap().available_replicas = Some(3);
    let out = deployment::reconcile(
        &ctx(103),
        &d,
        &observed_with(vec![old3, new_rs.clone()], None),
        None,
    )
    .unwrap();
    let up = updated_rs(&out.actions);
    assert_eq!(
        rs_spec(
            up.iter()
                .find(|r| r.metadata.name == new_rs.metadata.name)
                .unwrap()
        ),
        2
    );
}

#[test]
fn recreate_scales_old_to_zero_and_waits_for_old_pods_before_creating_new() {
    let d1: Deployment = fixture("deployment-recreate.yaml");
    let mut old = rs_for(&d1, 2, 2, 1, 0);
    let mut d2 = d1.clone();
    set_image(&mut d2, "db:2");

    // Step 1: old scaled to zero, no new ReplicaSet yet.
    let out = deployment::reconcile(
        &ctx(100),
        &d2,
        &observed_with(vec![old.clone()], None),
        None,
    )
    .unwrap();
    assert!(created_rs(&out.actions).is_none());
    assert_eq!(rs_spec(&updated_rs(&out.actions)[0]), 0);

    // Step 2: old at zero but a pod still runs: wait.
    old.spec.as_mut().unwrap().replicas = Some(0);
    old.status.as_mut().unwrap().replicas = 1;
    let out = deployment::reconcile(
        &ctx(101),
        &d2,
        &observed_with(vec![old.clone()], None),
        None,
    )
    .unwrap();
    assert!(created_rs(&out.actions).is_none());

    // Step 3: old pods gone: the new ReplicaSet gets every replica at once.
    old.status.as_mut().unwrap().replicas = 0;
    old.status.as_mut().unwrap().available_replicas = Some(0);
    let out = deployment::reconcile(
        &ctx(102),
        &d2,
        &observed_with(vec![old.clone()], None),
        None,
    )
    .unwrap();
    let new = created_rs(&out.actions).unwrap();
    assert_eq!(rs_spec(&new), 2);
    assert_eq!(rs_image(&new), "db:2");
}

#[test]
fn rollover_abandons_the_half_finished_replicaset_first() {
    let mut d1 = web("web:1");
    d1.spec
        .as_mut()
        .unwrap()
        .strategy
        .as_mut()
        .unwrap()
        .rolling_update
        .as_mut()
        .unwrap()
        .max_unavailable = Some(IntOrString::Int(1));
    let mut d2 = d1.clone();
    set_image(&mut d2, "web:2");
    let mut d3 = d1.clone();
    set_image(&mut d3, "web:3");
    // v1 has 3 available; v2's rollout is half done with 2 unavailable pods; v3 arrives.
    let a = rs_for(&d1, 3, 3, 1, 0);
    let b = rs_for(&d2, 2, 0, 2, 10);
    let out = deployment::reconcile(
        &ctx(100),
        &d3,
        &observed_with(vec![a.clone(), b.clone()], None),
        None,
    )
    .unwrap();
    let c = created_rs(&out.actions).unwrap();
    assert_eq!(rs_image(&c), "web:3");
    assert_eq!(
        meta::annotation(&c.metadata, DEPLOYMENT_REVISION),
        Some("3")
    );
    // At the surge limit (5 pods): no new pods yet; v2's unavailable pods go first, v1 keeps serving.
    assert_eq!(rs_spec(&c), 0);
    let up = updated_rs(&out.actions);
    assert_eq!(
        rs_spec(
            up.iter()
                .find(|r| r.metadata.name == b.metadata.name)
                .unwrap()
        ),
        0
    );
    assert!(!up.iter().any(|r| r.metadata.name == a.metadata.name));
}

#[test]
fn scaling_mid_rollout_is_proportional() {
    let d1 = web("web:1");
    let mut d2 = web("web:2");
    let mut a = rs_for(&d1, 3, 3, 1, 0);
    let mut b = rs_for(&d2, 2, 0, 2, 10);
    // Both were sized for replicas 4 + surge 1.
    for rs in [&mut a, &mut b] {
        meta::set_annotation(&mut rs.metadata, meta::MAX_REPLICAS, "5");
    }
    set_replicas(&mut d2, 8);
    let out = deployment::reconcile(
        &ctx(100),
        &d2,
        &observed_with(vec![a.clone(), b.clone()], None),
        None,
    )
    .unwrap();
    let up = updated_rs(&out.actions);
    // 8 + 1 allowed, 5 now: +4 shared 3:2 → a 3→5, b 2→4.
    let size = |n: &Option<String>| rs_spec(up.iter().find(|r| &r.metadata.name == n).unwrap());
    assert_eq!(size(&a.metadata.name), 5);
    assert_eq!(size(&b.metadata.name), 4);
    assert!(
        up.iter()
            .all(|r| meta::annotation(&r.metadata, meta::MAX_REPLICAS) == Some("9"))
    );
}

#[test]
fn progress_deadline_exceeded_then_reported_false() {
    let mut d = web("web:2");
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(60);
    let old = rs_for(&web("web:1"), 4, 4, 1, 0);
    let mut new = rs_for(&d, 1, 0, 2, 10);
    new.status.as_mut().unwrap().replicas = 1;
    let progressing = k8s_openapi::api::apps::v1::DeploymentCondition {
        type_: "Progressing".into(),
        status: "True".into(),
        reason: Some("ReplicaSetUpdated".into()),
        message: None,
        last_update_time: Some(Time(t(10))),
        last_transition_time: Some(Time(t(10))),
    };
    let status = DeploymentStatus {
        replicas: Some(5),
        updated_replicas: Some(1),
        available_replicas: Some(4),
        ready_replicas: Some(4),
        observed_generation: Some(1),
        conditions: Some(vec![progressing]),
        ..Default::default()
    };
    // Before the deadline: no timeout; asked to look again when it would pass.
    let obs = observed_with(vec![old.clone(), new.clone()], Some(status.clone()));
    let out = deployment::reconcile(&ctx(50), &d, &obs, None).unwrap();
    if let Some(s) = written_status(&out.actions) {
        assert_eq!(
            cond(s.status.as_ref().unwrap(), "Progressing").status,
            "True"
        );
    }
    assert_eq!(
        out.requeue,
        Requeue::After(std::time::Duration::from_secs(21))
    );
    // After it: Progressing=False, ProgressDeadlineExceeded.
    let out = deployment::reconcile(&ctx(71), &d, &obs, None).unwrap();
    let s = written_status(&out.actions).unwrap().status.unwrap();
    let p = cond(&s, "Progressing");
    assert_eq!(
        (p.status.as_str(), p.reason.as_deref()),
        ("False", Some("ProgressDeadlineExceeded"))
    );
    assert_eq!(
        p.message.as_deref(),
        Some(
            format!(
                "ReplicaSet \"{}\" has timed out progressing.",
                meta::name(&new.metadata)
            )
            .as_str()
        )
    );
    // Old pods keep serving: Available stays True.
    assert_eq!(cond(&s, "Available").status, "True");
}

#[test]
fn complete_rollout_reports_status_and_cleans_history() {
    let mut d = web("web:5");
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    let mut rss: Vec<ReplicaSet> = (1..=4)
        .map(|i| rs_for(&web(&format!("web:{i}")), 0, 0, i, i * 10))
        .collect();
    for rs in &mut rss {
        rs.status.as_mut().unwrap().replicas = 0;
    }
    let new = rs_for(&d, 4, 4, 5, 100);
    rss.push(new.clone());
    let status = DeploymentStatus {
        replicas: Some(4),
        updated_replicas: Some(4),
        available_replicas: Some(4),
        ready_replicas: Some(4),
        observed_generation: Some(1),
        ..Default::default()
    };
    let out = deployment::reconcile(
        &ctx(200),
        &d,
        &observed_with(rss.clone(), Some(status)),
        None,
    )
    .unwrap();
    // Revisions 1..3 go; revision 4 is kept as history.
    let mut gone = deleted(&out.actions, "ReplicaSet");
    gone.sort();
    let mut want: Vec<String> = rss[..3]
        .iter()
        .map(|r| meta::name(&r.metadata).to_string())
        .collect();
    want.sort();
    assert_eq!(gone, want);
    let s = written_status(&out.actions).unwrap().status.unwrap();
    assert_eq!(
        (
            s.replicas,
            s.updated_replicas,
            s.ready_replicas,
            s.available_replicas
        ),
        (Some(4), Some(4), Some(4), Some(4))
    );
    assert_eq!(s.unavailable_replicas, Some(0));
    assert_eq!(s.observed_generation, Some(1));
    let p = cond(&s, "Progressing");
    assert_eq!(p.reason.as_deref(), Some("NewReplicaSetAvailable"));
    assert_eq!(
        p.message.as_deref(),
        Some(
            format!(
                "ReplicaSet \"{}\" has successfully progressed.",
                meta::name(&new.metadata)
            )
            .as_str()
        )
    );
    let a = cond(&s, "Available");
    assert_eq!(
        (a.status.as_str(), a.reason.as_deref()),
        ("True", Some("MinimumReplicasAvailable"))
    );
}

#[test]
fn hash_collision_bumps_collision_count() {
    let d = web("web:1");
    let made = rs_for(&d, 4, 4, 1, 0);
    // Another ReplicaSet holds the name with a different template.
    let mut squatter = made.clone();
    squatter.metadata.owner_references = None;
    squatter
        .spec
        .as_mut()
        .unwrap()
        .template
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("other".into());
    let out = deployment::reconcile(
        &ctx(1),
        &d,
        &observed_with(vec![squatter.clone()], None),
        None,
    )
    .unwrap();
    assert!(created_rs(&out.actions).is_none());
    let s = written_status(&out.actions).unwrap().status.unwrap();
    assert_eq!(s.collision_count, Some(1));
    // With the count in status the next name differs.
    let counted = DeploymentStatus {
        collision_count: Some(1),
        ..Default::default()
    };
    let out = deployment::reconcile(
        &ctx(2),
        &d,
        &observed_with(vec![squatter.clone()], Some(counted)),
        None,
    )
    .unwrap();
    let rs = created_rs(&out.actions).unwrap();
    assert_ne!(rs.metadata.name, squatter.metadata.name);
    assert!(meta::name(&rs.metadata).starts_with("web-"));
}
