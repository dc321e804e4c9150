//! The two inputs of every controller: desired state (objects from Git at the applied
//! revision) and observed state (what the cluster made and measured, from the cache).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::meta;
use crate::object::Object;

/// Objects from Git at the applied revision. Plain k8s-openapi objects: whoever loads Git
/// fills these vectors. Namespaced objects without `metadata.namespace` are in `default`.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// The applied revision (commit id), recorded on what controllers make from it.
    pub revision: Option<String>,
    /// Deployments.
    pub deployments: Vec<Deployment>,
    /// ReplicaSets written directly in Git.
    pub replica_sets: Vec<ReplicaSet>,
    /// DaemonSets.
    pub daemon_sets: Vec<DaemonSet>,
    /// Jobs.
    pub jobs: Vec<Job>,
    /// CronJobs.
    pub cron_jobs: Vec<CronJob>,
    /// Bare Pods.
    pub pods: Vec<Pod>,
    /// Namespaces.
    pub namespaces: Vec<Namespace>,
    /// Services.
    pub services: Vec<Service>,
    /// ConfigMaps.
    pub config_maps: Vec<ConfigMap>,
    /// Secrets.
    pub secrets: Vec<Secret>,
}

impl Desired {
    /// The UID of the desired object `kind` `namespace/name`, if the revision has it.
    pub fn uid_of(&self, kind: &str, namespace: &str, name: &str) -> Option<String> {
        fn find<
            'a,
            T: k8s_openapi::Metadata<
                    Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                > + 'a,
        >(
            items: &'a [T],
            namespace: &str,
            name: &str,
        ) -> Option<&'a T> {
            items.iter().find(|o| {
                meta::name(o.metadata()) == name && meta::namespace(o.metadata()) == namespace
            })
        }
        let m = match kind {
            "Deployment" => find(&self.deployments, namespace, name).map(|o| &o.metadata),
            "ReplicaSet" => find(&self.replica_sets, namespace, name).map(|o| &o.metadata),
            "DaemonSet" => find(&self.daemon_sets, namespace, name).map(|o| &o.metadata),
            "Job" => find(&self.jobs, namespace, name).map(|o| &o.metadata),
            "CronJob" => find(&self.cron_jobs, namespace, name).map(|o| &o.metadata),
            "Pod" => find(&self.pods, namespace, name).map(|o| &o.metadata),
            "Service" => find(&self.services, namespace, name).map(|o| &o.metadata),
            "ConfigMap" => find(&self.config_maps, namespace, name).map(|o| &o.metadata),
            "Secret" => find(&self.secrets, namespace, name).map(|o| &o.metadata),
            "Namespace" => self
                .namespaces
                .iter()
                .find(|n| meta::name(&n.metadata) == name)
                .map(|o| &o.metadata),
            _ => None,
        }?;
        Some(meta::desired_uid(kind, m))
    }
}

/// Observed objects read from the cache, each with `metadata.resourceVersion` set to its
/// key's `mod_revision`. Deployment, DaemonSet and CronJob entries are status records
/// (metadata and status of an object whose spec is in Git). Jobs are either status records
/// of Git Jobs (no `spec`) or whole Jobs a CronJob made (with `spec`, controlled by it).
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// ReplicaSets (made by Deployments, or copied from Git).
    pub replica_sets: Vec<ReplicaSet>,
    /// Pods.
    pub pods: Vec<Pod>,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Node leases (namespace `kube-node-lease`).
    pub leases: Vec<Lease>,
    /// Namespaces.
    pub namespaces: Vec<Namespace>,
    /// Deployment status records.
    pub deployments: Vec<Deployment>,
    /// Events.
    pub events: Vec<Event>,
    /// Jobs: status records of Git Jobs, and Jobs made by CronJobs.
    pub jobs: Vec<Job>,
    /// CronJob status records.
    pub cron_jobs: Vec<CronJob>,
    /// DaemonSet status records.
    pub daemon_sets: Vec<DaemonSet>,
    /// Services as allocated (the Git spec with cluster IP and node ports filled in).
    pub services: Vec<Service>,
    /// Endpoints of Services.
    pub endpoints: Vec<Endpoints>,
    /// EndpointSlices of Services.
    pub endpoint_slices: Vec<EndpointSlice>,
}

impl Observed {
    /// Sorts objects into their lists (kinds not listed here are dropped).
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut o = Observed::default();
        for obj in objects {
            match obj {
                Object::ReplicaSet(x) => o.replica_sets.push(x),
                Object::Pod(x) => o.pods.push(x),
                Object::Node(x) => o.nodes.push(x),
                Object::Lease(x) => o.leases.push(x),
                Object::Namespace(x) => o.namespaces.push(x),
                Object::Deployment(x) => o.deployments.push(x),
                Object::Event(x) => o.events.push(x),
                Object::DaemonSet(x) => o.daemon_sets.push(x),
                Object::Job(x) => o.jobs.push(x),
                Object::CronJob(x) => o.cron_jobs.push(x),
                Object::Service(x) => o.services.push(x),
                Object::Endpoints(x) => o.endpoints.push(x),
                Object::EndpointSlice(x) => o.endpoint_slices.push(x),
            }
        }
        o
    }

    /// The pods of namespace `ns` controlled by the object with `uid`.
    pub fn pods_controlled_by<'a>(
        &'a self,
        ns: &'a str,
        uid: &'a str,
    ) -> impl Iterator<Item = &'a Pod> + 'a {
        self.pods.iter().filter(move |p| {
            meta::namespace(&p.metadata) == ns
                && meta::controller_of(&p.metadata).is_some_and(|o| o.uid == uid)
        })
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| meta::name(&n.metadata) == name)
    }

    /// The observed Job `ns/name` (a Git Job's status record, or a Job a CronJob made).
    pub fn job(&self, ns: &str, name: &str) -> Option<&Job> {
        self.jobs
            .iter()
            .find(|d| meta::name(&d.metadata) == name && meta::namespace(&d.metadata) == ns)
    }

    /// The status record of a CronJob.
    pub fn cron_job_status(&self, ns: &str, name: &str) -> Option<&CronJob> {
        self.cron_jobs
            .iter()
            .find(|d| meta::name(&d.metadata) == name && meta::namespace(&d.metadata) == ns)
    }

    /// The status record of a DaemonSet.
    pub fn daemon_set_status(&self, ns: &str, name: &str) -> Option<&DaemonSet> {
        self.daemon_sets
            .iter()
            .find(|d| meta::name(&d.metadata) == name && meta::namespace(&d.metadata) == ns)
    }

    /// The status record of a Deployment.
    pub fn deployment_status(&self, ns: &str, name: &str) -> Option<&Deployment> {
        self.deployments
            .iter()
            .find(|d| meta::name(&d.metadata) == name && meta::namespace(&d.metadata) == ns)
    }
}
