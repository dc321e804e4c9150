//! The agent: registers the node, renews its lease, watches the pods bound to it and runs
//! one [worker](crate::worker) per pod; a relist loop (the kubelet's PLEG) notices runtime
//! changes (a container that exited or was removed by hand) and wakes the pod's worker,
//! and removes containers of pods that are no longer bound ("strays", also those left by
//! an earlier agent).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{NodeStatus, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::control::ControlPlane;
use crate::node_info::{HostFacts, node_lease, node_object, node_status};
use crate::runtime::{
    ContainerState, ListFilter, LogOptions, PodRef, Runtime, RuntimeError, SandboxState,
};
use crate::spec::termination_grace;
use crate::worker::{PodWorker, WorkerShared};

/// Settings of an [`Agent`].
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node's name (pods with this `spec.nodeName` run here).
    pub node_name: String,
    /// Extra labels of the Node object.
    pub node_labels: BTreeMap<String, String>,
    /// The node's IP (`status.hostIP`); detected from the host when `None`.
    pub host_ip: Option<String>,
    /// Lease duration (Kubernetes: 40 s).
    pub lease_duration: Duration,
    /// How often the lease is renewed (Kubernetes: a quarter of the duration).
    pub lease_renew_interval: Duration,
    /// How often the Node status is written even when unchanged.
    pub node_status_interval: Duration,
    /// How often the runtime is listed to notice changes (Kubernetes' PLEG: 1 s).
    pub relist_interval: Duration,
    /// How often a quiet pod is synced anyway (also how soon a changed ConfigMap or
    /// Secret reaches mounted files).
    pub resync_interval: Duration,
    /// The cluster DNS pods with `dnsPolicy: ClusterFirst` use (see [`crate::dns`]);
    /// `None`: pods keep the host's resolver.
    pub cluster_dns: Option<crate::dns::ClusterDns>,
    /// The node's own directory: pods' volumes go under `<root_dir>/pods/<uid>/volumes`.
    /// `kommit up` uses `<data dir>/node`; the default is a directory under the system's
    /// temporary directory, named after the node.
    pub root_dir: std::path::PathBuf,
}

impl AgentConfig {
    /// Kubernetes' defaults for a node named `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        let node_name: String = node_name.into();
        AgentConfig {
            root_dir: std::env::temp_dir().join("kommit-node").join(&node_name),
            node_name,
            node_labels: BTreeMap::new(),
            host_ip: None,
            lease_duration: Duration::from_secs(40),
            lease_renew_interval: Duration::from_secs(10),
            node_status_interval: Duration::from_secs(60),
            relist_interval: Duration::from_secs(1),
            resync_interval: Duration::from_secs(10),
            cluster_dns: None,
        }
    }
}

/// Errors that stop an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The runtime failed in a way the agent cannot work around.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// What the agent sends a pod's worker.
#[derive(Debug, Clone, PartialEq)]
enum Desired {
    Run(Box<Pod>),
    Remove,
}

struct WorkerHandle {
    tx: watch::Sender<Desired>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

/// The node agent (see the module docs).
pub struct Agent {
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    control: Arc<dyn ControlPlane>,
    facts: HostFacts,
}

impl Agent {
    /// An agent for `config.node_name` running pods through `runtime`.
    pub fn new(
        config: AgentConfig,
        runtime: Arc<dyn Runtime>,
        control: Arc<dyn ControlPlane>,
    ) -> Self {
        Agent {
            config,
            runtime,
            control,
            facts: HostFacts::read(),
        }
    }

    /// The host facts the node reports.
    pub fn facts(&self) -> &HostFacts {
        &self.facts
    }

    /// Runs until `shutdown` resolves. Containers keep running when the agent stops; the
    /// next agent for the same node adopts them.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), AgentError> {
        let host_ip = self
            .config
            .host_ip
            .clone()
            .unwrap_or_else(|| self.facts.internal_ip.clone());
        let shared = Arc::new(WorkerShared {
            runtime: self.runtime.clone(),
            control: self.control.clone(),
            node_name: self.config.node_name.clone(),
            host_ip,
            facts: self.facts.clone(),
            resync: self.config.resync_interval,
            cluster_dns: self.config.cluster_dns.clone(),
            root_dir: self.config.root_dir.clone(),
        });
        tracing::info!(
            node = self.config.node_name,
            runtime = self.runtime.kind().scheme(),
            "node agent starting"
        );
        let heartbeat = tokio::spawn(heartbeat(
            self.config.clone(),
            self.facts.clone(),
            self.runtime.clone(),
            self.control.clone(),
        ));
        let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
        let mut terminating: HashMap<String, JoinHandle<()>> = HashMap::new();
        let mut strays: HashMap<String, JoinHandle<()>> = HashMap::new();
        let mut synced = false;
        let mut fingerprints: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let mut pods = self.control.watch_pods(&self.config.node_name);
        let mut relist = tokio::time::interval(self.config.relist_interval);
        relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                item = pods.next() => match item {
                    Some(Ok(set)) => {
                        synced = true;
                        self.apply_pod_set(set, &shared, &mut workers, &mut terminating);
                    }
                    Some(Err(e)) => {
                        tracing::warn!("pod watch failed: {e}");
                    }
                    None => {
                        tracing::warn!("pod watch ended; watching again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        pods = self.control.watch_pods(&self.config.node_name);
                    }
                },
                _ = relist.tick() => {
                    terminating.retain(|_, h| !h.is_finished());
                    strays.retain(|_, h| !h.is_finished());
                    if let Err(e) = self.relist(synced, &workers, &terminating, &mut strays, &mut fingerprints).await {
                        tracing::warn!("relist failed: {e}");
                    }
                }
            }
        }
        tracing::info!(
            node = self.config.node_name,
            "node agent stopping; containers keep running"
        );
        heartbeat.abort();
        for (_, w) in workers {
            w.task.abort();
        }
        for (_, t) in terminating.into_iter().chain(strays) {
            t.abort();
        }
        Ok(())
    }

    fn apply_pod_set(
        &self,
        set: Vec<Pod>,
        shared: &Arc<WorkerShared>,
        workers: &mut HashMap<String, WorkerHandle>,
        terminating: &mut HashMap<String, JoinHandle<()>>,
    ) {
        let mut seen = HashSet::new();
        for pod in set {
            let Some(uid) = pod.metadata.uid.clone().filter(|u| !u.is_empty()) else {
                tracing::warn!(pod = ?pod.metadata.name, "ignoring a pod without metadata.uid");
                continue;
            };
            seen.insert(uid.clone());
            let mut desired_pod = pod.clone();
            // The worker does not react to status-only changes (its own reports).
            desired_pod.status = None;
            desired_pod.metadata.resource_version = None;
            desired_pod.metadata.managed_fields = None;
            let desired = Desired::Run(Box::new(desired_pod));
            match workers.get(&uid) {
                Some(w) => {
                    w.tx.send_if_modified(|cur| {
                        if *cur != desired {
                            *cur = desired.clone();
                            true
                        } else {
                            false
                        }
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(desired);
                    let wake = Arc::new(Notify::new());
                    let worker = PodWorker::new(shared.clone(), &pod, wake.clone());
                    let task = tokio::spawn(run_worker(worker, rx, wake.clone(), shared.clone()));
                    workers.insert(uid, WorkerHandle { tx, wake, task });
                }
            }
        }
        let gone: Vec<String> = workers
            .keys()
            .filter(|u| !seen.contains(*u))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(w) = workers.remove(&uid) {
                let _ = w.tx.send(Desired::Remove);
                terminating.insert(uid, w.task);
            }
        }
    }

    async fn relist(
        &self,
        synced: bool,
        workers: &HashMap<String, WorkerHandle>,
        terminating: &HashMap<String, JoinHandle<()>>,
        strays: &mut HashMap<String, JoinHandle<()>>,
        fingerprints: &mut HashMap<String, Vec<(String, String)>>,
    ) -> Result<(), RuntimeError> {
        let all = ListFilter::all();
        let (sandboxes, containers) = tokio::join!(
            self.runtime.list_sandboxes(&all),
            self.runtime.list_containers(&all)
        );
        let (sandboxes, containers) = (sandboxes?, containers?);
        let mut now: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let mut pods: HashMap<String, PodRef> = HashMap::new();
        for s in &sandboxes {
            now.entry(s.pod.uid.clone())
                .or_default()
                .push((s.id.clone(), format!("{:?}", s.state)));
            pods.insert(s.pod.uid.clone(), s.pod.clone());
        }
        for c in &containers {
            now.entry(c.pod.uid.clone())
                .or_default()
                .push((c.id.clone(), format!("{:?}{:?}", c.state, c.exit_code)));
            pods.insert(c.pod.uid.clone(), c.pod.clone());
        }
        for v in now.values_mut() {
            v.sort();
        }
        // Wake workers whose containers changed (or vanished altogether).
        for (uid, w) in workers {
            if now.get(uid) != fingerprints.get(uid) {
                w.wake.notify_one();
            }
        }
        // Strays: runtime objects of pods not bound here.
        if synced {
            for (uid, pod) in pods {
                if workers.contains_key(&uid)
                    || terminating.contains_key(&uid)
                    || strays.contains_key(&uid)
                {
                    continue;
                }
                let alive = containers
                    .iter()
                    .any(|c| c.pod.uid == uid && c.state == ContainerState::Running)
                    || sandboxes
                        .iter()
                        .any(|s| s.pod.uid == uid && s.state == SandboxState::Ready);
                tracing::info!(pod = %pod, uid, alive, "removing containers of a pod not bound to this node");
                let runtime = self.runtime.clone();
                let root = self.config.root_dir.clone();
                let task = tokio::spawn(remove_stray(runtime, uid.clone(), root));
                strays.insert(uid, task);
            }
            // Volume directories of pods that left while no agent ran.
            for uid in crate::volumes::pod_dirs(&self.config.root_dir) {
                if !(workers.contains_key(&uid)
                    || terminating.contains_key(&uid)
                    || strays.contains_key(&uid)
                    || now.contains_key(&uid))
                {
                    crate::volumes::remove_pod_dir(&self.config.root_dir, &uid);
                }
            }
        }
        *fingerprints = now;
        Ok(())
    }
}

async fn remove_stray(runtime: Arc<dyn Runtime>, uid: String, root: std::path::PathBuf) {
    let f = ListFilter::pod(&uid);
    if let Ok(cs) = runtime.list_containers(&f).await {
        let stops = cs
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .map(|c| runtime.stop_container(&c.id, c.termination_grace));
        futures::future::join_all(stops).await;
        for c in cs {
            let _ = runtime.remove_container(&c.id).await;
        }
    }
    if let Ok(sbs) = runtime.list_sandboxes(&f).await {
        for s in sbs {
            let _ = runtime.stop_sandbox(&s.id).await;
            let _ = runtime.remove_sandbox(&s.id).await;
        }
    }
    crate::volumes::remove_pod_dir(&root, &uid);
}

async fn run_worker(
    mut worker: PodWorker,
    mut rx: watch::Receiver<Desired>,
    wake: Arc<Notify>,
    shared: Arc<WorkerShared>,
) {
    let mut terminated_for: Option<String> = None;
    loop {
        let desired = rx.borrow_and_update().clone();
        let next = match desired {
            Desired::Remove => {
                let _ = worker.terminate(None, None).await;
                worker.remove_all().await;
                return;
            }
            Desired::Run(pod) => {
                let deleting = pod.metadata.deletion_timestamp.is_some();
                if deleting {
                    // Being deleted: stop once with its grace period and report the final status.
                    let key = pod.metadata.uid.clone().unwrap_or_default();
                    if terminated_for.as_deref() != Some(&key) {
                        let grace = pod
                            .metadata
                            .deletion_grace_period_seconds
                            .map(|s| Duration::from_secs(s.max(0) as u64))
                            .unwrap_or_else(|| termination_grace(&pod));
                        if let Some(status) = worker.terminate(Some(&pod), Some(grace)).await {
                            report(&mut worker, &shared, status).await;
                        }
                        terminated_for = Some(key);
                    }
                    None
                } else {
                    let r = worker.sync(&pod).await;
                    report(&mut worker, &shared, r.status).await;
                    r.wake_at
                }
            }
        };
        let resync = Instant::now() + shared.resync;
        let deadline = next.map_or(resync, |n| n.min(resync));
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = wake.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

async fn report(worker: &mut PodWorker, shared: &WorkerShared, status: PodStatus) {
    if worker.last_status() == Some(&status) {
        return;
    }
    let pod = worker.pod_ref().clone();
    tracing::debug!(pod = %pod, phase = ?status.phase, "reporting pod status");
    match shared
        .control
        .report_pod_status(&pod.namespace, &pod.name, &pod.uid, status.clone())
        .await
    {
        Ok(()) => worker.set_last_status(status),
        Err(e) => tracing::warn!(pod = %pod, "cannot report pod status: {e}"),
    }
}

async fn heartbeat(
    config: AgentConfig,
    facts: HostFacts,
    runtime: Arc<dyn Runtime>,
    control: Arc<dyn ControlPlane>,
) {
    // Register, retrying until the control plane answers.
    let mut retry = Duration::from_millis(500);
    let (node_uid, mut last_status): (Option<String>, NodeStatus) = loop {
        let (version, err) = match runtime.version().await {
            Ok(v) => (v, None),
            Err(e) => (String::new(), Some(e.to_string())),
        };
        let status = node_status(
            &config.node_name,
            &facts,
            &version,
            err.as_deref(),
            None,
            Timestamp::now(),
        );
        let node = node_object(
            &config.node_name,
            &config.node_labels,
            status.clone(),
            &facts.architecture,
        );
        match control.register_node(node).await {
            Ok(n) => {
                tracing::info!(node = config.node_name, "node registered");
                break (n.metadata.uid, status);
            }
            Err(e) => {
                tracing::warn!("cannot register the node (retrying in {retry:?}): {e}");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(10));
            }
        }
    };
    let lease_secs = config.lease_duration.as_secs().min(i32::MAX as u64) as i32;
    let mut last_status_write = Instant::now();
    let mut tick = tokio::time::interval(config.lease_renew_interval);
    loop {
        tick.tick().await;
        if let Err(e) = control
            .renew_lease(node_lease(
                &config.node_name,
                node_uid.as_deref(),
                lease_secs,
                Timestamp::now(),
            ))
            .await
        {
            tracing::warn!("cannot renew the node lease: {e}");
        }
        let (version, err) = match runtime.version().await {
            Ok(v) => (v, None),
            Err(e) => (String::new(), Some(e.to_string())),
        };
        let status = node_status(
            &config.node_name,
            &facts,
            &version,
            err.as_deref(),
            Some(&last_status),
            Timestamp::now(),
        );
        let changed = strip_heartbeats(&status) != strip_heartbeats(&last_status);
        if changed || last_status_write.elapsed() >= config.node_status_interval {
            match control
                .update_node_status(&config.node_name, status.clone())
                .await
            {
                Ok(()) => {
                    last_status = status;
                    last_status_write = Instant::now();
                }
                Err(e) => tracing::warn!("cannot update the node status: {e}"),
            }
        }
    }
}

fn strip_heartbeats(s: &NodeStatus) -> NodeStatus {
    let mut s = s.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_heartbeat_time = None;
    }
    s
}

/// A pod container's log: the current instance, or with `previous` the one before it
/// (as `kubectl logs --previous`).
pub async fn container_logs(
    runtime: &dyn Runtime,
    pod_uid: &str,
    container: &str,
    previous: bool,
    options: LogOptions,
) -> Result<Vec<u8>, RuntimeError> {
    let mut cs: Vec<_> = runtime
        .list_containers(&ListFilter::pod(pod_uid))
        .await?
        .into_iter()
        .filter(|c| c.name == container)
        .collect();
    cs.sort_by_key(|c| std::cmp::Reverse(c.attempt));
    let pick = if previous { cs.get(1) } else { cs.first() };
    match pick {
        Some(c) => runtime.logs(&c.id, options).await,
        None => Err(RuntimeError::NotFound(format!(
            "{}container {container} of pod {pod_uid}",
            if previous { "previous terminated " } else { "" }
        ))),
    }
}
