//! core/v1 Events, as Kubernetes' event recorder writes them.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::action::Action;
use crate::context::Context;
use crate::keys;

/// Reasons used by the controllers, as Kubernetes spells them.
pub mod reason {
    /// Deployment controller scaled a ReplicaSet.
    pub const SCALING_REPLICA_SET: &str = "ScalingReplicaSet";
    /// ReplicaSet controller created a pod.
    pub const SUCCESSFUL_CREATE: &str = "SuccessfulCreate";
    /// ReplicaSet controller deleted a pod.
    pub const SUCCESSFUL_DELETE: &str = "SuccessfulDelete";
    /// Scheduler bound a pod.
    pub const SCHEDULED: &str = "Scheduled";
    /// Scheduler found no node for a pod.
    pub const FAILED_SCHEDULING: &str = "FailedScheduling";
    /// Node controller saw a node stop reporting.
    pub const NODE_NOT_READY: &str = "NodeNotReady";
    /// Node controller marked a pod for deletion (taint-based eviction).
    pub const TAINT_MANAGER_EVICTION: &str = "TaintManagerEviction";
    /// Garbage collector / pod GC deleted an object.
    pub const DELETING: &str = "Deleting";
}

/// Components named as event sources.
pub mod component {
    /// kube-controller-manager's deployment controller.
    pub const DEPLOYMENT: &str = "deployment-controller";
    /// kube-controller-manager's replicaset controller.
    pub const REPLICA_SET: &str = "replicaset-controller";
    /// kube-scheduler.
    pub const SCHEDULER: &str = "default-scheduler";
    /// kube-controller-manager's node lifecycle controller.
    pub const NODE: &str = "node-controller";
}

/// What an event is about.
#[derive(Clone, Debug)]
pub struct Involved<'a> {
    /// Kind of the object.
    pub kind: &'a str,
    /// Namespace (`None` for cluster-scoped objects).
    pub namespace: Option<&'a str>,
    /// Name.
    pub name: &'a str,
    /// UID, if known.
    pub uid: Option<&'a str>,
}

/// A Normal event.
pub fn normal(
    ctx: &Context,
    about: Involved<'_>,
    reason: &str,
    component: &str,
    message: String,
) -> Action {
    event(ctx, about, "Normal", reason, component, message)
}

/// A Warning event.
pub fn warning(
    ctx: &Context,
    about: Involved<'_>,
    reason: &str,
    component: &str,
    message: String,
) -> Action {
    event(ctx, about, "Warning", reason, component, message)
}

/// An event about `about`: named `<name>.<hex nanoseconds>` as client-go names them, in
/// the object's namespace (`default` for cluster-scoped objects).
pub fn event(
    ctx: &Context,
    about: Involved<'_>,
    type_: &str,
    reason: &str,
    component: &str,
    message: String,
) -> Action {
    let nanos = ctx.now().as_nanosecond() as u128 + u128::from(ctx.next_seq());
    let namespace = about.namespace.unwrap_or("default").to_string();
    let api_version = keys::by_kind(about.kind).map(|r| r.api_version());
    Action::Create(
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", about.name, nanos)),
                namespace: Some(namespace),
                creation_timestamp: Some(ctx.now_time()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version,
                kind: Some(about.kind.to_string()),
                name: Some(about.name.to_string()),
                namespace: about.namespace.map(str::to_string),
                uid: about.uid.map(str::to_string),
                ..Default::default()
            },
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(type_.to_string()),
            source: Some(EventSource {
                component: Some(component.to_string()),
                host: None,
            }),
            reporting_component: Some(component.to_string()),
            reporting_instance: Some(component.to_string()),
            first_timestamp: Some(ctx.now_time()),
            last_timestamp: Some(ctx.now_time()),
            count: Some(1),
            ..Default::default()
        }
        .into(),
    )
}
