//! Every controller and the scheduler, run once over a snapshot of desired and observed state.

use crate::action::{ReconcileError, Reconciled};
use crate::context::Context;
use crate::gc::{self, GcConfig};
use crate::meta;
use crate::nodelifecycle::{self, NodeLifecycleConfig};
use crate::service::{self, ServiceConfig};
use crate::state::{Desired, Observed};
use crate::{bare, cronjob, daemonset, deployment, job, replicaset, scheduler};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Settings of all controllers.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Node lifecycle timing.
    pub nodes: NodeLifecycleConfig,
    /// Garbage collection settings.
    pub gc: GcConfig,
    /// Service address ranges.
    pub services: ServiceConfig,
}

/// The result of one pass over everything.
#[derive(Debug, Default)]
pub struct Pass {
    /// Writes of every controller, in order: garbage collection, Git copies,
    /// Deployments, DaemonSets, CronJobs, Jobs, ReplicaSets, node lifecycle, scheduler,
    /// Services (allocation), Endpoints.
    pub outcome: Reconciled,
    /// Objects that could not be reconciled (`Deployment default/web`), with why.
    pub errors: Vec<(String, ReconcileError)>,
}

/// Runs every controller once. Each sees the same snapshot; writes that touch the same
/// object conflict at the executor (compare-and-swap) and are redone on the next pass.
pub fn reconcile_all(
    ctx: &Context,
    desired: &Desired,
    observed: &Observed,
    config: &Config,
) -> Pass {
    let mut pass = Pass::default();
    let out = &mut pass.outcome;
    out.merge(gc::collect(ctx, desired, observed, &config.gc));
    out.merge(gc::pod_gc(ctx, desired, observed, &config.gc));
    out.merge(bare::reconcile_namespaces(ctx, desired, observed));
    out.merge(bare::reconcile_replica_sets(ctx, desired, observed));
    out.merge(bare::reconcile_pods(ctx, desired, observed));
    for d in &desired.deployments {
        match deployment::reconcile(ctx, d, observed, desired.revision.as_deref()) {
            Ok(r) => out.merge(r),
            Err(e) => {
                let id = format!(
                    "Deployment {}/{}",
                    meta::namespace(&d.metadata),
                    meta::name(&d.metadata)
                );
                tracing::warn!(object = %id, error = %e, "deployment not reconciled");
                pass.errors.push((id, e));
            }
        }
    }
    for ds in &desired.daemon_sets {
        let r = daemonset::reconcile(ctx, ds, observed, desired.revision.as_deref());
        record(&mut pass, "DaemonSet", &ds.metadata, r);
    }
    for cj in &desired.cron_jobs {
        let r = cronjob::reconcile(ctx, cj, observed, desired.revision.as_deref());
        record(&mut pass, "CronJob", &cj.metadata, r);
    }
    for j in &desired.jobs {
        let r = job::reconcile_desired(ctx, j, observed, desired.revision.as_deref());
        record(&mut pass, "Job", &j.metadata, r);
    }
    // Jobs made by CronJobs (observed Jobs with a spec; the others are status records).
    for j in observed.jobs.iter().filter(|j| j.spec.is_some()) {
        let r = job::reconcile_observed(ctx, j, observed);
        record(&mut pass, "Job", &j.metadata, r);
    }
    for rs in &observed.replica_sets {
        match replicaset::reconcile(ctx, rs, observed) {
            Ok(r) => pass.outcome.merge(r),
            Err(e) => {
                let id = format!(
                    "ReplicaSet {}/{}",
                    meta::namespace(&rs.metadata),
                    meta::name(&rs.metadata)
                );
                tracing::warn!(object = %id, error = %e, "replicaset not reconciled");
                pass.errors.push((id, e));
            }
        }
    }
    pass.outcome
        .merge(nodelifecycle::reconcile(ctx, observed, &config.nodes));
    pass.outcome.merge(scheduler::schedule(ctx, observed));
    pass.outcome.merge(service::reconcile_services(
        ctx,
        desired,
        observed,
        &config.services,
    ));
    pass.outcome
        .merge(service::reconcile_endpoints(ctx, desired, observed));
    pass
}

/// Merges one controller's outcome into the pass, or records (and logs) its error.
fn record(
    pass: &mut Pass,
    kind: &str,
    m: &ObjectMeta,
    result: Result<crate::action::Reconciled, ReconcileError>,
) {
    match result {
        Ok(r) => pass.outcome.merge(r),
        Err(e) => {
            let id = format!("{kind} {}/{}", meta::namespace(m), meta::name(m));
            tracing::warn!(object = %id, error = %e, "not reconciled");
            pass.errors.push((id, e));
        }
    }
}
