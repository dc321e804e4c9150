//! `kommit up`: the all-in-one cluster. Tracks a branch of a repository, runs the
//! embedded cache (served as etcd v3 for `etcdctl`), the reconciler and one local node
//! agent, and converges on every new commit.
//!
//! | module | what |
//! | --- | --- |
//! | [`api`] | the read-only Kubernetes API (`kommit-api`) and its log source |
//! | [`source`] | REPO / --branch / --path resolution, the default data directory |
//! | [`applied`] | the applied revision as a `watch` (read by the node and the API) |
//! | [`desired`] | snapshot → the reconciler's `Desired` |
//! | [`control`] | the node agent's `ControlPlane` over the cache |
//! | [`progress`] | rollout progress lines and "converged" |
//! | [`proxy`] | the service proxy (iptables, nftables or userspace) fed from the cache |
//! | [`dns`] | the cluster DNS fed from the cache; pods' resolver settings |
//! | [`records`] | a rollout record per commit in the cache (`kommit status`, `kubectl get commits`) |
//!
//! Decisions:
//! - The data directory defaults to `$XDG_STATE_HOME/kommit/<repo>[-<folder>]` (else
//!   `~/.local/state/kommit/...`), never inside the tracked work tree.
//! - The etcd API listens on 127.0.0.1:2379 when that port is free, else on a free
//!   loopback port; the address is printed. `--etcd-listen` fixes it (and fails if taken).
//! - The applied commit is kept in the cache at [`APPLIED_KEY`]; a restart loads it again
//!   and resumes (the node agent adopts its containers by their labels).
//! - A force-push is reported and applied like any other commit that validates.
//! - The process runtime shares the host network: replicas that listen on a fixed port
//!   (examples/hello's `--port 8080`) collide there, and all but one crash-loop. Use the
//!   Docker runtime for those, or workloads that take their port from elsewhere.
//! - The cache is compacted every minute to its last 10,000 revisions.

pub mod api;
pub mod applied;
pub mod control;
pub mod desired;
pub mod dns;
pub mod progress;
pub mod proxy;
pub mod records;
pub mod source;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;
use kommit_cache::{Cache, Options, PutRequest, grpc};
use kommit_desired::watch::{RefWatcher, Source, WatchConfig, WatchEvent};
use kommit_desired::{LoadError, LoadOptions, ObjectId, Snapshot, open_repository, plan};
use kommit_node::image::DemoProgram;
use kommit_node::runtime::Runtime;
use kommit_node::runtime::docker::{DockerConfig, DockerRuntime};
use kommit_node::runtime::process::{ProcessConfig, ProcessRuntime};
use kommit_node::{Agent, AgentConfig};
use kommit_reconciler::executor::Executor;
use tokio::sync::watch;

use applied::AppliedState;

/// Key of the applied commit in the cache (a restart resumes from it).
pub const APPLIED_KEY: &str = "/kommit/applied-revision";

/// Which container runtime the local node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeChoice {
    /// Docker when the engine answers, else processes.
    Auto,
    /// Docker through its API socket.
    Docker,
    /// Host processes.
    Process,
}

/// Run a cluster that follows a branch of a Git repository.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository: a local path (default: the current directory; a folder inside a
    /// work tree means that folder's manifests) or a URL.
    #[arg(value_name = "REPO")]
    repo: Option<String>,
    /// The branch to follow (default: the repository's current branch).
    #[arg(long, short = 'b')]
    branch: Option<String>,
    /// The manifest folder inside the repository (default: REPO's folder relative to the
    /// repository root, or the whole tree).
    #[arg(long)]
    path: Option<String>,
    /// Where the cache and the node's state live (default:
    /// $XDG_STATE_HOME/kommit/<name> or ~/.local/state/kommit/<name>).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Container runtime of the local node.
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Auto)]
    runtime: RuntimeChoice,
    /// Where to serve the etcd v3 API (default: 127.0.0.1:2379 when free, else a free
    /// loopback port; the address is printed).
    #[arg(long, value_name = "ADDR")]
    etcd_listen: Option<SocketAddr>,
    /// Where to serve the read-only Kubernetes API (default: 127.0.0.1:6443 when free,
    /// else a free loopback port; the URL is printed and `kommit kubeconfig` reads it).
    #[arg(long, value_name = "ADDR")]
    api_listen: Option<SocketAddr>,
    /// The local node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// How often to check the branch besides file notifications (fetch interval for URLs).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    poll_ms: u64,
    /// How Services are proxied: auto is iptables when running as root with a working
    /// iptables and no other kommit owning the rules (nftables when only nft works), else
    /// userspace; nftables (root and `nft`) syncs thousands of Services faster.
    #[arg(long, value_enum, default_value_t = proxy::ProxyMode::Auto)]
    proxy_mode: proxy::ProxyMode,
    /// The range Services' cluster IPs are allocated from (IPv4 CIDR). The default sits in
    /// 198.18.0.0/15 (RFC 2544), which no LAN, VPN or Docker network uses.
    #[arg(long, value_name = "CIDR", default_value_t = kommit_reconciler::service::DEFAULT_SERVICE_RANGE)]
    service_cidr: kommit_reconciler::service::Ipv4Range,
    #[command(flatten)]
    dns: dns::DnsArgs,
}

/// Entry point.
pub fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(run_async(args))
}

fn short(id: &ObjectId) -> String {
    id.to_hex_with_len(8).to_string()
}

async fn run_async(args: Args) -> anyhow::Result<()> {
    let mut target = source::resolve(
        args.repo.as_deref(),
        args.branch.as_deref(),
        args.path.as_deref(),
    )?;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => source::default_data_dir(&target.name)?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    if let Source::Remote { mirror, .. } = &mut target.source {
        *mirror = data_dir.join("mirror.git");
    }
    println!(
        "kommit up: following {} branch {}{}",
        target.display,
        target.branch,
        if target.path.is_empty() {
            String::new()
        } else {
            format!(" folder {}", target.path)
        }
    );
    println!("data directory: {}", data_dir.display());

    let cache = Cache::open(data_dir.join("cache"), Options::default())
        .with_context(|| format!("opening the cache in {}", data_dir.display()))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    // The etcd v3 API.
    let listener = match args.etcd_listen {
        Some(addr) => tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?,
        None => match tokio::net::TcpListener::bind("127.0.0.1:2379").await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("listening on a loopback port")?,
        },
    };
    let etcd_addr = listener.local_addr().context("reading the etcd address")?;
    println!(
        "etcd API: {etcd_addr} (ETCDCTL_API=3 etcdctl --endpoints={etcd_addr} get --prefix /registry/pods/)"
    );
    let endpoint_file = data_dir.join(records::ETCD_ENDPOINT_FILE);
    std::fs::write(&endpoint_file, format!("{etcd_addr}\n"))
        .with_context(|| format!("writing {}", endpoint_file.display()))?;
    let opts = grpc::ServeOptions::for_listener(&listener).context("reading the etcd address")?;
    let grpc_task = {
        let cache = cache.clone();
        let mut stop = shutdown_rx.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = grpc::serve(cache, listener, opts, stop).await {
                tracing::error!("etcd API stopped: {e}");
            }
        })
    };

    // The local node.
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => hostname(),
    };
    let runtime = pick_runtime(args.runtime, &node_name, &data_dir).await?;
    // After the runtime, whose start fails most often: a failed start leaves no rules.
    let proxy = proxy::start(args.proxy_mode, cache.clone(), shutdown_rx.clone()).await?;
    let dns = dns::start(
        &args.dns,
        runtime.as_ref(),
        cache.clone(),
        shutdown_rx.clone(),
    )
    .await?;
    let (applied_tx, applied_rx) = applied::channel();
    let api_task = api::start(
        &data_dir,
        args.api_listen,
        cache.clone(),
        applied_rx.clone(),
        runtime.clone(),
        shutdown_rx.clone(),
    )
    .await?;
    let control = Arc::new(control::CacheControlPlane::new(cache.clone(), applied_rx));
    let agent_task = {
        let mut stop = shutdown_rx.clone();
        let config = AgentConfig {
            root_dir: data_dir.join("node"),
            cluster_dns: dns.as_ref().and_then(|d| d.for_pods.clone()),
            ..AgentConfig::new(node_name.clone())
        };
        let agent = Agent::new(config, runtime, control);
        tokio::spawn(async move {
            let stop = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = agent.run(stop).await {
                tracing::error!("node agent stopped: {e}");
            }
        })
    };
    println!("node {node_name}: agent started");

    // Progress and compaction.
    let (progress_tx, progress_rx) = watch::channel::<Option<progress::Target>>(None);
    let progress_task = tokio::spawn(progress::run(
        cache.clone(),
        progress_rx,
        shutdown_rx.clone(),
    ));
    let compact_task = tokio::spawn(compact_loop(cache.clone(), shutdown_rx.clone()));
    let (records, records_task) = records::Records::start(cache.clone(), shutdown_rx.clone());

    // Resume from the applied revision.
    let mut load_options = LoadOptions::with_path(&target.path);
    load_options.service_cidr = kommit_desired::ServiceCidr {
        base: args.service_cidr.base,
        prefix: args.service_cidr.prefix,
    };
    let reconciler_config = kommit_reconciler::Config {
        services: kommit_reconciler::service::ServiceConfig {
            cluster_ips: args.service_cidr,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut applied_commit: Option<ObjectId> = match cache.get(APPLIED_KEY).await? {
        Some(kv) => ObjectId::from_hex(kv.value.as_ref()).ok(),
        None => None,
    };
    let mut previous: Option<Snapshot> = None;
    let mut applied_snapshot: Option<Arc<Snapshot>> = None;
    let resume_repo = match &target.source {
        Source::Local(p) => Some(p.clone()),
        Source::Remote { mirror, .. } => mirror.join("HEAD").exists().then(|| mirror.clone()),
    };
    if let (Some(commit), Some(dir)) = (applied_commit, resume_repo) {
        let loaded = open_repository(&dir)
            .and_then(|repo| Snapshot::load_commit(&repo, commit, &load_options, None));
        match loaded {
            Ok(s) => {
                println!("resuming at applied commit {}", short(&commit));
                applied_snapshot = Some(Arc::new(s.clone()));
                previous = Some(s);
            }
            Err(e) => {
                println!(
                    "cannot load the applied commit {} again ({e}); waiting for the branch",
                    short(&commit)
                );
                applied_commit = None;
            }
        }
    }

    let mut executor_task: Option<tokio::task::JoinHandle<()>> = None;
    let mut desired_tx: Option<watch::Sender<Arc<kommit_reconciler::Desired>>> = None;
    let mut apply = |snapshot: Arc<Snapshot>, since: Instant| -> Arc<kommit_reconciler::Desired> {
        let desired = Arc::new(desired::from_snapshot(&snapshot));
        applied_tx.send_replace(Some(Arc::new(AppliedState {
            commit: snapshot.commit,
            repository: target.display.clone(),
            branch: target.branch.clone(),
            snapshot: snapshot.clone(),
        })));
        progress_tx.send_replace(Some(progress::Target {
            short: short(&snapshot.commit),
            since,
            desired: desired.clone(),
        }));
        match &desired_tx {
            Some(tx) => {
                tx.send_replace(desired.clone());
            }
            None => {
                let (tx, rx) = watch::channel(desired.clone());
                let executor = Executor::new(cache.clone()).with_config(reconciler_config.clone());
                let stop = shutdown_rx.clone();
                executor_task = Some(tokio::spawn(async move {
                    if let Err(e) = executor.run(rx, stop, |_| {}).await {
                        tracing::error!("reconciler stopped: {e}");
                    }
                }));
                desired_tx = Some(tx);
            }
        }
        desired
    };
    if let Some(s) = &applied_snapshot {
        let desired = apply(s.clone(), Instant::now());
        records.resumed(s.commit.to_string(), desired);
    }

    let mut config = WatchConfig::new(target.source.clone(), &target.branch);
    config.poll_interval = Duration::from_millis(args.poll_ms.max(50));
    let mut watcher = RefWatcher::spawn(config, applied_commit).context("watching the branch")?;
    let mut signals = Signals::new()?;
    loop {
        let event = tokio::select! {
            _ = signals.recv() => break,
            e = watcher.next() => e,
        };
        let ev = match event {
            None => {
                println!("the branch watcher stopped");
                break;
            }
            Some(WatchEvent::Error(e)) => {
                println!("warning: {e}");
                continue;
            }
            Some(WatchEvent::Moved(ev)) => ev,
        };
        let since = Instant::now();
        let repo = match open_repository(&ev.repository) {
            Ok(r) => r,
            Err(e) => {
                println!("cannot open {}: {e}", ev.repository.display());
                continue;
            }
        };
        let subject = repo
            .find_commit(ev.commit)
            .ok()
            .and_then(|c| c.message().ok().map(|m| m.summary().to_string()))
            .unwrap_or_default();
        println!("commit {} {subject}", short(&ev.commit));
        if !ev.fast_forward {
            println!(
                "  force-push: {} does not descend from {}; applying it",
                short(&ev.commit),
                ev.previous.as_ref().map(short).unwrap_or_default()
            );
        }
        let loaded = tokio::task::block_in_place(|| {
            Snapshot::load_commit(&repo, ev.commit, &load_options, previous.as_ref())
        });
        match loaded {
            Ok(snapshot) => {
                let p = plan(applied_snapshot.as_deref(), &snapshot);
                let count =
                    |a: kommit_desired::Action| p.changes.iter().filter(|c| c.action == a).count();
                println!(
                    "accepted {}: {} added, {} changed, {} removed, {} unchanged",
                    short(&snapshot.commit),
                    count(kommit_desired::Action::Added),
                    count(kommit_desired::Action::Changed),
                    count(kommit_desired::Action::Removed),
                    p.unchanged
                );
                cache
                    .put(PutRequest::new(APPLIED_KEY, snapshot.commit.to_string()))
                    .await
                    .context("recording the applied revision")?;
                let spec = records::commit_spec(
                    &repo,
                    snapshot.commit,
                    &target.branch,
                    applied_snapshot.as_ref().map(|s| s.commit),
                );
                let snapshot = Arc::new(snapshot);
                applied_snapshot = Some(snapshot.clone());
                previous = Some((*snapshot).clone());
                let desired = apply(snapshot, since);
                records.applied(spec, records::changes(&p), desired);
            }
            Err(LoadError::Rejected(r)) => {
                println!(
                    "rejected {}: {} error{}; the cluster stays at {}",
                    short(&ev.commit),
                    r.errors.len(),
                    if r.errors.len() == 1 { "" } else { "s" },
                    applied_snapshot
                        .as_ref()
                        .map(|s| short(&s.commit))
                        .unwrap_or_else(|| "nothing".into())
                );
                for e in &r.errors {
                    println!("  {e}");
                }
                records.rejected(
                    records::commit_spec(
                        &repo,
                        ev.commit,
                        &target.branch,
                        applied_snapshot.as_ref().map(|s| s.commit),
                    ),
                    r.errors.iter().map(ToString::to_string).collect(),
                );
                previous = Some((*r.partial).clone());
            }
            Err(e) => println!("cannot load {}: {e}", short(&ev.commit)),
        }
    }
    println!("stopping the control plane (containers keep running)");
    shutdown_tx.send_replace(true);
    drop(watcher);
    let wait = async {
        let _ = agent_task.await;
        if let Some(t) = executor_task {
            let _ = t.await;
        }
        let _ = progress_task.await;
        let _ = records_task.await;
        let _ = compact_task.await;
        let _ = grpc_task.await;
        let _ = api_task.await;
        if let Some(p) = proxy {
            p.stopped().await;
        }
        if let Some(d) = dns {
            d.stopped().await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(15), wait)
        .await
        .is_err()
    {
        println!("some parts did not stop within 15 s");
    }
    println!("stopped");
    Ok(())
}

async fn pick_runtime(
    choice: RuntimeChoice,
    node: &str,
    data_dir: &std::path::Path,
) -> anyhow::Result<Arc<dyn Runtime>> {
    let demo = DemoProgram::current(&["demo"]).context("finding the kommit binary")?;
    let process = |demo: DemoProgram| -> anyhow::Result<Arc<dyn Runtime>> {
        let r = ProcessRuntime::new(ProcessConfig {
            node_name: node.to_owned(),
            data_dir: data_dir.to_path_buf(),
            demo,
            host_ip: "127.0.0.1".into(),
        })
        .context("starting the process runtime")?;
        Ok(Arc::new(r))
    };
    match choice {
        RuntimeChoice::Docker => {
            let r = DockerRuntime::connect(DockerConfig::new(node, demo))
                .await
                .context("connecting to the Docker engine")?;
            println!("runtime: docker");
            Ok(Arc::new(r))
        }
        RuntimeChoice::Process => {
            println!("runtime: processes");
            process(demo)
        }
        RuntimeChoice::Auto => {
            match DockerRuntime::connect(DockerConfig::new(node, demo.clone())).await {
                Ok(r) => {
                    println!("runtime: docker (the engine answered)");
                    Ok(Arc::new(r))
                }
                Err(e) => {
                    println!("runtime: processes (Docker is not available: {e})");
                    process(demo)
                }
            }
        }
    }
}

/// Keeps the last 10,000 revisions, compacting every minute (as kube-apiserver compacts
/// etcd every 5 minutes).
async fn compact_loop(cache: Cache, mut stop: watch::Receiver<bool>) {
    const KEEP: i64 = 10_000;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        let target = cache.current_revision() - KEEP;
        if target > cache.compact_revision()
            && let Err(e) = cache.compact(target).await
        {
            tracing::warn!("compaction at {target} failed: {e}");
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node-1".into())
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("watching SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("watching SIGINT")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
