//! How the node agent talks to the control plane: the [`ControlPlane`] trait.
//!
//! The agent never reads or writes cluster state any other way, so it runs unchanged
//! in-process (the all-in-one `kommit up`, over the cache) or on another machine (over the
//! API). [`MemoryControlPlane`] is an in-memory implementation for tests and for running a
//! node on its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, NodeStatus, Pod, PodStatus, Secret, Service,
};
use tokio::sync::watch;

/// Errors from the control plane.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlPlaneError {
    /// Cannot reach it (the agent retries).
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    /// It refused the request (for example the node is not allowed to write this pod).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The object does not exist (a status for a pod that is gone).
    #[error("not found: {0}")]
    NotFound(String),
}

/// The control plane as the node agent sees it.
#[async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// Creates or updates this node's Node object; returns it as stored (with its uid).
    async fn register_node(&self, node: Node) -> Result<Node, ControlPlaneError>;

    /// Replaces the Node's status.
    async fn update_node_status(
        &self,
        name: &str,
        status: NodeStatus,
    ) -> Result<(), ControlPlaneError>;

    /// Creates or renews the node's Lease in `kube-node-lease` (its heartbeat).
    async fn renew_lease(&self, lease: Lease) -> Result<(), ControlPlaneError>;

    /// The pods bound to `node_name` (`spec.nodeName`): every item is the complete set.
    /// The stream ends when the connection is lost; the agent then watches again.
    fn watch_pods(
        &self,
        node_name: &str,
    ) -> BoxStream<'static, Result<Vec<Pod>, ControlPlaneError>>;

    /// Writes a pod's status. `uid` guards against writing to a newer pod of the same name.
    async fn report_pod_status(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        status: PodStatus,
    ) -> Result<(), ControlPlaneError>;

    /// Records an Event (Pulled, Created, Started, Killing, BackOff, Failed, ...).
    async fn record_event(&self, event: Event) -> Result<(), ControlPlaneError>;

    /// A ConfigMap a pod refers to (`None` when absent).
    async fn get_config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, ControlPlaneError>;

    /// A Secret a pod refers to (`None` when absent).
    async fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Secret>, ControlPlaneError>;

    /// The Services of a namespace with their cluster IPs, for the service environment
    /// variables of a starting pod. The default has none.
    async fn list_services(&self, namespace: &str) -> Result<Vec<Service>, ControlPlaneError> {
        let _ = namespace;
        Ok(Vec::new())
    }
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, Node>,
    leases: BTreeMap<String, Lease>,
    /// Pods by uid.
    pods: BTreeMap<String, Pod>,
    /// Reported statuses by uid.
    statuses: BTreeMap<String, PodStatus>,
    status_writes: usize,
    events: Vec<Event>,
    config_maps: BTreeMap<(String, String), ConfigMap>,
    secrets: BTreeMap<(String, String), Secret>,
    services: BTreeMap<(String, String), Service>,
}

/// An in-memory control plane: pods are set by the caller, statuses, nodes, leases and
/// events are kept for the caller to read. Cheap to clone (shared state).
#[derive(Clone)]
pub struct MemoryControlPlane {
    state: Arc<Mutex<State>>,
    /// Bumped on every pod change so watchers send a new set.
    pods_version: Arc<watch::Sender<u64>>,
    /// Bumped on every status write so tests can wait for one.
    status_version: Arc<watch::Sender<u64>>,
}

impl Default for MemoryControlPlane {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryControlPlane {
    /// An empty control plane.
    pub fn new() -> Self {
        MemoryControlPlane {
            state: Arc::default(),
            pods_version: Arc::new(watch::channel(0).0),
            status_version: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces a pod (keyed by `metadata.uid`).
    pub fn put_pod(&self, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.lock().pods.insert(uid, pod);
        self.pods_version.send_modify(|v| *v += 1);
    }

    /// Removes a pod by uid.
    pub fn delete_pod(&self, uid: &str) {
        self.lock().pods.remove(uid);
        self.pods_version.send_modify(|v| *v += 1);
    }

    /// Adds or replaces a ConfigMap.
    pub fn put_config_map(&self, cm: ConfigMap) {
        let key = namespaced_key(&cm.metadata);
        self.lock().config_maps.insert(key, cm);
    }

    /// Adds or replaces a Secret.
    pub fn put_secret(&self, s: Secret) {
        let key = namespaced_key(&s.metadata);
        self.lock().secrets.insert(key, s);
    }

    /// Adds or replaces a Service (as allocated: with its cluster IP).
    pub fn put_service(&self, s: Service) {
        let key = namespaced_key(&s.metadata);
        self.lock().services.insert(key, s);
    }

    /// The last status reported for a pod uid.
    pub fn pod_status(&self, uid: &str) -> Option<PodStatus> {
        self.lock().statuses.get(uid).cloned()
    }

    /// How many status writes happened.
    pub fn status_writes(&self) -> usize {
        self.lock().status_writes
    }

    /// Waits until `f` accepts the status of `uid`, at most `limit`; returns it.
    pub async fn wait_pod_status(
        &self,
        uid: &str,
        limit: std::time::Duration,
        mut f: impl FnMut(&PodStatus) -> bool,
    ) -> Result<PodStatus, Option<PodStatus>> {
        let mut rx = self.status_version.subscribe();
        let wait = async {
            loop {
                if let Some(s) = self.pod_status(uid)
                    && f(&s)
                {
                    return s;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| self.pod_status(uid))
    }

    /// The registered Node.
    pub fn node(&self, name: &str) -> Option<Node> {
        self.lock().nodes.get(name).cloned()
    }

    /// The node's Lease.
    pub fn lease(&self, name: &str) -> Option<Lease> {
        self.lock().leases.get(name).cloned()
    }

    /// Every event recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }
}

#[async_trait]
impl ControlPlane for MemoryControlPlane {
    async fn register_node(&self, mut node: Node) -> Result<Node, ControlPlaneError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let mut st = self.lock();
        let uid = st
            .nodes
            .get(&name)
            .and_then(|n| n.metadata.uid.clone())
            .unwrap_or_else(|| format!("node-{name}-{}", st.nodes.len() + 1));
        node.metadata.uid = Some(uid);
        st.nodes.insert(name, node.clone());
        Ok(node)
    }

    async fn update_node_status(
        &self,
        name: &str,
        status: NodeStatus,
    ) -> Result<(), ControlPlaneError> {
        let mut st = self.lock();
        let node = st
            .nodes
            .get_mut(name)
            .ok_or_else(|| ControlPlaneError::NotFound(format!("node {name}")))?;
        node.status = Some(status);
        Ok(())
    }

    async fn renew_lease(&self, lease: Lease) -> Result<(), ControlPlaneError> {
        let name = lease.metadata.name.clone().unwrap_or_default();
        self.lock().leases.insert(name, lease);
        Ok(())
    }

    fn watch_pods(
        &self,
        node_name: &str,
    ) -> BoxStream<'static, Result<Vec<Pod>, ControlPlaneError>> {
        let rx = self.pods_version.subscribe();
        let state = self.state.clone();
        let node = node_name.to_string();
        let stream = tokio_stream::wrappers::WatchStream::new(rx);
        Box::pin(futures::StreamExt::map(stream, move |_| {
            let st = state.lock().unwrap_or_else(|p| p.into_inner());
            Ok(st
                .pods
                .values()
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
                })
                .cloned()
                .collect())
        }))
    }

    async fn report_pod_status(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        status: PodStatus,
    ) -> Result<(), ControlPlaneError> {
        {
            let mut st = self.lock();
            if let Some(p) = st.pods.get_mut(uid) {
                p.status = Some(status.clone());
            } else {
                tracing::debug!(namespace, name, uid, "status for a pod no longer known");
            }
            st.statuses.insert(uid.to_string(), status);
            st.status_writes += 1;
        }
        self.status_version.send_modify(|v| *v += 1);
        Ok(())
    }

    async fn record_event(&self, event: Event) -> Result<(), ControlPlaneError> {
        self.lock().events.push(event);
        Ok(())
    }

    async fn get_config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, ControlPlaneError> {
        Ok(self
            .lock()
            .config_maps
            .get(&(namespace.to_string(), name.to_string()))
            .cloned())
    }

    async fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Secret>, ControlPlaneError> {
        Ok(self
            .lock()
            .secrets
            .get(&(namespace.to_string(), name.to_string()))
            .cloned())
    }

    async fn list_services(&self, namespace: &str) -> Result<Vec<Service>, ControlPlaneError> {
        Ok(self
            .lock()
            .services
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, s)| s.clone())
            .collect())
    }
}

/// `(namespace, name)` of an object, the namespace `default` when unset.
fn namespaced_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}
