//! The node agent's [`ControlPlane`] over the embedded cache (the all-in-one `kommit up`).
//!
//! Keys follow Kubernetes' etcd layout (`kommit_reconciler::keys`): the Node at
//! `/registry/minions/<node>`, its Lease at `/registry/leases/kube-node-lease/<node>`,
//! pods at `/registry/pods/<ns>/<name>`, events at `/registry/events/<ns>/<name>`.
//! Writes of existing objects are compare-and-swap transactions on `mod_revision`, retried
//! on conflict. ConfigMaps and Secrets come from the applied snapshot (desired state).

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, NodeStatus, Pod, PodStatus, Secret, Service,
};
use k8s_openapi::serde::{Serialize, de::DeserializeOwned};
use kommit_cache::{
    Cache, Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, PutRequest,
    RangeRequest, RequestOp, TxnRequest, WatchRequest,
};
use kommit_desired::{Object, ObjectKey};
use kommit_node::{ControlPlane, ControlPlaneError};
use tokio::sync::watch;

use super::applied::AppliedState;

/// How many times a compare-and-swap is retried before giving up (the agent retries later).
const CAS_ATTEMPTS: usize = 16;

/// The agent's view of the control plane, served from the cache in this process.
#[derive(Clone)]
pub struct CacheControlPlane {
    cache: Cache,
    applied: watch::Receiver<Option<Arc<AppliedState>>>,
}

impl CacheControlPlane {
    /// Reads and writes observed state in `cache`; ConfigMaps and Secrets from `applied`.
    pub fn new(cache: Cache, applied: watch::Receiver<Option<Arc<AppliedState>>>) -> Self {
        CacheControlPlane { cache, applied }
    }

    async fn read<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, KeyValue)>, ControlPlaneError> {
        let kv = self.cache.get(key.to_owned()).await.map_err(unavailable)?;
        match kv {
            None => Ok(None),
            Some(kv) => {
                let value = serde_json::from_slice(&kv.value).map_err(|e| {
                    ControlPlaneError::Rejected(format!("{key} holds an undecodable object: {e}"))
                })?;
                Ok(Some((value, kv)))
            }
        }
    }

    /// Writes `value` at `key` if the key is still at `mod_revision` (0: absent).
    async fn cas(
        &self,
        key: &str,
        mod_revision: i64,
        value: Vec<u8>,
    ) -> Result<bool, ControlPlaneError> {
        let t = TxnRequest {
            compare: vec![Compare::new(
                key.to_owned(),
                CompareResult::Equal,
                CompareTarget::ModRevision(mod_revision),
            )],
            success: vec![RequestOp::Put(PutRequest::new(key.to_owned(), value))],
            failure: vec![],
        };
        Ok(self.cache.txn(t).await.map_err(unavailable)?.succeeded)
    }

    /// Read-modify-write of a JSON object with retries on conflict. `update` gets the
    /// current object (None when absent) and returns the new one, or None to write nothing.
    async fn modify<T, F>(&self, key: &str, mut update: F) -> Result<Option<T>, ControlPlaneError>
    where
        T: DeserializeOwned + Serialize,
        F: FnMut(Option<T>) -> Result<Option<T>, ControlPlaneError>,
    {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.read::<T>(key).await?;
            let revision = current.as_ref().map_or(0, |(_, kv)| kv.mod_revision);
            let Some(next) = update(current.map(|(v, _)| v))? else {
                return Ok(None);
            };
            let bytes = serde_json::to_vec(&next).map_err(|e| {
                ControlPlaneError::Rejected(format!("cannot encode the object for {key}: {e}"))
            })?;
            if self.cas(key, revision, bytes).await? {
                return Ok(Some(next));
            }
        }
        Err(ControlPlaneError::Unavailable(format!(
            "{key} kept changing; gave up after {CAS_ATTEMPTS} attempts"
        )))
    }

    async fn pods_of(&self, node: &str) -> Result<Vec<Pod>, ControlPlaneError> {
        let all = self
            .cache
            .range(RangeRequest::prefix("/registry/pods/"))
            .await
            .map_err(unavailable)?;
        let mut pods = Vec::new();
        for kv in all.kvs {
            match serde_json::from_slice::<Pod>(&kv.value) {
                Ok(mut pod) => {
                    if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node) {
                        pod.metadata.resource_version = Some(kv.mod_revision.to_string());
                        pods.push(pod);
                    }
                }
                Err(e) => tracing::warn!(
                    key = %String::from_utf8_lossy(&kv.key),
                    "skipping an undecodable pod: {e}"
                ),
            }
        }
        Ok(pods)
    }

    fn desired(&self, kind: &str, namespace: &str, name: &str) -> Option<Object> {
        let applied = self.applied.borrow().clone()?;
        let key = ObjectKey {
            group: "".into(),
            kind: kind.into(),
            namespace: Some(namespace.into()),
            name: name.into(),
        };
        applied.snapshot.get(&key).map(|o| o.object.clone())
    }
}

fn unavailable(e: impl std::fmt::Display) -> ControlPlaneError {
    ControlPlaneError::Unavailable(e.to_string())
}

fn node_key(name: &str) -> String {
    format!("/registry/minions/{name}")
}

fn pod_key(namespace: &str, name: &str) -> String {
    format!("/registry/pods/{namespace}/{name}")
}

fn is_finished(status: &PodStatus) -> bool {
    matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
}

#[async_trait]
impl ControlPlane for CacheControlPlane {
    async fn register_node(&self, node: Node) -> Result<Node, ControlPlaneError> {
        let name = node
            .metadata
            .name
            .clone()
            .ok_or_else(|| ControlPlaneError::Rejected("the Node has no name".into()))?;
        let stored = self
            .modify::<Node, _>(&node_key(&name), |current| {
                let mut next = node.clone();
                next.metadata.resource_version = None;
                next.metadata.uid = current
                    .as_ref()
                    .and_then(|c| c.metadata.uid.clone())
                    .or_else(|| next.metadata.uid.clone())
                    .or_else(|| Some(kommit_reconciler::meta::desired_uid("Node", &next.metadata)));
                if next.metadata.creation_timestamp.is_none() {
                    next.metadata.creation_timestamp =
                        current.and_then(|c| c.metadata.creation_timestamp);
                }
                Ok(Some(next))
            })
            .await?;
        stored.ok_or_else(|| ControlPlaneError::Unavailable("the Node was not written".into()))
    }

    async fn update_node_status(
        &self,
        name: &str,
        status: NodeStatus,
    ) -> Result<(), ControlPlaneError> {
        self.modify::<Node, _>(&node_key(name), |current| match current {
            None => Err(ControlPlaneError::NotFound(format!("node {name}"))),
            Some(mut node) => {
                node.status = Some(status.clone());
                Ok(Some(node))
            }
        })
        .await?;
        Ok(())
    }

    async fn renew_lease(&self, lease: Lease) -> Result<(), ControlPlaneError> {
        let name = lease
            .metadata
            .name
            .clone()
            .ok_or_else(|| ControlPlaneError::Rejected("the Lease has no name".into()))?;
        let namespace = lease
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "kube-node-lease".into());
        let key = format!("/registry/leases/{namespace}/{name}");
        self.modify::<Lease, _>(&key, |_| {
            let mut next = lease.clone();
            next.metadata.namespace = Some(namespace.clone());
            next.metadata.resource_version = None;
            Ok(Some(next))
        })
        .await?;
        Ok(())
    }

    fn watch_pods(
        &self,
        node_name: &str,
    ) -> BoxStream<'static, Result<Vec<Pod>, ControlPlaneError>> {
        let this = self.clone();
        let node = node_name.to_owned();
        // Watch first, then list: no change between the two is missed.
        let watcher = this.cache.watch(WatchRequest::prefix("/registry/pods/"), 0);
        let stream = futures::stream::unfold(
            (this, node, watcher, true),
            |(this, node, mut watcher, first)| async move {
                if !first {
                    // Coalesce: wait for one change, then take whatever else is queued.
                    loop {
                        match watcher.recv().await {
                            None => return None,
                            Some(b) if b.canceled => return None,
                            Some(b) if b.events.is_empty() => continue,
                            Some(_) => break,
                        }
                    }
                    // At most 10 ms, so a steady stream of writes cannot starve the agent.
                    let deadline =
                        tokio::time::Instant::now() + std::time::Duration::from_millis(10);
                    while let Ok(Some(b)) = tokio::time::timeout_at(deadline, watcher.recv()).await
                    {
                        if b.canceled {
                            return None;
                        }
                    }
                }
                let pods = this.pods_of(&node).await;
                Some((pods, (this, node, watcher, false)))
            },
        );
        stream.boxed()
    }

    async fn report_pod_status(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        status: PodStatus,
    ) -> Result<(), ControlPlaneError> {
        let key = pod_key(namespace, name);
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut pod, kv)) = self.read::<Pod>(&key).await? else {
                return Err(ControlPlaneError::NotFound(format!(
                    "pod {namespace}/{name}"
                )));
            };
            if pod.metadata.uid.as_deref() != Some(uid) {
                return Err(ControlPlaneError::NotFound(format!(
                    "pod {namespace}/{name} with uid {uid}"
                )));
            }
            let ok = if pod.metadata.deletion_timestamp.is_some() && is_finished(&status) {
                // The kubelet confirms a graceful deletion: the pod goes away.
                let t = TxnRequest {
                    compare: vec![Compare::new(
                        key.clone(),
                        CompareResult::Equal,
                        CompareTarget::ModRevision(kv.mod_revision),
                    )],
                    success: vec![RequestOp::DeleteRange(DeleteRangeRequest::key(key.clone()))],
                    failure: vec![],
                };
                self.cache.txn(t).await.map_err(unavailable)?.succeeded
            } else {
                if pod.status.as_ref() == Some(&status) {
                    return Ok(());
                }
                pod.status = Some(status.clone());
                pod.metadata.resource_version = None;
                let bytes = serde_json::to_vec(&pod).map_err(|e| {
                    ControlPlaneError::Rejected(format!(
                        "cannot encode pod {namespace}/{name}: {e}"
                    ))
                })?;
                self.cas(&key, kv.mod_revision, bytes).await?
            };
            if ok {
                return Ok(());
            }
        }
        Err(ControlPlaneError::Unavailable(format!(
            "pod {namespace}/{name} kept changing"
        )))
    }

    async fn record_event(&self, event: Event) -> Result<(), ControlPlaneError> {
        let namespace = event
            .metadata
            .namespace
            .clone()
            .or_else(|| event.involved_object.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let name = match &event.metadata.name {
            Some(n) => n.clone(),
            None => format!(
                "{}.{:x}",
                event.involved_object.name.as_deref().unwrap_or("node"),
                self.cache.current_revision()
            ),
        };
        let mut event = event;
        event.metadata.namespace = Some(namespace.clone());
        event.metadata.name = Some(name.clone());
        let bytes = serde_json::to_vec(&event)
            .map_err(|e| ControlPlaneError::Rejected(format!("cannot encode an event: {e}")))?;
        self.cache
            .put(PutRequest::new(
                format!("/registry/events/{namespace}/{name}"),
                bytes,
            ))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get_config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, ControlPlaneError> {
        Ok(match self.desired("ConfigMap", namespace, name) {
            Some(Object::ConfigMap(c)) => Some(c),
            _ => None,
        })
    }

    async fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Secret>, ControlPlaneError> {
        Ok(match self.desired("Secret", namespace, name) {
            Some(Object::Secret(s)) => Some(s),
            _ => None,
        })
    }

    /// The Services as allocated by the reconciler (`/registry/services/specs/<ns>/`).
    async fn list_services(&self, namespace: &str) -> Result<Vec<Service>, ControlPlaneError> {
        let resp = self
            .cache
            .range(RangeRequest::prefix(format!(
                "/registry/services/specs/{namespace}/"
            )))
            .await
            .map_err(unavailable)?;
        Ok(resp
            .kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn plane() -> (Cache, CacheControlPlane) {
        let cache = Cache::in_memory();
        let (_tx, rx) = watch::channel(None);
        (cache.clone(), CacheControlPlane::new(cache, rx))
    }

    fn pod(name: &str, node: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_owned),
                ..Default::default()
            }),
            status: None,
        }
    }

    async fn put_pod(cache: &Cache, p: &Pod) {
        let key = pod_key("default", p.metadata.name.as_deref().unwrap());
        cache
            .put(PutRequest::new(key, serde_json::to_vec(p).unwrap()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn node_and_lease_are_stored_under_kubernetes_keys() {
        let (cache, cp) = plane();
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let stored = cp.register_node(node.clone()).await.unwrap();
        let uid = stored.metadata.uid.clone().unwrap();
        // Registering again keeps the uid.
        let again = cp.register_node(node).await.unwrap();
        assert_eq!(again.metadata.uid.as_deref(), Some(uid.as_str()));
        cp.update_node_status(
            "n1",
            NodeStatus {
                phase: Some("Running".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let kv = cache.get("/registry/minions/n1").await.unwrap().unwrap();
        let n: Node = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(n.status.unwrap().phase.as_deref(), Some("Running"));
        assert!(matches!(
            cp.update_node_status("n2", NodeStatus::default()).await,
            Err(ControlPlaneError::NotFound(_))
        ));
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                namespace: Some("kube-node-lease".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        cp.renew_lease(lease.clone()).await.unwrap();
        cp.renew_lease(lease).await.unwrap();
        let kv = cache
            .get("/registry/leases/kube-node-lease/n1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kv.version, 2);
    }

    #[tokio::test]
    async fn watch_pods_sends_the_full_set_of_the_node_on_every_change() {
        let (cache, cp) = plane();
        put_pod(&cache, &pod("a", Some("n1"))).await;
        put_pod(&cache, &pod("b", Some("n2"))).await;
        let mut stream = cp.watch_pods("n1");
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].metadata.name.as_deref(), Some("a"));
        put_pod(&cache, &pod("c", Some("n1"))).await;
        let second = stream.next().await.unwrap().unwrap();
        let names: Vec<_> = second
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a", "c"]);
        cache
            .delete_range(DeleteRangeRequest::key(pod_key("default", "a")))
            .await
            .unwrap();
        let third = stream.next().await.unwrap().unwrap();
        assert_eq!(third.len(), 1);
    }

    #[tokio::test]
    async fn status_reports_check_the_uid_and_finish_graceful_deletions() {
        let (cache, cp) = plane();
        put_pod(&cache, &pod("a", Some("n1"))).await;
        let running = PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        };
        cp.report_pod_status("default", "a", "uid-a", running.clone())
            .await
            .unwrap();
        let kv = cache.get(pod_key("default", "a")).await.unwrap().unwrap();
        let p: Pod = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(p.status, Some(running.clone()));
        assert!(matches!(
            cp.report_pod_status("default", "a", "other", running.clone())
                .await,
            Err(ControlPlaneError::NotFound(_))
        ));
        assert!(matches!(
            cp.report_pod_status("default", "zz", "uid-zz", running.clone())
                .await,
            Err(ControlPlaneError::NotFound(_))
        ));

        // A terminating pod whose containers finished is deleted.
        let mut terminating = p;
        terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        put_pod(&cache, &terminating).await;
        cp.report_pod_status("default", "a", "uid-a", running.clone())
            .await
            .unwrap();
        assert!(cache.get(pod_key("default", "a")).await.unwrap().is_some());
        let done = PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        };
        cp.report_pod_status("default", "a", "uid-a", done)
            .await
            .unwrap();
        assert!(cache.get(pod_key("default", "a")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn events_are_written_under_their_namespace() {
        let (cache, cp) = plane();
        let event = Event {
            metadata: ObjectMeta {
                name: Some("a.1".into()),
                namespace: Some("hello".into()),
                ..Default::default()
            },
            reason: Some("Started".into()),
            ..Default::default()
        };
        cp.record_event(event).await.unwrap();
        assert!(
            cache
                .get("/registry/events/hello/a.1")
                .await
                .unwrap()
                .is_some()
        );
        assert!(cp.get_config_map("hello", "x").await.unwrap().is_none());
    }
}
