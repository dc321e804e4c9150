//! The process runtime: every container is a host process, for machines without Docker.
//!
//! State lives in files under `<data dir>/process/<node>/`, so a new agent adopts what an
//! earlier one started:
//!
//! * `sandboxes/<id>/sandbox.json`: the pod sandbox (a record only: processes share the
//!   host's network, so the pod IP is the node's IP and ports must not collide);
//! * `containers/<id>/config.json`: labels, argv, env, working dir, limits;
//! * `containers/<id>/log`: stdout and stderr;
//! * `containers/<id>/pid.json`, `exit.json`: written by the container's **shim**.
//!
//! Each container runs under a small supervisor, the shim (`<node binary> demo
//! process-shim <dir>`, in its own session so it outlives the agent): it joins the
//! container's cgroups, starts the process in its own process group with the container's
//! env, args and working directory and its output appended to the log, records the pid
//! with the process start time (from `/proc/<pid>/stat`, so a reused pid is never taken
//! for the container), waits, and records the exit code and time. The agent stops a
//! container by signalling its process group (SIGTERM, then SIGKILL after the grace
//! period).
//!
//! Images: `kommit.dev/demo:*` runs the node's own binary with `demo <args>` (the image's
//! ENTRYPOINT mapped to the host, and `/kommit` in a command too); any other image is
//! taken as "the host": its commands run from the host, so such a container must give a
//! `command`. Nothing is ever pulled. Limits: CPU and memory limits go into cgroups
//! (v2, or v1 memory/cpu controllers) when the host lets the agent create them; otherwise
//! they are logged as not applied.
//!
//! Volumes: processes share the host's file system (no mount namespace, no root needed),
//! so a `mountPath` cannot appear at its absolute path. Instead the runtime
//!
//! * rewrites paths under a `mountPath` in the container's argv (a whole argument, or the
//!   part after the first `=` of `--flag=/path`), env values and `workingDir` to the
//!   volume's directory on the node: `args: ["http", "--payload-file", "/etc/web/index"]`
//!   reads `<data>/node/pods/<uid>/volumes/kubernetes.io~configmap/web/index`;
//! * makes a per-container view `containers/<id>/root/` with a symlink at each
//!   `mountPath` (`root/etc/web -> <volume dir>`) and sets `KOMMIT_ROOT` to it, so a
//!   program that builds paths itself opens `$KOMMIT_ROOT/etc/web/index` (a `mountPath`
//!   inside another one is left out of this view; argv rewriting still finds it).
//!
//! Exec commands (and so exec probes) are rewritten the same way. `readOnly` is not
//! enforced for processes (the agent's user may write the files).

mod cgroup;
mod shim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use shim::{ShimArgs, shim_main};

use super::{
    ContainerConfig, ContainerState, ContainerStatus, ExecResult, ListFilter, LogOptions, Mount,
    Runtime, RuntimeError, RuntimeKind, SandboxConfig, SandboxState, SandboxStatus, effective_argv,
    exit_reason, object_labels, parse_labels,
};
use crate::image::{
    DEMO_BINARY_PATH, DemoProgram, ImageError, ImageName, PullPolicy, validate_image_name,
};
use crate::labels;

/// Settings of a [`ProcessRuntime`].
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Node name on every object; only this node's objects are seen.
    pub node_name: String,
    /// Data directory; state goes under `<data_dir>/process/<node>/`.
    pub data_dir: PathBuf,
    /// The program that runs the demo workloads and the shim.
    pub demo: DemoProgram,
    /// The pod IP every pod gets (the node's address).
    pub host_ip: String,
}

/// A [`Runtime`] of host processes (see the module docs).
pub struct ProcessRuntime {
    config: ProcessConfig,
    root: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SandboxRecord {
    id: String,
    labels: BTreeMap<String, String>,
    created_at: Timestamp,
    ready: bool,
    ip: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContainerRecord {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub created_at: Timestamp,
    /// cgroup directories the shim joins.
    pub cgroups: Vec<PathBuf>,
    /// The pod's volumes this container mounts (exec commands are rewritten through them).
    #[serde(default)]
    pub mounts: Vec<Mount>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PidRecord {
    pub pid: i32,
    pub start_ticks: u64,
    pub started_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    pub exit_code: i32,
    pub finished_at: Timestamp,
    pub reason: Option<String>,
    pub message: Option<String>,
}

const CONFIG: &str = "config.json";
const PID: &str = "pid.json";
const EXIT: &str = "exit.json";
const LOG: &str = "log";

fn io_err(what: &str, path: &Path, e: std::io::Error) -> RuntimeError {
    RuntimeError::Other(format!("{what} {}: {e}", path.display()))
}

fn new_id() -> String {
    use sha2::{Digest, Sha256};
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{}-{}-{}",
        std::process::id(),
        Timestamp::now().as_nanosecond(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    Sha256::digest(seed.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let data = std::fs::read(path).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Writes JSON atomically (temporary file, then rename).
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let data = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// The start time of a process (clock ticks after boot), or None when it is gone or a zombie.
pub(crate) fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is the state (field 3); starttime is field 22.
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn alive(p: &PidRecord) -> bool {
    process_start_ticks(p.pid) == Some(p.start_ticks)
}

impl ProcessRuntime {
    /// A runtime keeping its state under `<data_dir>/process/<node>/`.
    pub fn new(config: ProcessConfig) -> Result<Self, RuntimeError> {
        let root = config.data_dir.join("process").join(&config.node_name);
        for d in ["sandboxes", "containers"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|e| io_err("cannot create", &p, e))?;
        }
        Ok(ProcessRuntime { config, root })
    }

    /// The settings.
    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join("sandboxes").join(id)
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// Rejects ids that are not ours (path traversal).
    fn check_id(id: &str) -> Result<(), RuntimeError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(RuntimeError::NotFound(format!("no such object: {id:?}")));
        }
        Ok(())
    }

    fn read_dir_ids(&self, sub: &str) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.root.join(sub)) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .collect()
    }

    fn sandbox_status(&self, rec: &SandboxRecord) -> Option<SandboxStatus> {
        let parsed = parse_labels(|k| rec.labels.get(k).map(String::as_str))?;
        Some(SandboxStatus {
            id: rec.id.clone(),
            pod: parsed.pod,
            attempt: parsed.attempt,
            state: if rec.ready {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            ip: Some(rec.ip.clone()),
            created_at: Some(rec.created_at),
            termination_grace: parsed.grace,
        })
    }

    fn container_status(&self, id: &str) -> Option<ContainerStatus> {
        let dir = self.container_dir(id);
        let rec: ContainerRecord = read_json(&dir.join(CONFIG))?;
        let parsed = parse_labels(|k| rec.labels.get(k).map(String::as_str))?;
        let pid: Option<PidRecord> = read_json(&dir.join(PID));
        let exit: Option<ExitRecord> = read_json(&dir.join(EXIT));
        let mut st = ContainerStatus {
            id: rec.id.clone(),
            pod: parsed.pod,
            name: parsed.container,
            attempt: parsed.attempt,
            image: rec.image.clone(),
            image_id: image_id(&rec.image, &self.config.demo),
            state: ContainerState::Created,
            created_at: Some(rec.created_at),
            started_at: pid.as_ref().map(|p| p.started_at),
            finished_at: None,
            exit_code: None,
            reason: None,
            message: None,
            spec_hash: parsed.spec_hash,
            termination_grace: parsed.grace,
        };
        match (exit, pid) {
            (Some(e), _) => {
                st.state = ContainerState::Exited;
                st.exit_code = Some(e.exit_code);
                st.finished_at = Some(e.finished_at);
                st.reason = Some(
                    e.reason
                        .unwrap_or_else(|| exit_reason(e.exit_code, false).to_string()),
                );
                st.message = e.message;
            }
            (None, Some(p)) => {
                if alive(&p) {
                    st.state = ContainerState::Running;
                } else if read_json::<PidRecord>(&dir.join("shim.json")).is_some_and(|s| alive(&s))
                {
                    // Exited a moment ago; the shim is writing exit.json.
                    st.state = ContainerState::Running;
                } else {
                    st.state = ContainerState::Exited;
                    st.exit_code = Some(137);
                    st.reason = Some("ContainerStatusUnknown".into());
                    st.message =
                        Some("the container's supervisor is gone; its exit code is unknown".into());
                    st.finished_at = Some(Timestamp::now());
                }
            }
            (None, None) => {}
        }
        Some(st)
    }

    fn matches(&self, labels: &BTreeMap<String, String>, kind: &str, filter: &ListFilter) -> bool {
        labels.get(labels::NODE).map(String::as_str) == Some(self.config.node_name.as_str())
            && labels.get(labels::KIND).map(String::as_str) == Some(kind)
            && filter
                .pod_uid
                .as_ref()
                .is_none_or(|u| labels.get(labels::POD_UID) == Some(u))
    }

    /// Where `argv[0]` of the demo image lives on the host.
    fn map_demo_binary(&self, argv: Vec<String>) -> Vec<String> {
        if argv.first().map(String::as_str) != Some(DEMO_BINARY_PATH) {
            return argv;
        }
        let mut out = vec![self.config.demo.path.to_string_lossy().into_owned()];
        let rest = &argv[1..];
        if rest.first().map(String::as_str) == Some("demo") {
            out.extend(self.config.demo.args.iter().cloned());
            out.extend(rest[1..].iter().cloned());
        } else {
            out.extend(rest.iter().cloned());
        }
        out
    }

    async fn wait_started(&self, dir: &Path) -> Result<(), RuntimeError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = read_json::<ExitRecord>(&dir.join(EXIT))
                && e.reason.as_deref() == Some("StartError")
            {
                return Err(RuntimeError::Start(e.message.unwrap_or_default()));
            }
            if dir.join(PID).exists() || dir.join(EXIT).exists() {
                return Ok(());
            }
            if !dir.exists() {
                return Err(RuntimeError::Start(
                    "the container was removed while it was starting".into(),
                ));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(RuntimeError::Start(
                    "the container's supervisor did not start it within 10s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn image_id(image: &str, demo: &DemoProgram) -> String {
    if ImageName::parse(image).is_demo() {
        format!("process://{}", demo.path.display())
    } else {
        "process://host".into()
    }
}

/// The node path a container path means through the container's mounts (the longest
/// matching `mountPath` wins); `None` when no mount covers it.
fn host_path_for(path: &str, mounts: &[Mount]) -> Option<String> {
    mounts
        .iter()
        .filter_map(|m| {
            let base = m.container_path.trim_end_matches('/');
            if base.is_empty() {
                return None;
            }
            let rest = path.strip_prefix(base)?;
            (rest.is_empty() || rest.starts_with('/')).then_some((base.len(), m, rest))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, m, rest)| format!("{}{rest}", m.host_path.display()))
}

/// An argument or env value with a path under a `mountPath` (all of it, or after the first
/// `=`) rewritten to the node's path.
fn rewrite_arg(arg: &str, mounts: &[Mount]) -> String {
    if mounts.is_empty() {
        return arg.to_string();
    }
    if let Some(p) = host_path_for(arg, mounts) {
        return p;
    }
    if let Some((flag, value)) = arg.split_once('=')
        && let Some(p) = host_path_for(value, mounts)
    {
        return format!("{flag}={p}");
    }
    arg.to_string()
}

/// `<container dir>/root` with a symlink at each `mountPath` to the mount's node path.
fn mount_view(dir: &Path, mounts: &[Mount]) -> Result<Option<PathBuf>, RuntimeError> {
    if mounts.is_empty() {
        return Ok(None);
    }
    let root = dir.join("root");
    for m in mounts {
        let rel = m
            .container_path
            .trim_start_matches('/')
            .trim_end_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == "..") {
            return Err(RuntimeError::InvalidConfig(format!(
                "mountPath {:?} cannot be shown to a process",
                m.container_path
            )));
        }
        let nested = mounts.iter().any(|o| {
            let base = o.container_path.trim_end_matches('/');
            !base.is_empty()
                && m.container_path.len() > base.len()
                && m.container_path.starts_with(base)
                && m.container_path[base.len()..].starts_with('/')
        });
        if nested {
            // Making its link would write into the outer volume: argv rewriting still
            // finds it, the view shows the outer mount only.
            tracing::debug!(
                path = m.container_path,
                "nested mountPath left out of the view"
            );
            continue;
        }
        let link = root.join(rel);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err("cannot create", parent, e))?;
        }
        std::os::unix::fs::symlink(&m.host_path, &link)
            .map_err(|e| io_err("cannot link", &link, e))?;
    }
    Ok(Some(root))
}

fn signal_group(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig);
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    fn node_name(&self) -> &str {
        &self.config.node_name
    }

    async fn version(&self) -> Result<String, RuntimeError> {
        Ok(format!("process://kommit-{}", env!("CARGO_PKG_VERSION")))
    }

    async fn ensure_image(&self, image: &str, _policy: PullPolicy) -> Result<String, ImageError> {
        // Nothing to pull: the demo image is the node's binary, other images are the host.
        validate_image_name(image)?;
        Ok(image_id(image, &self.config.demo))
    }

    async fn run_sandbox(&self, config: &SandboxConfig) -> Result<SandboxStatus, RuntimeError> {
        let id = new_id();
        let dir = self.sandbox_dir(&id);
        std::fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
        let rec = SandboxRecord {
            id: id.clone(),
            labels: object_labels(
                &self.config.node_name,
                &config.pod,
                None,
                config.attempt,
                config.termination_grace,
            ),
            created_at: Timestamp::now(),
            ready: true,
            ip: self.config.host_ip.clone(),
        };
        write_json(&dir.join("sandbox.json"), &rec).map_err(|e| io_err("cannot write", &dir, e))?;
        self.sandbox_status(&rec)
            .ok_or_else(|| RuntimeError::Other("sandbox labels unreadable".into()))
    }

    async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        Self::check_id(id)?;
        let path = self.sandbox_dir(id).join("sandbox.json");
        let Some(mut rec) = read_json::<SandboxRecord>(&path) else {
            return Ok(());
        };
        rec.ready = false;
        write_json(&path, &rec).map_err(|e| io_err("cannot write", &path, e))
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        Self::check_id(id)?;
        let dir = self.sandbox_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove", &dir, e)),
        }
    }

    async fn list_sandboxes(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<SandboxStatus>, RuntimeError> {
        Ok(self
            .read_dir_ids("sandboxes")
            .into_iter()
            .filter_map(|id| {
                read_json::<SandboxRecord>(&self.sandbox_dir(&id).join("sandbox.json"))
            })
            .filter(|r| self.matches(&r.labels, labels::KIND_SANDBOX, filter))
            .filter_map(|r| self.sandbox_status(&r))
            .collect())
    }

    async fn create_container(
        &self,
        sandbox: &SandboxStatus,
        config: &ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let name = ImageName::parse(&config.image);
        let (entrypoint, cmd) = if name.is_demo() {
            (self.config.demo.host_entrypoint(), Vec::new())
        } else {
            (Vec::new(), Vec::new())
        };
        let argv = self.map_demo_binary(effective_argv(
            &config.command,
            &config.args,
            &entrypoint,
            &cmd,
        ));
        if argv.is_empty() {
            return Err(RuntimeError::InvalidConfig(format!(
                "image {:?} has no command on the process runtime, which runs commands from the host: give the container a command",
                config.image
            )));
        }
        let argv: Vec<String> = argv
            .iter()
            .map(|a| rewrite_arg(a, &config.mounts))
            .collect();
        let id = new_id();
        let dir = self.container_dir(&id);
        std::fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
        let view = mount_view(&dir, &config.mounts)?;
        let cwd = match &config.working_dir {
            Some(w) => {
                let p =
                    PathBuf::from(host_path_for(w, &config.mounts).unwrap_or_else(|| w.clone()));
                std::fs::create_dir_all(&p)
                    .map_err(|e| RuntimeError::Create(format!("working directory {w}: {e}")))?;
                p
            }
            None => dir.clone(),
        };
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            ),
            ("HOSTNAME".into(), sandbox.pod.name.clone()),
        ];
        if let Ok(home) = std::env::var("HOME") {
            env.push(("HOME".into(), home));
        }
        if let Some(view) = view {
            env.push(("KOMMIT_ROOT".into(), view.to_string_lossy().into_owned()));
        }
        for (k, v) in &config.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), rewrite_arg(v, &config.mounts)));
        }
        let cgroups = cgroup::prepare(&self.config.node_name, &id, &config.resources);
        let rec = ContainerRecord {
            id: id.clone(),
            labels: object_labels(
                &self.config.node_name,
                &sandbox.pod,
                Some((&config.name, &config.spec_hash)),
                config.attempt,
                config.termination_grace,
            ),
            image: config.image.clone(),
            argv,
            env,
            cwd,
            created_at: Timestamp::now(),
            cgroups,
            mounts: config.mounts.clone(),
        };
        write_json(&dir.join(CONFIG), &rec).map_err(|e| io_err("cannot write", &dir, e))?;
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        Self::check_id(id)?;
        let dir = self.container_dir(id);
        if !dir.join(CONFIG).exists() {
            return Err(RuntimeError::NotFound(format!("container {id}")));
        }
        if dir.join(PID).exists() || dir.join(EXIT).exists() {
            return Err(RuntimeError::Start(format!(
                "container {id} was already started"
            )));
        }
        let shim_log = std::fs::File::create(dir.join("shim.log"))
            .map_err(|e| io_err("cannot create", &dir, e))?;
        let shim_err = shim_log
            .try_clone()
            .map_err(|e| io_err("cannot create", &dir, e))?;
        let mut child = tokio::process::Command::new(&self.config.demo.path)
            .args(&self.config.demo.args)
            .arg("process-shim")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(shim_log)
            .stderr(shim_err)
            .spawn()
            .map_err(|e| {
                RuntimeError::Start(format!(
                    "cannot start the shim {}: {e}",
                    self.config.demo.path.display()
                ))
            })?;
        // Reap the shim when it ends (it outlives us if we stop first).
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        self.wait_started(&dir).await
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        Self::check_id(id)?;
        let dir = self.container_dir(id);
        let Some(pid) = read_json::<PidRecord>(&dir.join(PID)) else {
            return Ok(());
        };
        if dir.join(EXIT).exists() || !alive(&pid) {
            return Ok(());
        }
        use nix::sys::signal::Signal;
        signal_group(pid.pid, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if !alive(&pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if alive(&pid) {
            signal_group(pid.pid, Signal::SIGKILL);
        }
        // Let the shim record the exit.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline && !dir.join(EXIT).exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        Self::check_id(id)?;
        let dir = self.container_dir(id);
        // A shim still starting the process (alive, no pid recorded yet; another agent
        // started it a moment ago): let it record the pid so the process is killed too.
        if !dir.join(PID).exists()
            && read_json::<PidRecord>(&dir.join("shim.json")).is_some_and(|s| alive(&s))
        {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while tokio::time::Instant::now() < deadline
                && !dir.join(PID).exists()
                && !dir.join(EXIT).exists()
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if let Some(pid) = read_json::<PidRecord>(&dir.join(PID))
            && alive(&pid)
        {
            signal_group(pid.pid, nix::sys::signal::Signal::SIGKILL);
            // The shim records the exit; removing the directory under it would race.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while tokio::time::Instant::now() < deadline && !dir.join(EXIT).exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if let Some(rec) = read_json::<ContainerRecord>(&dir.join(CONFIG)) {
            cgroup::remove(&rec.cgroups);
        }
        // A shim may still be writing a file (its last record) while the directory goes:
        // try again a few times rather than leave it half removed.
        let mut tries = 0;
        loop {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(io_err("cannot remove", &dir, e)),
            }
        }
    }

    async fn list_containers(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let mut out = Vec::new();
        for id in self.read_dir_ids("containers") {
            let Some(rec) = read_json::<ContainerRecord>(&self.container_dir(&id).join(CONFIG))
            else {
                continue;
            };
            if !self.matches(&rec.labels, labels::KIND_CONTAINER, filter) {
                continue;
            }
            if let Some(st) = self.container_status(&id) {
                out.push(st);
            }
        }
        Ok(out)
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        Self::check_id(id)?;
        let dir = self.container_dir(id);
        let rec: ContainerRecord = read_json(&dir.join(CONFIG))
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
        let argv: Vec<String> = self
            .map_demo_binary(cmd.to_vec())
            .iter()
            .map(|a| rewrite_arg(a, &rec.mounts))
            .collect();
        let Some((prog, args)) = argv.split_first() else {
            return Err(RuntimeError::InvalidConfig("empty exec command".into()));
        };
        let child = tokio::process::Command::new(prog)
            .args(args)
            .env_clear()
            .envs(rec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&rec.cwd)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(timeout, child).await {
            Err(_) => Err(RuntimeError::ExecTimeout(timeout)),
            Ok(Err(e)) => Err(RuntimeError::Other(format!("exec {prog}: {e}"))),
            Ok(Ok(out)) => Ok(ExecResult {
                exit_code: out.status.code().unwrap_or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    128 + out.status.signal().unwrap_or(9)
                }),
                stdout: out.stdout,
                stderr: out.stderr,
            }),
        }
    }

    async fn logs(&self, id: &str, options: LogOptions) -> Result<Vec<u8>, RuntimeError> {
        Self::check_id(id)?;
        let path = self.container_dir(id).join(LOG);
        let data = match tokio::fs::read(&path).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.container_dir(id).exists() {
                    Vec::new()
                } else {
                    return Err(RuntimeError::NotFound(format!("container {id}")));
                }
            }
            Err(e) => return Err(io_err("cannot read", &path, e)),
        };
        Ok(match options.tail {
            None => data,
            Some(0) => Vec::new(),
            Some(n) => {
                let text = data.strip_suffix(b"\n").unwrap_or(&data);
                let mut starts = text
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| i + 1)
                    .collect::<Vec<_>>();
                starts.insert(0, 0);
                let from = if starts.len() > n {
                    starts[starts.len() - n]
                } else {
                    0
                };
                data[from..].to_vec()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mount(host: &str, path: &str) -> Mount {
        Mount {
            host_path: host.into(),
            container_path: path.into(),
            read_only: false,
        }
    }

    #[test]
    fn paths_under_a_mount_path_are_rewritten() {
        let mounts = [
            mount("/data/pods/u/site", "/etc/site"),
            mount("/data/pods/u/inner", "/etc/site/inner/"),
        ];
        let r = |a: &str| rewrite_arg(a, &mounts);
        assert_eq!(r("/etc/site/index"), "/data/pods/u/site/index");
        assert_eq!(r("/etc/site"), "/data/pods/u/site");
        assert_eq!(
            r("/etc/site/inner/x"),
            "/data/pods/u/inner/x",
            "longest wins"
        );
        assert_eq!(r("--file=/etc/site/a"), "--file=/data/pods/u/site/a");
        assert_eq!(r("/etc/sitemap"), "/etc/sitemap");
        assert_eq!(r("cat /etc/site/index"), "cat /etc/site/index");
        assert_eq!(r("http"), "http");
        assert_eq!(
            rewrite_arg("/x", &[mount("/h", "/")]),
            "/x",
            "no root mount"
        );
    }

    #[test]
    fn the_view_links_each_mount_path_but_never_writes_into_a_volume() {
        let dir = std::env::temp_dir().join(format!(
            "kommit-view-{}-{}",
            std::process::id(),
            Timestamp::now().as_nanosecond()
        ));
        let vol = dir.join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(vol.join("f"), "x").unwrap();
        let mounts = [
            mount(vol.to_str().unwrap(), "/etc/a"),
            mount("/nowhere", "/etc/a/b"),
        ];
        let root = mount_view(&dir.join("c"), &mounts).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(root.join("etc/a/f")).unwrap(), "x");
        assert_eq!(
            std::fs::read_dir(&vol).unwrap().count(),
            1,
            "nothing written into the volume"
        );
        assert!(mount_view(&dir.join("d"), &[]).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
