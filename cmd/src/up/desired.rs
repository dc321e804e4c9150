//! From a validated Git snapshot to the reconciler's [`Desired`] (plain k8s-openapi objects).

use kommit_desired::{Object, Snapshot};
use kommit_reconciler::Desired;

/// The objects the controllers act on; other kinds (RBAC, ServiceAccounts, ...) are
/// served by the API but make nothing run.
pub fn from_snapshot(snapshot: &Snapshot) -> Desired {
    let mut d = Desired {
        revision: Some(snapshot.commit.to_string()),
        ..Desired::default()
    };
    for o in snapshot.objects.values() {
        match &o.object {
            Object::Deployment(x) => d.deployments.push(x.clone()),
            Object::ReplicaSet(x) => d.replica_sets.push(x.clone()),
            Object::DaemonSet(x) => d.daemon_sets.push(x.clone()),
            Object::Job(x) => d.jobs.push(x.clone()),
            Object::CronJob(x) => d.cron_jobs.push(x.clone()),
            Object::Pod(x) => d.pods.push(x.clone()),
            Object::Namespace(x) => d.namespaces.push(x.clone()),
            Object::Service(x) => d.services.push(x.clone()),
            Object::ConfigMap(x) => d.config_maps.push(x.clone()),
            Object::Secret(x) => d.secrets.push(x.clone()),
            _ => {}
        }
    }
    d
}
