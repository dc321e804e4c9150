//! The Docker runtime: one Docker container per pod container, all of a pod's containers
//! joined to the network (and IPC) namespace of a sandbox container, as Kubernetes does
//! with its pause container. The sandbox runs the node's demo image with the `pause`
//! workload, so no image has to be pulled for it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ExecConfig,
    HostConfig, Mount as DockerMount, MountType, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StartContainerOptions, StopContainerOptions, TagImageOptions,
};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{Mutex, OnceCell};

use super::{
    ContainerConfig, ContainerState, ContainerStatus, ExecResult, ListFilter, LogOptions,
    PortMapping, Runtime, RuntimeError, RuntimeKind, SandboxConfig, SandboxState, SandboxStatus,
    exit_reason, object_labels, parse_labels,
};
use crate::image::{
    BUSYBOX_PATH, DEMO_BASE_TAG, DEMO_REPOSITORY, DemoProgram, DemoRootfs, ImageError, ImageName,
    PullPolicy, validate_image_name,
};
use crate::labels;

/// Settings of a [`DockerRuntime`].
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Node name put on every container's labels; only this node's containers are seen.
    pub node_name: String,
    /// The program the demo image (and the sandbox) is made from.
    pub demo: DemoProgram,
    /// busybox binary put into the demo image when present.
    pub busybox: std::path::PathBuf,
    /// Longest an image pull may take before it counts as failed.
    pub pull_timeout: Duration,
    /// Longest any other Docker call may take.
    pub call_timeout: Duration,
}

impl DockerConfig {
    /// Defaults: busybox from Debian's busybox-static, 2 minute pulls, 30 s calls.
    pub fn new(node_name: impl Into<String>, demo: DemoProgram) -> Self {
        DockerConfig {
            node_name: node_name.into(),
            demo,
            busybox: BUSYBOX_PATH.into(),
            pull_timeout: Duration::from_secs(120),
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// A [`Runtime`] on a Docker engine (see the module docs).
pub struct DockerRuntime {
    docker: Docker,
    config: DockerConfig,
    version: String,
    rootfs: OnceCell<Arc<DemoRootfs>>,
    /// Demo image tags already checked to hold the current image (saves a call per start).
    verified: std::sync::Mutex<HashMap<String, String>>,
}

/// A pod's volume mounts as Docker bind mounts (the node's files seen at `mountPath`).
fn bind_mounts(mounts: &[super::Mount]) -> Vec<DockerMount> {
    mounts
        .iter()
        .map(|m| DockerMount {
            target: Some(m.container_path.clone()),
            source: Some(m.host_path.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect()
}

/// One import of the demo image at a time in this process.
static DEMO_IMPORT: Mutex<()> = Mutex::const_new(());

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket) and agrees on
    /// an API version with it. Fails within `call_timeout` when no engine answers.
    pub async fn connect(config: DockerConfig) -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| RuntimeError::Unavailable(format!("cannot connect to Docker: {e}")))?
            .with_timeout(Duration::from_secs(3600));
        let docker = bounded(
            config.call_timeout,
            "negotiate Docker API version",
            docker.negotiate_version(),
        )
        .await?
        .map_err(|e| RuntimeError::Unavailable(format!("Docker engine does not answer: {e}")))?;
        let v = bounded(config.call_timeout, "docker version", docker.version())
            .await?
            .map_err(|e| RuntimeError::Unavailable(format!("docker version: {e}")))?;
        let version = format!("docker://{}", v.version.unwrap_or_else(|| "unknown".into()));
        Ok(DockerRuntime {
            docker,
            config,
            version,
            rootfs: OnceCell::new(),
            verified: Default::default(),
        })
    }

    /// The bollard client (for tests and tools).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The settings.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    async fn rootfs(&self) -> Result<Arc<DemoRootfs>, ImageError> {
        self.rootfs
            .get_or_try_init(|| async {
                let program = self.config.demo.clone();
                let busybox = self.config.busybox.clone();
                tokio::task::spawn_blocking(move || DemoRootfs::collect(&program, &busybox))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r)
                    .map(Arc::new)
                    .map_err(|message| ImageError::Build {
                        image: DEMO_REPOSITORY.into(),
                        message,
                    })
            })
            .await
            .cloned()
    }

    /// Makes sure `kommit.dev/demo:<tag>` holds the current demo image; returns its id.
    /// Imports the root filesystem only when no image with the same content hash exists.
    pub async fn ensure_demo_image(&self, tag: &str) -> Result<String, ImageError> {
        if let Some(id) = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tag)
        {
            return Ok(id.clone());
        }
        let id = self.ensure_demo_image_uncached(tag).await?;
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tag.to_string(), id.clone());
        Ok(id)
    }

    async fn ensure_demo_image_uncached(&self, tag: &str) -> Result<String, ImageError> {
        let image = format!("{DEMO_REPOSITORY}:{tag}");
        let rootfs = self.rootfs().await?;
        if let Some(id) = self
            .demo_image_with_hash(&image, &rootfs.content_hash)
            .await?
        {
            return Ok(id);
        }
        let _guard = DEMO_IMPORT.lock().await;
        let base = format!("{DEMO_REPOSITORY}:{DEMO_BASE_TAG}");
        let id = match self
            .demo_image_with_hash(&base, &rootfs.content_hash)
            .await?
        {
            Some(id) => id,
            None => self.import_demo_image(&rootfs).await?,
        };
        if tag != DEMO_BASE_TAG {
            let opts = TagImageOptions {
                repo: Some(DEMO_REPOSITORY.into()),
                tag: Some(tag.into()),
            };
            bounded(
                self.config.call_timeout,
                "tag demo image",
                self.docker.tag_image(&id, Some(opts)),
            )
            .await?
            .map_err(|e| ImageError::Build {
                image: image.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(id)
    }

    async fn demo_image_with_hash(
        &self,
        image: &str,
        hash: &str,
    ) -> Result<Option<String>, ImageError> {
        match bounded(
            self.config.call_timeout,
            "inspect image",
            self.docker.inspect_image(image),
        )
        .await?
        {
            Ok(info) => {
                let label = info
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.as_ref())
                    .and_then(|l| l.get(labels::DEMO_CONTENT_HASH));
                Ok((label.map(String::as_str) == Some(hash)).then(|| info.id.unwrap_or_default()))
            }
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(ImageError::Runtime(e.to_string())),
        }
    }

    async fn import_demo_image(&self, rootfs: &DemoRootfs) -> Result<String, ImageError> {
        let image = format!("{DEMO_REPOSITORY}:{DEMO_BASE_TAG}");
        let build_err = |message: String| ImageError::Build {
            image: image.clone(),
            message,
        };
        let started = std::time::Instant::now();
        let fs = rootfs.clone();
        let tar = tokio::task::spawn_blocking(move || fs.to_tar())
            .await
            .map_err(|e| build_err(e.to_string()))?
            .map_err(build_err)?;
        let entrypoint =
            serde_json::to_string(&rootfs.entrypoint).map_err(|e| build_err(e.to_string()))?;
        let opts = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(DEMO_REPOSITORY.into()),
            tag: Some(DEMO_BASE_TAG.into()),
            changes: vec![
                format!("ENTRYPOINT {entrypoint}"),
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                format!(
                    "LABEL {}={}",
                    labels::DEMO_CONTENT_HASH,
                    rootfs.content_hash
                ),
            ],
            ..Default::default()
        };
        let size = tar.len();
        let mut stream = self.docker.create_image(
            Some(opts),
            Some(bollard::body_full(bytes::Bytes::from(tar))),
            None,
        );
        let drain = async {
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| build_err(e.to_string()))?;
                if let Some(detail) = info.error_detail {
                    return Err(build_err(detail.message.unwrap_or_default()));
                }
            }
            Ok(())
        };
        tokio::time::timeout(self.config.pull_timeout, drain)
            .await
            .map_err(|_| {
                build_err(format!(
                    "import did not finish within {:?}",
                    self.config.pull_timeout
                ))
            })??;
        let info = bounded(
            self.config.call_timeout,
            "inspect image",
            self.docker.inspect_image(&image),
        )
        .await?
        .map_err(|e| build_err(e.to_string()))?;
        tracing::info!(
            image,
            bytes = size,
            busybox = rootfs.has_busybox,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "imported the node's demo image"
        );
        Ok(info.id.unwrap_or_default())
    }

    async fn pull(&self, image: &str) -> Result<(), ImageError> {
        let name = ImageName::parse(image);
        let opts = CreateImageOptions {
            from_image: Some(match &name.digest {
                Some(d) => format!("{}@{d}", name.repository),
                None => name.repository.clone(),
            }),
            tag: name
                .digest
                .is_none()
                .then(|| name.tag_or_latest().to_string()),
            ..Default::default()
        };
        let pull_err = |message: String| ImageError::Pull {
            image: image.to_string(),
            message,
        };
        let mut stream = self.docker.create_image(Some(opts), None, None);
        let drain = async {
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| pull_err(docker_message(&e)))?;
                if let Some(detail) = info.error_detail {
                    return Err(pull_err(detail.message.unwrap_or_default()));
                }
            }
            Ok(())
        };
        tracing::info!(image, "pulling image");
        tokio::time::timeout(self.config.pull_timeout, drain)
            .await
            .map_err(|_| {
                pull_err(format!(
                    "pull did not finish within {}s",
                    self.config.pull_timeout.as_secs()
                ))
            })?
    }

    async fn inspect_image_id(&self, image: &str) -> Result<Option<String>, ImageError> {
        match bounded(
            self.config.call_timeout,
            "inspect image",
            self.docker.inspect_image(image),
        )
        .await?
        {
            Ok(info) => Ok(Some(info.id.unwrap_or_default())),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(ImageError::Runtime(docker_message(&e))),
        }
    }

    fn filters(&self, kind: &str, filter: &ListFilter) -> HashMap<String, Vec<String>> {
        let mut l = vec![
            format!("{}={}", labels::NODE, self.config.node_name),
            format!("{}={kind}", labels::KIND),
        ];
        if let Some(uid) = &filter.pod_uid {
            l.push(format!("{}={uid}", labels::POD_UID));
        }
        HashMap::from([("label".to_string(), l)])
    }

    async fn list_ids(&self, kind: &str, filter: &ListFilter) -> Result<Vec<String>, RuntimeError> {
        let opts = ListContainersOptions {
            all: true,
            filters: Some(self.filters(kind, filter)),
            ..Default::default()
        };
        let list = self
            .call("list containers", self.docker.list_containers(Some(opts)))
            .await?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    async fn inspect_many(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<ContainerInspectResponse>, RuntimeError> {
        let futs = ids.into_iter().map(|id| async move {
            match bounded(
                self.config.call_timeout,
                "inspect container",
                self.docker.inspect_container(&id, None),
            )
            .await?
            {
                Ok(i) => Ok(Some(i)),
                // Removed between list and inspect.
                Err(e) if status_of(&e) == Some(404) => Ok(None),
                Err(e) => Err(RuntimeError::Other(docker_message(&e))),
            }
        });
        let all = futures::future::join_all(futs).await;
        let mut out = Vec::new();
        for r in all {
            if let Some(i) = r? {
                out.push(i);
            }
        }
        Ok(out)
    }

    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, DockerError>>,
    ) -> Result<T, RuntimeError> {
        bounded(self.config.call_timeout, what, fut)
            .await?
            .map_err(|e| match status_of(&e) {
                Some(404) => RuntimeError::NotFound(docker_message(&e)),
                _ => RuntimeError::Other(format!("{what}: {}", docker_message(&e))),
            })
    }

    async fn create_named(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, RuntimeError> {
        let opts = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        let first = bounded(
            self.config.call_timeout,
            "create container",
            self.docker
                .create_container(Some(opts.clone()), body.clone()),
        )
        .await?;
        let res = match first {
            Err(e) if status_of(&e) == Some(409) => {
                // A leftover with the same name (an agent stopped half-way): replace it.
                tracing::warn!(name, "replacing a leftover container with the same name");
                self.remove_container(name).await?;
                bounded(
                    self.config.call_timeout,
                    "create container",
                    self.docker.create_container(Some(opts), body),
                )
                .await?
            }
            other => other,
        };
        res.map(|r| r.id).map_err(|e| {
            // The image may have been removed behind our back: check again next time.
            self.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            RuntimeError::Create(docker_message(&e))
        })
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    fn node_name(&self) -> &str {
        &self.config.node_name
    }

    async fn version(&self) -> Result<String, RuntimeError> {
        Ok(self.version.clone())
    }

    /// The gateway of Docker's default `bridge` network, which pods are attached to.
    async fn pod_gateway(&self) -> Result<Option<std::net::IpAddr>, RuntimeError> {
        let net = bounded(
            self.config.call_timeout,
            "inspect network bridge",
            self.docker.inspect_network(
                "bridge",
                None::<bollard::query_parameters::InspectNetworkOptions>,
            ),
        )
        .await?
        .map_err(|e| RuntimeError::Unavailable(docker_message(&e)))?;
        let configs = net.ipam.and_then(|i| i.config).unwrap_or_default();
        // Docker often leaves Gateway out; the bridge then has the subnet's first address.
        let gateway = configs
            .iter()
            .find_map(|c| c.gateway.as_deref().and_then(|g| g.parse().ok()));
        let first = || {
            configs.iter().find_map(|c| {
                let (base, _) = c.subnet.as_deref()?.split_once('/')?;
                let base: std::net::Ipv4Addr = base.parse().ok()?;
                Some(std::net::IpAddr::V4((u32::from(base) + 1).into()))
            })
        };
        Ok(gateway.or_else(first))
    }

    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<String, ImageError> {
        validate_image_name(image)?;
        let name = ImageName::parse(image);
        if name.is_demo() && name.digest.is_none() {
            return self.ensure_demo_image(name.tag_or_latest()).await;
        }
        let present = self.inspect_image_id(image).await?;
        match (policy, present) {
            (PullPolicy::Never, Some(id)) | (PullPolicy::IfNotPresent, Some(id)) => Ok(id),
            (PullPolicy::Never, None) => Err(ImageError::NeverPull {
                image: image.to_string(),
            }),
            (PullPolicy::Always, _) | (PullPolicy::IfNotPresent, None) => {
                self.pull(image).await?;
                self.inspect_image_id(image)
                    .await?
                    .ok_or_else(|| ImageError::Pull {
                        image: image.to_string(),
                        message: "the pull finished but the image is not present".into(),
                    })
            }
        }
    }

    async fn run_sandbox(&self, config: &SandboxConfig) -> Result<SandboxStatus, RuntimeError> {
        let image = format!("{DEMO_REPOSITORY}:{DEMO_BASE_TAG}");
        self.ensure_demo_image(DEMO_BASE_TAG)
            .await
            .map_err(|e| RuntimeError::Create(e.to_string()))?;
        let labels = object_labels(
            &self.config.node_name,
            &config.pod,
            None,
            config.attempt,
            config.termination_grace,
        );
        let (exposed, bindings) = port_config(&config.ports);
        let hostname: String = config.hostname.chars().take(63).collect();
        let body = ContainerCreateBody {
            image: Some(image),
            cmd: Some(vec!["pause".into()]),
            hostname: Some(hostname),
            labels: Some(labels.into_iter().collect()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(HostConfig {
                ipc_mode: Some("shareable".into()),
                port_bindings: (!bindings.is_empty()).then_some(bindings),
                // The pod's containers join this network namespace and share its resolv.conf.
                dns: config.dns.as_ref().map(|d| d.nameservers.clone()),
                dns_search: config.dns.as_ref().map(|d| d.searches.clone()),
                dns_options: config.dns.as_ref().map(|d| d.options.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!(
            "kommit_POD_{}_{}_{}_{}",
            config.pod.name, config.pod.namespace, config.pod.uid, config.attempt
        );
        let id = self.create_named(&name, body).await?;
        if let Err(e) = bounded(
            self.config.call_timeout,
            "start sandbox",
            self.docker
                .start_container(&id, None::<StartContainerOptions>),
        )
        .await?
        {
            let _ = self.remove_container(&id).await;
            return Err(RuntimeError::Start(docker_message(&e)));
        }
        let info = self.inspect_many(vec![id.clone()]).await?;
        info.into_iter()
            .find_map(|i| sandbox_status(&i))
            .ok_or_else(|| RuntimeError::NotFound(format!("sandbox {id} vanished after start")))
    }

    async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        self.stop_container(id, Duration::from_secs(2)).await
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        self.remove_container(id).await
    }

    async fn list_sandboxes(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<SandboxStatus>, RuntimeError> {
        let ids = self.list_ids(labels::KIND_SANDBOX, filter).await?;
        Ok(self
            .inspect_many(ids)
            .await?
            .iter()
            .filter_map(sandbox_status)
            .collect())
    }

    async fn create_container(
        &self,
        sandbox: &SandboxStatus,
        config: &ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let labels = object_labels(
            &self.config.node_name,
            &sandbox.pod,
            Some((&config.name, &config.spec_hash)),
            config.attempt,
            config.termination_grace,
        );
        let r = &config.resources;
        let ns = format!("container:{}", sandbox.id);
        let body = ContainerCreateBody {
            image: Some(config.image.clone()),
            entrypoint: (!config.command.is_empty()).then(|| config.command.clone()),
            cmd: (!config.args.is_empty()).then(|| config.args.clone()),
            env: Some(config.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: config.working_dir.clone(),
            labels: Some(labels.into_iter().collect()),
            host_config: Some(HostConfig {
                network_mode: Some(ns.clone()),
                ipc_mode: Some(ns),
                nano_cpus: r
                    .cpu_limit_millis
                    .map(|m| (m as i64).saturating_mul(1_000_000)),
                cpu_shares: r
                    .cpu_request_millis
                    .map(|m| ((m as i64) * 1024 / 1000).max(2)),
                memory: r.memory_limit_bytes.map(|b| b as i64),
                mounts: Some(bind_mounts(&config.mounts)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!(
            "kommit_{}_{}_{}_{}_{}",
            config.name, sandbox.pod.name, sandbox.pod.namespace, sandbox.pod.uid, config.attempt
        );
        self.create_named(&name, body).await
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        bounded(
            self.config.call_timeout,
            "start container",
            self.docker
                .start_container(id, None::<StartContainerOptions>),
        )
        .await?
        .map_err(|e| RuntimeError::Start(docker_message(&e)))
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let secs = grace.as_secs_f64().ceil() as i32;
        let opts = StopContainerOptions {
            t: Some(secs),
            signal: None,
        };
        let limit = grace + self.config.call_timeout;
        match bounded(
            limit,
            "stop container",
            self.docker.stop_container(id, Some(opts)),
        )
        .await?
        {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(304) | Some(404)) => Ok(()),
            Err(e) => Err(RuntimeError::Other(format!(
                "stop {id}: {}",
                docker_message(&e)
            ))),
        }
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match bounded(
            self.config.call_timeout,
            "remove container",
            self.docker.remove_container(id, Some(opts)),
        )
        .await?
        {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            // Already being removed (by a concurrent call): as good as gone.
            Err(e)
                if status_of(&e) == Some(409)
                    && docker_message(&e).contains("already in progress") =>
            {
                Ok(())
            }
            Err(e) => Err(RuntimeError::Other(format!(
                "remove {id}: {}",
                docker_message(&e)
            ))),
        }
    }

    async fn list_containers(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let ids = self.list_ids(labels::KIND_CONTAINER, filter).await?;
        Ok(self
            .inspect_many(ids)
            .await?
            .iter()
            .filter_map(container_status)
            .collect())
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(cmd.to_vec()),
            ..Default::default()
        };
        let run = async {
            let exec =
                self.docker
                    .create_exec(id, config)
                    .await
                    .map_err(|e| match status_of(&e) {
                        Some(404) => RuntimeError::NotFound(docker_message(&e)),
                        _ => RuntimeError::Other(docker_message(&e)),
                    })?;
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            match self
                .docker
                .start_exec(&exec.id, None)
                .await
                .map_err(|e| RuntimeError::Other(docker_message(&e)))?
            {
                bollard::exec::StartExecResults::Attached { mut output, .. } => {
                    while let Some(chunk) = output.next().await {
                        match chunk.map_err(|e| RuntimeError::Other(docker_message(&e)))? {
                            bollard::container::LogOutput::StdErr { message } => {
                                stderr.extend_from_slice(&message)
                            }
                            other => stdout.extend_from_slice(&other.into_bytes()),
                        }
                    }
                }
                bollard::exec::StartExecResults::Detached => {}
            }
            let info = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| RuntimeError::Other(docker_message(&e)))?;
            Ok(ExecResult {
                exit_code: info.exit_code.unwrap_or(-1) as i32,
                stdout,
                stderr,
            })
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| RuntimeError::ExecTimeout(timeout))?
    }

    async fn logs(&self, id: &str, options: LogOptions) -> Result<Vec<u8>, RuntimeError> {
        let opts = LogsOptions {
            stdout: true,
            stderr: true,
            tail: options
                .tail
                .map_or_else(|| "all".to_string(), |n| n.to_string()),
            ..Default::default()
        };
        let mut stream = self.docker.logs(id, Some(opts));
        let collect = async {
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| match status_of(&e) {
                    Some(404) => RuntimeError::NotFound(docker_message(&e)),
                    _ => RuntimeError::Other(docker_message(&e)),
                })?;
                out.extend_from_slice(&chunk.into_bytes());
            }
            Ok(out)
        };
        bounded(self.config.call_timeout, "container logs", collect).await?
    }
}

/// Awaits `fut` at most `limit`.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = T>,
) -> Result<T, RuntimeError> {
    tokio::time::timeout(limit, fut).await.map_err(|_| {
        RuntimeError::Unavailable(format!("{what}: Docker did not answer within {limit:?}"))
    })
}

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The daemon's own message where there is one.
fn docker_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

fn port_config(ports: &[PortMapping]) -> (Vec<String>, HashMap<String, Option<Vec<PortBinding>>>) {
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in ports {
        let key = format!("{}/{}", p.container_port, p.protocol.to_ascii_lowercase());
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        if let Some(hp) = p.host_port {
            bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: p.host_ip.clone(),
                    host_port: Some(hp.to_string()),
                });
        }
    }
    (exposed, bindings)
}

fn docker_time(s: Option<&str>) -> Option<Timestamp> {
    let s = s?;
    if s.starts_with("0001-01-01") {
        return None;
    }
    s.parse().ok()
}

fn label_map(i: &ContainerInspectResponse) -> Option<&HashMap<String, String>> {
    i.config.as_ref()?.labels.as_ref()
}

fn sandbox_status(i: &ContainerInspectResponse) -> Option<SandboxStatus> {
    let l = label_map(i)?;
    let parsed = parse_labels(|k| l.get(k).map(String::as_str))?;
    if !parsed.is_sandbox {
        return None;
    }
    let running = i.state.as_ref().and_then(|s| s.running).unwrap_or(false);
    let ip = i
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| {
            n.values()
                .find_map(|e| e.ip_address.clone().filter(|ip| !ip.is_empty()))
        });
    Some(SandboxStatus {
        id: i.id.clone().unwrap_or_default(),
        pod: parsed.pod,
        attempt: parsed.attempt,
        state: if running && ip.is_some() {
            SandboxState::Ready
        } else {
            SandboxState::NotReady
        },
        ip,
        created_at: docker_time(i.created.as_deref()),
        termination_grace: parsed.grace,
    })
}

fn container_status(i: &ContainerInspectResponse) -> Option<ContainerStatus> {
    let l = label_map(i)?;
    let parsed = parse_labels(|k| l.get(k).map(String::as_str))?;
    if parsed.is_sandbox {
        return None;
    }
    let st = i.state.clone().unwrap_or_default();
    let error = st.error.clone().filter(|e| !e.is_empty());
    let exit_code = st.exit_code.map(|c| c as i32);
    let (state, reason) = match st.status {
        Some(ContainerStateStatusEnum::RUNNING)
        | Some(ContainerStateStatusEnum::PAUSED)
        | Some(ContainerStateStatusEnum::RESTARTING) => (ContainerState::Running, None),
        Some(ContainerStateStatusEnum::CREATED) if error.is_some() => {
            (ContainerState::Exited, Some("StartError".to_string()))
        }
        Some(ContainerStateStatusEnum::CREATED) => (ContainerState::Created, None),
        Some(ContainerStateStatusEnum::EXITED)
        | Some(ContainerStateStatusEnum::DEAD)
        | Some(ContainerStateStatusEnum::REMOVING)
        | Some(ContainerStateStatusEnum::STOPPING) => {
            let reason = if error.is_some() && docker_time(st.started_at.as_deref()).is_none() {
                "StartError"
            } else {
                exit_reason(exit_code.unwrap_or(0), st.oom_killed.unwrap_or(false))
            };
            (ContainerState::Exited, Some(reason.to_string()))
        }
        _ => (ContainerState::Unknown, None),
    };
    let image = i
        .config
        .as_ref()
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    Some(ContainerStatus {
        id: i.id.clone().unwrap_or_default(),
        pod: parsed.pod,
        name: parsed.container,
        attempt: parsed.attempt,
        image,
        image_id: i
            .image
            .clone()
            .map(|id| format!("docker://{id}"))
            .unwrap_or_default(),
        state,
        created_at: docker_time(i.created.as_deref()),
        started_at: docker_time(st.started_at.as_deref()),
        finished_at: if state == ContainerState::Exited {
            docker_time(st.finished_at.as_deref())
        } else {
            None
        },
        exit_code: if state == ContainerState::Exited {
            exit_code
        } else {
            None
        },
        reason,
        message: error,
        spec_hash: parsed.spec_hash,
        termination_grace: parsed.grace,
    })
}
