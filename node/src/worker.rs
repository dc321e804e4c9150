//! The pod worker: converges one pod's sandbox and containers to its spec and computes
//! its status, as the kubelet's `SyncPod` does.
//!
//! One sync: list what the runtime has for the pod's UID; remove containers the spec no
//! longer names and duplicates; if the pod is finished (per restartPolicy) stop its
//! sandbox; otherwise make sure a ready sandbox exists (a new one restarts the pod's
//! containers), run init containers in order, then start every container that is missing,
//! restarting exited ones per restartPolicy with CrashLoopBackOff, replacing running ones
//! whose spec changed. Image errors, config errors and back-off show as waiting reasons.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backoff::BackOff;
use crate::control::ControlPlane;
use crate::events::{EventType, pod_event};
use crate::image::PullPolicy;
use crate::node_info::HostFacts;
use crate::probe::run::Target;
use crate::probe::{Change, ContainerProbes, Outcome as ProbeOutcome, ProbeKind, ProbeSpec};
use crate::runtime::{
    ContainerState, ContainerStatus, ListFilter, PodRef, Runtime, SandboxConfig, SandboxState,
    SandboxStatus,
};
use crate::spec::{
    EnvContext, container_config, container_hash, container_ports, referenced_objects,
    termination_grace,
};
use crate::status::{ContainerView, StatusInput, pod_status};

/// What every worker of an agent shares.
pub(crate) struct WorkerShared {
    pub runtime: Arc<dyn Runtime>,
    pub control: Arc<dyn ControlPlane>,
    pub node_name: String,
    pub host_ip: String,
    pub facts: HostFacts,
    /// How often a quiet pod is synced anyway.
    pub resync: Duration,
    /// The node's cluster DNS, for pods' resolver settings.
    pub cluster_dns: Option<crate::dns::ClusterDns>,
    /// Where pods' volumes live (`<root>/pods/<uid>/volumes`).
    pub root_dir: std::path::PathBuf,
}

/// What the runtime holds for one pod.
#[derive(Debug, Default)]
struct Observed {
    sandboxes: Vec<SandboxStatus>,
    containers: Vec<ContainerStatus>,
}

impl Observed {
    /// Instances of a container, newest first.
    fn instances(&self, name: &str) -> Vec<&ContainerStatus> {
        let mut v: Vec<_> = self.containers.iter().filter(|c| c.name == name).collect();
        v.sort_by(|a, b| {
            b.attempt
                .cmp(&a.attempt)
                .then(b.created_at.cmp(&a.created_at))
        });
        v
    }
}

/// Per-sync bookkeeping.
#[derive(Default)]
struct SyncState {
    waiting: HashMap<String, (String, String)>,
    wake: Option<Instant>,
    acted: bool,
}

impl SyncState {
    fn wake_at(&mut self, t: Instant) {
        self.wake = Some(self.wake.map_or(t, |w| w.min(t)));
    }
    fn wait(&mut self, name: &str, reason: &str, message: impl Into<String>) {
        self.waiting
            .insert(name.to_string(), (reason.to_string(), message.into()));
    }
}

enum Outcome {
    Running,
    Finished { ok: bool },
    Waiting,
}

/// The result of one sync.
pub(crate) struct SyncResult {
    pub status: PodStatus,
    pub wake_at: Option<Instant>,
}

/// One pod's worker state (lives as long as the pod is bound to the node).
pub(crate) struct PodWorker {
    sh: Arc<WorkerShared>,
    pod: PodRef,
    backoff: BackOff,
    /// Container id → when the worker first saw it exited (the back-off's event time).
    exit_seen: HashMap<String, Instant>,
    /// Image → last failed pull.
    pull_failed: HashMap<String, Instant>,
    /// Container name → newest instance seen last sync.
    known: HashMap<String, ContainerStatus>,
    /// Container name → a newest instance that disappeared (removed behind our back).
    vanished: HashMap<String, ContainerStatus>,
    /// Ids we already sent a BackOff event for.
    backoff_events: HashSet<String>,
    start_time: Option<Timestamp>,
    last_status: Option<PodStatus>,
    /// Wakes this pod's sync loop (probe verdict changes use it).
    wake: Arc<Notify>,
    /// Container id → its probe task and verdicts.
    probes: HashMap<String, ProbeHandle>,
    /// Ids of instances killed because a liveness or startup probe failed.
    probe_killed: HashSet<String>,
    /// The pod as last synced (its preStop hooks run when it is removed).
    last_pod: Option<Pod>,
}

/// The verdicts of one container instance's probes, as its probe task last set them.
#[derive(Debug, Clone, Default)]
struct ProbeView {
    started: bool,
    ready: bool,
    /// A liveness or startup probe failed for good: which, and the last failure.
    kill: Option<(ProbeKind, String)>,
}

struct ProbeHandle {
    view: Arc<Mutex<ProbeView>>,
    task: JoinHandle<()>,
}

impl Drop for PodWorker {
    fn drop(&mut self) {
        for (_, h) in self.probes.drain() {
            h.task.abort();
        }
    }
}

/// Records an event about a pod (best effort: a failure is only logged).
async fn record_event(
    sh: &WorkerShared,
    pod: &PodRef,
    container: Option<&str>,
    t: EventType,
    reason: &str,
    message: String,
) {
    match t {
        EventType::Normal => tracing::debug!(pod = %pod, container, reason, "{message}"),
        EventType::Warning => tracing::warn!(pod = %pod, container, reason, "{message}"),
    }
    let ev = pod_event(
        &sh.node_name,
        pod,
        container,
        t,
        reason,
        &message,
        Timestamp::now(),
    );
    if let Err(e) = sh.control.record_event(ev).await {
        tracing::debug!(pod = %pod, "cannot record event: {e}");
    }
}

/// Runs one container instance's probes until the instance is condemned or the task is
/// aborted: waits until a probe is due, runs it, records the result, and when a verdict
/// changes publishes it and wakes the pod's sync.
async fn probe_loop(
    mut probes: ContainerProbes,
    sh: Arc<WorkerShared>,
    pod: PodRef,
    container: String,
    target: Target,
    view: Arc<Mutex<ProbeView>>,
    wake: Arc<Notify>,
) {
    while let Some((kind, at)) = probes.next() {
        tokio::time::sleep_until(at).await;
        let Some(spec) = probes.spec(kind).cloned() else {
            return;
        };
        let started = Instant::now();
        let outcome =
            crate::probe::run::probe(&*sh.runtime, &spec.action, &target, spec.timeout).await;
        let change = probes.record(kind, &outcome, started);
        if let ProbeOutcome::Failure(why) = &outcome {
            tracing::debug!(pod = %pod, container, probe = kind.title(), "probe failed: {why}");
            // One event per run of failures (the kubelet sends one per failure).
            let first_of_run = probes.state(kind).is_some_and(|s| s.run_length() == 1);
            if first_of_run || change.is_some() {
                record_event(
                    &sh,
                    &pod,
                    Some(&container),
                    EventType::Warning,
                    "Unhealthy",
                    format!("{} probe failed: {why}", kind.title()),
                )
                .await;
            }
        }
        if let Some(change) = change {
            tracing::info!(pod = %pod, container, ?change, "probe verdict changed");
            {
                let mut v = view.lock().expect("probe view lock");
                v.started = probes.started();
                v.ready = probes.ready();
                if let Change::Kill { kind, message } = change {
                    v.kill = Some((kind, message));
                }
            }
            wake.notify_one();
        }
    }
}

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

impl PodWorker {
    pub fn new(sh: Arc<WorkerShared>, pod: &Pod, wake: Arc<Notify>) -> Self {
        PodWorker {
            sh,
            pod: pod_ref(pod),
            backoff: BackOff::default(),
            exit_seen: HashMap::new(),
            pull_failed: HashMap::new(),
            known: HashMap::new(),
            vanished: HashMap::new(),
            backoff_events: HashSet::new(),
            start_time: None,
            last_status: pod.status.clone(),
            wake,
            probes: HashMap::new(),
            probe_killed: HashSet::new(),
            last_pod: None,
        }
    }

    pub fn pod_ref(&self) -> &PodRef {
        &self.pod
    }

    /// The last status this worker computed (what was reported).
    pub fn last_status(&self) -> Option<&PodStatus> {
        self.last_status.as_ref()
    }

    pub fn set_last_status(&mut self, s: PodStatus) {
        self.last_status = Some(s);
    }

    async fn event(&self, container: Option<&str>, t: EventType, reason: &str, message: String) {
        record_event(&self.sh, &self.pod, container, t, reason, message).await;
    }

    /// Starts probe tasks for running instances that have probes and stops those of
    /// instances that no longer run.
    fn ensure_probes(&mut self, pod: &Pod, obs: &Observed, sandbox: Option<&SandboxStatus>) {
        let spec = pod.spec.clone().unwrap_or_default();
        let mut wanted = HashSet::new();
        for c in spec.containers.iter().filter(|c| ContainerProbes::any(c)) {
            let Some(l) = obs.instances(&c.name).into_iter().next() else {
                continue;
            };
            if l.state != ContainerState::Running {
                continue;
            }
            wanted.insert(l.id.clone());
            if self.probes.contains_key(&l.id) {
                continue;
            }
            // Probes count from the instance's start (an adopted one started earlier).
            let ran_for = l
                .started_at
                .map(|t| Timestamp::now().duration_since(t))
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or_default();
            let now = Instant::now();
            let started = now.checked_sub(ran_for).unwrap_or(now);
            let view = Arc::new(Mutex::new(ProbeView::default()));
            let mut probes = match ContainerProbes::new(c, started) {
                Ok(p) => p,
                Err(e) => {
                    // A probe the node cannot run (gRPC, a port name that does not exist):
                    // the container never counts as started or ready, and an event says why.
                    let (sh, pod, name) = (self.sh.clone(), self.pod.clone(), c.name.clone());
                    let task = tokio::spawn(async move {
                        let msg = format!("cannot run the probe: {e}");
                        record_event(&sh, &pod, Some(&name), EventType::Warning, "Unhealthy", msg)
                            .await;
                    });
                    self.probes.insert(l.id.clone(), ProbeHandle { view, task });
                    continue;
                }
            };
            // What the last report said of this very instance (an agent restart).
            let container_id = format!("{}://{}", self.sh.runtime.kind().scheme(), l.id);
            if let Some(prev) = self
                .last_status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| {
                    cs.iter()
                        .find(|s| s.container_id.as_deref() == Some(container_id.as_str()))
                })
            {
                probes.resume(prev.started.unwrap_or(false), prev.ready);
            }
            {
                let mut v = view.lock().expect("probe view lock");
                v.started = probes.started();
                v.ready = probes.ready();
            }
            let pod_ip = sandbox.and_then(|s| s.ip.clone()).or_else(|| {
                obs.sandboxes
                    .iter()
                    .filter(|s| s.state == SandboxState::Ready)
                    .find_map(|s| s.ip.clone())
            });
            let target = Target {
                container_id: l.id.clone(),
                pod_ip,
            };
            let task = tokio::spawn(probe_loop(
                probes,
                self.sh.clone(),
                self.pod.clone(),
                c.name.clone(),
                target,
                view.clone(),
                self.wake.clone(),
            ));
            self.probes.insert(l.id.clone(), ProbeHandle { view, task });
        }
        self.probe_killed
            .retain(|id| obs.containers.iter().any(|c| &c.id == id));
        self.probes.retain(|id, h| {
            let keep = wanted.contains(id);
            if !keep {
                h.task.abort();
            }
            keep
        });
    }

    /// The probe verdicts of a running instance: `(started, ready)`.
    fn probe_verdicts(&self, c: &Container, id: &str) -> (bool, bool) {
        match self.probes.get(id) {
            Some(h) => {
                let v = h.view.lock().expect("probe view lock");
                (v.started, v.ready)
            }
            None => {
                let started = c.startup_probe.is_none();
                (started, started && c.readiness_probe.is_none())
            }
        }
    }

    /// Whether restartPolicy restarts this exited instance (one killed by a failed
    /// liveness or startup probe restarts unless the policy is Never).
    fn restarts(&self, policy: &str, l: &ContainerStatus) -> bool {
        should_restart(policy, l.exit_code)
            || (policy != "Never" && self.probe_killed.contains(&l.id))
    }

    /// Stops a container as the kubelet kills one: its preStop hook first (within the
    /// grace period), then SIGTERM, then SIGKILL when the rest of the grace has passed.
    async fn kill_container(
        &self,
        c: Option<&Container>,
        id: &str,
        grace: Duration,
        pod_ip: Option<String>,
    ) {
        let started = Instant::now();
        let hook = c.and_then(|c| c.lifecycle.as_ref()?.pre_stop.clone());
        let mut left = grace;
        if let (Some(hook), Some(c)) = (hook, c) {
            tracing::info!(pod = %self.pod, container = c.name, "running the preStop hook");
            let result = self.run_hook(&hook, c, id, grace, pod_ip).await;
            // The kubelet leaves at least 2 s between SIGTERM and SIGKILL after a hook.
            left = grace
                .saturating_sub(started.elapsed())
                .max(Duration::from_secs(2));
            if let Err(why) = result {
                self.event(
                    Some(&c.name),
                    EventType::Warning,
                    "FailedPreStopHook",
                    format!("PreStopHook failed: {why}"),
                )
                .await;
            }
        }
        if let Err(e) = self.sh.runtime.stop_container(id, left).await {
            tracing::warn!(pod = %self.pod, id, "cannot stop container: {e}");
        }
    }

    /// Runs a lifecycle hook (exec or httpGet), bounded by `limit`.
    async fn run_hook(
        &self,
        hook: &LifecycleHandler,
        c: &Container,
        id: &str,
        limit: Duration,
        pod_ip: Option<String>,
    ) -> Result<(), String> {
        let probe = k8s_openapi::api::core::v1::Probe {
            exec: hook.exec.clone(),
            http_get: hook.http_get.clone(),
            tcp_socket: hook.tcp_socket.clone(),
            ..Default::default()
        };
        if let Some(sleep) = &hook.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(limit)).await;
            return Ok(());
        }
        let spec = ProbeSpec::from_k8s(&probe, c, ProbeKind::Liveness).map_err(|e| e.0)?;
        let target = Target {
            container_id: id.to_string(),
            pod_ip,
        };
        match crate::probe::run::probe(&*self.sh.runtime, &spec.action, &target, limit).await {
            ProbeOutcome::Success => Ok(()),
            ProbeOutcome::Failure(why) => Err(why),
        }
    }

    async fn observe(&self) -> Result<Observed, crate::runtime::RuntimeError> {
        let f = ListFilter::pod(&self.pod.uid);
        let (sandboxes, containers) = tokio::join!(
            self.sh.runtime.list_sandboxes(&f),
            self.sh.runtime.list_containers(&f)
        );
        Ok(Observed {
            sandboxes: sandboxes?,
            containers: containers?,
        })
    }

    /// Notices newest instances that disappeared since the last sync.
    fn note_vanished(&mut self, obs: &Observed) {
        let now = Timestamp::now();
        let mut gone = Vec::new();
        for (name, known) in &self.known {
            let newest = obs.instances(name).first().map(|c| c.attempt);
            let present = obs.containers.iter().any(|c| c.id == known.id);
            if !present && newest.is_none_or(|a| a < known.attempt) {
                let mut v = known.clone();
                if v.state != ContainerState::Exited {
                    v.state = ContainerState::Exited;
                    v.exit_code = Some(137);
                    v.reason = Some("ContainerStatusUnknown".into());
                    v.message =
                        Some("The container was removed from the runtime while it ran".into());
                    v.finished_at = Some(now);
                }
                gone.push((name.clone(), v));
            }
        }
        for (name, v) in gone {
            tracing::info!(pod = %self.pod, container = name, id = v.id, "container disappeared from the runtime");
            self.vanished.insert(name, v);
        }
        self.remember(obs);
    }

    /// Records the newest instance of each container, to notice later if it disappears.
    /// Stops every running container of `containers` (best effort: a container that is
    /// already gone needs no stopping, and the next sync sees what is left).
    async fn stop_running(&self, containers: &[ContainerStatus]) {
        for c in containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
        {
            let _ = self
                .sh
                .runtime
                .stop_container(&c.id, c.termination_grace)
                .await;
        }
    }

    fn remember(&mut self, obs: &Observed) {
        self.known.clear();
        for c in &obs.containers {
            let newer = self
                .known
                .get(&c.name)
                .is_none_or(|k| c.attempt > k.attempt);
            if newer {
                self.known.insert(c.name.clone(), c.clone());
            }
        }
    }

    /// The newest instance: a real one, or a vanished one if that was newer.
    fn latest(&self, obs: &Observed, name: &str) -> Option<ContainerStatus> {
        let real = obs.instances(name).first().map(|c| (*c).clone());
        match (real, self.vanished.get(name)) {
            (Some(r), Some(v)) if v.attempt >= r.attempt && v.id != r.id => Some(v.clone()),
            (Some(r), _) => Some(r),
            (None, v) => v.cloned(),
        }
    }

    fn previous(
        &self,
        obs: &Observed,
        name: &str,
        latest: Option<&ContainerStatus>,
    ) -> Option<ContainerStatus> {
        let latest = latest?;
        let real = obs
            .instances(name)
            .into_iter()
            .find(|c| c.id != latest.id && c.attempt < latest.attempt)
            .cloned();
        let vanished = self
            .vanished
            .get(name)
            .filter(|v| v.id != latest.id && v.attempt < latest.attempt);
        match (real, vanished) {
            (Some(r), Some(v)) => Some(if v.attempt > r.attempt { v.clone() } else { r }),
            (r, v) => r.or_else(|| v.cloned()),
        }
    }

    /// One sync of a pod that should run. Never fails: runtime errors become waiting
    /// reasons and an early retry.
    pub async fn sync(&mut self, pod: &Pod) -> SyncResult {
        let now = Instant::now();
        let mut st = SyncState::default();
        self.last_pod = Some(pod.clone());
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let obs = match self.observe().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(pod = %self.pod, "cannot list the pod's containers: {e}");
                let status = self.last_status.clone().unwrap_or_default();
                return SyncResult {
                    status,
                    wake_at: Some(now + Duration::from_secs(2)),
                };
            }
        };
        tracing::debug!(
            pod = %self.pod,
            sandboxes = ?obs.sandboxes.iter().map(|s| (&s.id[..12.min(s.id.len())], s.state)).collect::<Vec<_>>(),
            containers = ?obs.containers.iter().map(|c| (&c.name, c.attempt, c.state)).collect::<Vec<_>>(),
            "sync"
        );
        self.note_vanished(&obs);
        if self.start_time.is_none() {
            self.start_time = obs
                .sandboxes
                .iter()
                .filter_map(|s| s.created_at)
                .min()
                .or(Some(Timestamp::now()));
        }

        // Containers the spec no longer names, and duplicates of running ones, go.
        let names: HashSet<&str> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .map(|c| c.name.as_str())
            .collect();
        for c in &obs.containers {
            let newest = obs.instances(&c.name).first().map(|n| n.id.clone());
            let unknown = !names.contains(c.name.as_str());
            let duplicate =
                c.state == ContainerState::Running && newest.as_deref() != Some(c.id.as_str());
            if unknown || duplicate {
                tracing::info!(pod = %self.pod, container = c.name, id = c.id, unknown, duplicate, "removing container");
                let _ = self
                    .sh
                    .runtime
                    .stop_container(&c.id, c.termination_grace)
                    .await;
                let _ = self.sh.runtime.remove_container(&c.id).await;
                st.acted = true;
            }
        }

        // Init containers that failed for good, or all containers finished: the pod is done.
        let init_failed = spec.init_containers.iter().flatten().any(|c| {
            policy == "Never"
                && self
                    .latest(&obs, &c.name)
                    .is_some_and(|l| l.state == ContainerState::Exited && l.exit_code != Some(0))
        });
        let all_finished = !spec.containers.is_empty()
            && spec.containers.iter().all(|c| {
                self.latest(&obs, &c.name).is_some_and(|l| {
                    l.state == ContainerState::Exited && !self.restarts(&policy, &l)
                })
            });
        if init_failed || all_finished {
            for sb in obs
                .sandboxes
                .iter()
                .filter(|s| s.state == SandboxState::Ready)
            {
                tracing::info!(pod = %self.pod, "pod finished; stopping its sandbox");
                let _ = self.sh.runtime.stop_sandbox(&sb.id).await;
                st.acted = true;
            }
            return self
                .finish(pod, &policy, st, None, init_failed, false)
                .await;
        }

        // The sandbox.
        let Some(sandbox) = self.ensure_sandbox(pod, &policy, &obs, &mut st).await else {
            return self.finish(pod, &policy, st, None, false, false).await;
        };
        let obs = if st.acted {
            self.observe().await.unwrap_or(obs)
        } else {
            obs
        };

        let ctx = match self.env_context(pod, &sandbox).await {
            Ok(mut ctx) => match crate::volumes::prepare(&self.sh.root_dir, pod, &ctx) {
                Ok(mounts) => {
                    ctx.mounts = mounts;
                    ctx
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.event(None, EventType::Warning, "FailedMount", msg.clone())
                        .await;
                    for c in &spec.containers {
                        st.wait(&c.name, "ContainerCreating", msg.clone());
                    }
                    st.wake_at(now + Duration::from_secs(5));
                    return self
                        .finish(pod, &policy, st, Some(&sandbox), false, false)
                        .await;
                }
            },
            Err(msg) => {
                for c in &spec.containers {
                    st.wait(&c.name, "CreateContainerConfigError", msg.clone());
                }
                st.wake_at(now + Duration::from_secs(5));
                return self
                    .finish(pod, &policy, st, Some(&sandbox), false, false)
                    .await;
            }
        };

        // Init containers, one at a time, in order.
        let mut initializing = false;
        let init_policy = if policy == "Never" {
            "Never"
        } else {
            "OnFailure"
        };
        for c in spec.init_containers.iter().flatten() {
            match self
                .converge_container(pod, c, init_policy, &sandbox, &obs, &ctx, &mut st)
                .await
            {
                Outcome::Finished { ok: true } => continue,
                Outcome::Finished { ok: false } => {
                    return self
                        .finish(pod, &policy, st, Some(&sandbox), true, false)
                        .await;
                }
                Outcome::Running | Outcome::Waiting => {
                    initializing = true;
                    break;
                }
            }
        }
        if !initializing {
            for c in &spec.containers {
                self.converge_container(pod, c, &policy, &sandbox, &obs, &ctx, &mut st)
                    .await;
            }
        }
        self.finish(pod, &policy, st, Some(&sandbox), false, initializing)
            .await
    }

    async fn env_context(&self, pod: &Pod, sandbox: &SandboxStatus) -> Result<EnvContext, String> {
        let mut ctx = EnvContext {
            node_name: self.sh.node_name.clone(),
            host_ip: Some(self.sh.host_ip.clone()),
            pod_ip: sandbox.ip.clone(),
            node_cpu_millis: self.sh.facts.cpus * 1000,
            node_memory_bytes: self.sh.facts.memory_bytes,
            ..Default::default()
        };
        if crate::spec::service_links(pod) {
            match self.sh.control.list_services(&self.pod.namespace).await {
                Ok(list) => ctx.service_env = crate::spec::service_env(&list),
                Err(e) => return Err(format!("cannot list services: {e}")),
            }
        }
        let (cms, secrets) = referenced_objects(pod);
        for name in cms {
            match self
                .sh
                .control
                .get_config_map(&self.pod.namespace, &name)
                .await
            {
                Ok(Some(cm)) => {
                    ctx.config_maps.insert(name, cm);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("cannot read configmap \"{name}\": {e}")),
            }
        }
        for name in secrets {
            match self.sh.control.get_secret(&self.pod.namespace, &name).await {
                Ok(Some(s)) => {
                    ctx.secrets.insert(name, s);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("cannot read secret \"{name}\": {e}")),
            }
        }
        Ok(ctx)
    }

    async fn ensure_sandbox(
        &mut self,
        pod: &Pod,
        policy: &str,
        obs: &Observed,
        st: &mut SyncState,
    ) -> Option<SandboxStatus> {
        let mut ready: Vec<&SandboxStatus> = obs
            .sandboxes
            .iter()
            .filter(|s| s.state == SandboxState::Ready)
            .collect();
        ready.sort_by_key(|s| std::cmp::Reverse(s.attempt));
        if let Some(first) = ready.first() {
            for extra in ready.iter().skip(1) {
                tracing::info!(pod = %self.pod, id = extra.id, "removing a duplicate sandbox");
                let _ = self.sh.runtime.stop_sandbox(&extra.id).await;
                let _ = self.sh.runtime.remove_sandbox(&extra.id).await;
                st.acted = true;
            }
            return Some((*first).clone());
        }
        let ran_before = !obs.containers.is_empty() || !obs.sandboxes.is_empty();
        if policy == "Never" && ran_before {
            // Kubernetes does not make a new sandbox for a Never pod that already ran.
            self.stop_running(&obs.containers).await;
            st.acted = true;
            return None;
        }
        if ran_before {
            self.event(
                None,
                EventType::Normal,
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.".into(),
            )
            .await;
            // Containers lost their network namespace: stop them so they restart inside the new one.
            self.stop_running(&obs.containers).await;
            for sb in &obs.sandboxes {
                let _ = self.sh.runtime.remove_sandbox(&sb.id).await;
            }
        }
        st.acted = true;
        let spec = pod.spec.clone().unwrap_or_default();
        let mut ports = Vec::new();
        for c in &spec.containers {
            match container_ports(c) {
                Ok(p) => ports.extend(p),
                Err(e) => {
                    st.wait(&c.name, "CreateContainerConfigError", e.0);
                }
            }
        }
        let attempt = obs
            .sandboxes
            .iter()
            .map(|s| s.attempt + 1)
            .max()
            .unwrap_or(0);
        let config = SandboxConfig {
            pod: self.pod.clone(),
            attempt,
            hostname: self.pod.name.clone(),
            ports,
            termination_grace: termination_grace(pod),
            dns: crate::dns::pod_dns(pod, self.sh.cluster_dns.as_ref()),
        };
        let now = Instant::now();
        if let Some(d) = self.backoff.in_backoff_since(
            "sandbox",
            self.exit_seen.get("sandbox").copied().unwrap_or(now),
            now,
        ) {
            st.wake_at(now + d);
            for c in &spec.containers {
                st.wait(
                    &c.name,
                    "ContainerCreating",
                    "waiting to retry creating the pod sandbox",
                );
            }
            return None;
        }
        match self.sh.runtime.run_sandbox(&config).await {
            Ok(sb) => {
                self.backoff.reset("sandbox");
                self.exit_seen.remove("sandbox");
                Some(sb)
            }
            Err(e) => {
                let msg = format!("Failed to create pod sandbox: {e}");
                self.event(
                    None,
                    EventType::Warning,
                    "FailedCreatePodSandBox",
                    msg.clone(),
                )
                .await;
                self.exit_seen.insert("sandbox".into(), now);
                self.backoff.next("sandbox", now, now);
                st.wake_at(
                    now + self
                        .backoff
                        .current("sandbox")
                        .unwrap_or(Duration::from_secs(10)),
                );
                for c in &spec.containers {
                    st.wait(&c.name, "ContainerCreating", msg.clone());
                }
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn converge_container(
        &mut self,
        pod: &Pod,
        c: &Container,
        policy: &str,
        sandbox: &SandboxStatus,
        obs: &Observed,
        ctx: &EnvContext,
        st: &mut SyncState,
    ) -> Outcome {
        let now = Instant::now();
        let hash = container_hash(c);
        let latest = self.latest(obs, &c.name);
        let attempt = match &latest {
            Some(l) if l.state == ContainerState::Running => {
                let condemned = self
                    .probes
                    .get(&l.id)
                    .and_then(|h| h.view.lock().expect("probe view lock").kill.clone());
                if l.spec_hash == hash {
                    let Some((kind, _)) = condemned else {
                        return Outcome::Running;
                    };
                    // A failed liveness or startup probe: kill; the restart follows
                    // restartPolicy and the crash back-off like any exit.
                    self.event(
                        Some(&c.name),
                        EventType::Normal,
                        "Killing",
                        format!(
                            "Container {} failed {} probe, will be restarted",
                            c.name,
                            kind.title().to_lowercase()
                        ),
                    )
                    .await;
                    self.probe_killed.insert(l.id.clone());
                    self.kill_container(Some(c), &l.id, termination_grace(pod), sandbox.ip.clone())
                        .await;
                    st.acted = true;
                    st.wake_at(Instant::now());
                    return Outcome::Waiting;
                }
                self.event(
                    Some(&c.name),
                    EventType::Normal,
                    "Killing",
                    format!("Container {} definition changed, will be restarted", c.name),
                )
                .await;
                self.kill_container(Some(c), &l.id, termination_grace(pod), sandbox.ip.clone())
                    .await;
                st.acted = true;
                l.attempt + 1
            }
            Some(l)
                if l.state == ContainerState::Created && !self.vanished.contains_key(&c.name) =>
            {
                // Made but never started (an agent stopped half-way): start or replace it.
                if l.spec_hash == hash {
                    st.acted = true;
                    return match self.sh.runtime.start_container(&l.id).await {
                        Ok(()) => {
                            self.event(
                                Some(&c.name),
                                EventType::Normal,
                                "Started",
                                format!("Started container {}", c.name),
                            )
                            .await;
                            Outcome::Running
                        }
                        Err(e) => {
                            self.event(
                                Some(&c.name),
                                EventType::Warning,
                                "Failed",
                                format!("Error: {e}"),
                            )
                            .await;
                            st.wait(&c.name, "RunContainerError", e.to_string());
                            st.wake_at(now);
                            Outcome::Waiting
                        }
                    };
                }
                let _ = self.sh.runtime.remove_container(&l.id).await;
                l.attempt
            }
            Some(l) => {
                if !self.restarts(policy, l) {
                    return Outcome::Finished {
                        ok: l.exit_code == Some(0),
                    };
                }
                let event = *self.exit_seen.entry(l.id.clone()).or_insert(now);
                if let Some(step) = self.backoff.in_backoff_since(&c.name, event, now) {
                    let msg = format!(
                        "back-off {} restarting failed container={} pod={}_{}({})",
                        human(step),
                        c.name,
                        self.pod.name,
                        self.pod.namespace,
                        self.pod.uid
                    );
                    if self
                        .backoff_events
                        .insert(format!("{}:{}", l.id, step.as_secs()))
                    {
                        self.event(
                            Some(&c.name),
                            EventType::Warning,
                            "BackOff",
                            "Back-off restarting failed container".into(),
                        )
                        .await;
                    }
                    st.wait(&c.name, "CrashLoopBackOff", msg);
                    st.wake_at(event + step);
                    return Outcome::Waiting;
                }
                self.backoff.next(&c.name, event, now);
                l.attempt + 1
            }
            None => 0,
        };
        match self.start_new(pod, c, attempt, sandbox, obs, ctx, st).await {
            true => Outcome::Running,
            false => Outcome::Waiting,
        }
    }

    /// Pulls, creates and starts attempt `attempt` of `c`; false with a waiting reason when
    /// something failed.
    #[allow(clippy::too_many_arguments)]
    async fn start_new(
        &mut self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        sandbox: &SandboxStatus,
        obs: &Observed,
        ctx: &EnvContext,
        st: &mut SyncState,
    ) -> bool {
        let now = Instant::now();
        st.acted = true;
        let image = c.image.clone().unwrap_or_default();
        let pull_key = format!("pull:{image}");
        if let Some(failed) = self.pull_failed.get(&image).copied()
            && let Some(step) = self.backoff.in_backoff_since(&pull_key, failed, now)
        {
            st.wait(
                &c.name,
                "ImagePullBackOff",
                format!("Back-off pulling image \"{image}\""),
            );
            st.wake_at(failed + step);
            return false;
        }
        let policy = PullPolicy::for_container(c.image_pull_policy.as_deref(), &image);
        match self.sh.runtime.ensure_image(&image, policy).await {
            Ok(_) => {
                if self.pull_failed.remove(&image).is_some() {
                    self.backoff.reset(&pull_key);
                }
                self.event(
                    Some(&c.name),
                    EventType::Normal,
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                )
                .await;
            }
            Err(e) => {
                let reason = e.reason();
                self.event(
                    Some(&c.name),
                    EventType::Warning,
                    reason,
                    format!("Error: {e}"),
                )
                .await;
                st.wait(&c.name, reason, e.to_string());
                if e.backs_off() {
                    self.pull_failed.insert(image.clone(), now);
                    self.backoff.next(&pull_key, now, now);
                    // Sync again soon so the pod shows ImagePullBackOff while it waits.
                    st.wake_at(now + Duration::from_secs(1));
                } else {
                    st.wake_at(now + Duration::from_secs(10));
                }
                return false;
            }
        }
        let config = match container_config(pod, c, attempt, ctx) {
            Ok(cfg) => cfg,
            Err(e) => {
                self.event(
                    Some(&c.name),
                    EventType::Warning,
                    "Failed",
                    format!("Error: {e}"),
                )
                .await;
                st.wait(&c.name, "CreateContainerConfigError", e.0);
                st.wake_at(now + Duration::from_secs(5));
                return false;
            }
        };
        let id = match self.sh.runtime.create_container(sandbox, &config).await {
            Ok(id) => id,
            Err(e) => {
                self.event(
                    Some(&c.name),
                    EventType::Warning,
                    "Failed",
                    format!("Error: {e}"),
                )
                .await;
                st.wait(&c.name, "CreateContainerError", e.to_string());
                st.wake_at(now + Duration::from_secs(5));
                return false;
            }
        };
        self.event(
            Some(&c.name),
            EventType::Normal,
            "Created",
            format!("Created container {}", c.name),
        )
        .await;
        if let Err(e) = self.sh.runtime.start_container(&id).await {
            self.event(
                Some(&c.name),
                EventType::Warning,
                "Failed",
                format!("Error: {e}"),
            )
            .await;
            st.wait(&c.name, "RunContainerError", e.to_string());
            // The failed instance counts as a crash: the next sync backs off from it.
            st.wake_at(now);
            return false;
        }
        self.event(
            Some(&c.name),
            EventType::Normal,
            "Started",
            format!("Started container {}", c.name),
        )
        .await;
        tracing::info!(pod = %self.pod, container = c.name, attempt, id, "started container");
        // Keep the instance just replaced (for lastState and previous logs), drop older ones.
        for old in obs.instances(&c.name).into_iter().skip(1) {
            if old.state != ContainerState::Running {
                let _ = self.sh.runtime.remove_container(&old.id).await;
                self.exit_seen.remove(&old.id);
            }
        }
        true
    }

    /// Builds the status from a fresh look at the runtime.
    async fn finish(
        &mut self,
        pod: &Pod,
        policy: &str,
        st: SyncState,
        sandbox: Option<&SandboxStatus>,
        init_failed: bool,
        initializing: bool,
    ) -> SyncResult {
        let obs = match self.observe().await {
            Ok(obs) => {
                self.remember(&obs);
                self.ensure_probes(pod, &obs, sandbox);
                obs
            }
            Err(e) => {
                tracing::warn!(pod = %self.pod, "cannot list the pod's containers: {e}");
                let status = self.last_status.clone().unwrap_or_default();
                return SyncResult {
                    status,
                    wake_at: Some(Instant::now() + Duration::from_secs(2)),
                };
            }
        };
        let status = self.status_from(
            pod,
            policy,
            &obs,
            &st.waiting,
            sandbox,
            init_failed,
            initializing,
            false,
        );
        SyncResult {
            status,
            wake_at: st.wake,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn status_from(
        &self,
        pod: &Pod,
        policy: &str,
        obs: &Observed,
        waiting: &HashMap<String, (String, String)>,
        sandbox: Option<&SandboxStatus>,
        init_failed: bool,
        initializing: bool,
        force_terminal: bool,
    ) -> PodStatus {
        let spec = pod.spec.clone().unwrap_or_default();
        let view = |c: &Container, default_wait: Option<(&str, &str)>| {
            let latest = self.latest(obs, &c.name);
            let previous = self.previous(obs, &c.name, latest.as_ref());
            let mut w = waiting.get(&c.name).cloned();
            if w.is_none() && latest.is_none() {
                w = default_wait.map(|(r, m)| (r.to_string(), m.to_string()));
            }
            let running = latest
                .as_ref()
                .filter(|l| l.state == ContainerState::Running);
            let (started, ready) =
                running.map_or((false, false), |l| self.probe_verdicts(c, &l.id));
            ContainerView {
                restart_count: latest.as_ref().map_or(0, |l| l.attempt as i32),
                ready,
                started,
                latest,
                previous,
                waiting: w,
            }
        };
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.name.clone(),
                    c.image.clone().unwrap_or_default(),
                    view(c, None),
                )
            })
            .collect();
        let app_wait = initializing.then_some(("PodInitializing", ""));
        let containers = spec
            .containers
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.image.clone().unwrap_or_default(),
                    view(c, app_wait),
                )
            })
            .collect();
        let pod_ip = sandbox
            .filter(|s| s.state == SandboxState::Ready)
            .and_then(|s| s.ip.clone())
            .or_else(|| {
                obs.sandboxes
                    .iter()
                    .filter(|s| s.state == SandboxState::Ready)
                    .find_map(|s| s.ip.clone())
            });
        pod_status(StatusInput {
            pod,
            kind: self.sh.runtime.kind(),
            restart_policy: policy,
            init,
            containers,
            initializing,
            init_failed,
            pod_ip,
            host_ip: &self.sh.host_ip,
            start_time: self.start_time,
            previous: self.last_status.as_ref(),
            now: Timestamp::now(),
            force_terminal,
        })
    }

    /// Stops everything of the pod (SIGTERM, SIGKILL after `grace`) and, for a pod that is
    /// still listed (being deleted), returns its final status.
    pub async fn terminate(
        &mut self,
        pod: Option<&Pod>,
        grace: Option<Duration>,
    ) -> Option<PodStatus> {
        let obs = match self.observe().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(pod = %self.pod, "cannot list the pod's containers to stop them: {e}");
                return None;
            }
        };
        let running: Vec<_> = obs
            .containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .collect();
        if !running.is_empty() {
            self.event(
                None,
                EventType::Normal,
                "Killing",
                "Stopping the pod's containers".into(),
            )
            .await;
        }
        for (_, h) in self.probes.drain() {
            h.task.abort();
        }
        // The containers' specs, for their preStop hooks (the pod may be gone already).
        let spec = pod
            .or(self.last_pod.as_ref())
            .and_then(|p| p.spec.clone())
            .unwrap_or_default();
        let pod_ip = obs
            .sandboxes
            .iter()
            .filter(|s| s.state == SandboxState::Ready)
            .find_map(|s| s.ip.clone());
        let stops = running.iter().map(|c| {
            let g = grace.unwrap_or(c.termination_grace);
            tracing::info!(pod = %self.pod, container = c.name, grace_s = g.as_secs(), "stopping container");
            let container = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .find(|s| s.name == c.name);
            self.kill_container(container, &c.id, g, pod_ip.clone())
        });
        futures::future::join_all(stops).await;
        for sb in obs
            .sandboxes
            .iter()
            .filter(|s| s.state == SandboxState::Ready)
        {
            let _ = self.sh.runtime.stop_sandbox(&sb.id).await;
        }
        let pod = pod?;
        let obs = self.observe().await.unwrap_or_default();
        let policy = "Never";
        Some(self.status_from(pod, policy, &obs, &HashMap::new(), None, false, false, true))
    }

    /// Removes every container and sandbox of the pod.
    pub async fn remove_all(&mut self) {
        let Ok(obs) = self.observe().await else {
            return;
        };
        for c in &obs.containers {
            if let Err(e) = self.sh.runtime.remove_container(&c.id).await {
                tracing::warn!(pod = %self.pod, "cannot remove container {}: {e}", c.id);
            }
        }
        for sb in &obs.sandboxes {
            if let Err(e) = self.sh.runtime.remove_sandbox(&sb.id).await {
                tracing::warn!(pod = %self.pod, "cannot remove sandbox {}: {e}", sb.id);
            }
        }
        tracing::info!(pod = %self.pod, containers = obs.containers.len(), "removed the pod's containers");
        crate::volumes::remove_pod_dir(&self.sh.root_dir, &self.pod.uid);
    }
}

/// Whether restartPolicy restarts a container that exited with `code`.
pub(crate) fn should_restart(policy: &str, code: Option<i32>) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != Some(0),
        _ => true,
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m0s", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
