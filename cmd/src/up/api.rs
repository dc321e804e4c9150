//! The read-only Kubernetes API of `kommit up` (crate `kommit-api`), wired to this
//! process: the cache, the applied revision and the local node's runtime for logs.
//!
//! Decisions:
//! - The API keeps its files in `<data-dir>/api`: `pki/` (CA and serving certificate),
//!   `tokens` (SHA-256 of the accepted tokens), `admin.token` (mode 0600) and
//!   `api.server` (the URL it serves at, read by `kommit kubeconfig`).
//! - Without `--api-listen` it listens on 127.0.0.1:6443 when that port is free, else on
//!   a free loopback port (as the etcd API does); the URL is printed and kept in
//!   `api.server`, so `kommit kubeconfig --data-dir D` always names the running server.
//!   With `--api-listen` a taken address is an error.
//! - `kubectl logs` reads the runtime's log of the container (`--previous`: the instance
//!   before the current one, while the runtime keeps it); `-f` polls the log every
//!   half second and ends when the container is no longer running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use kommit_api::{
    ApiState, AppliedRevision, LogError, LogRequest, LogSource, LogStream, ServeConfig, ServeError,
    Server,
};
use kommit_cache::Cache;
use kommit_node::runtime::{
    ContainerState, ContainerStatus, ListFilter, LogOptions, Runtime, RuntimeError,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::applied::{AppliedReceiver, AppliedState};

/// Where the API keeps its files inside the data directory.
pub fn api_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("api")
}

/// How often `kubectl logs -f` looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

fn revision(a: &Option<Arc<AppliedState>>) -> Option<Arc<AppliedRevision>> {
    a.as_ref().map(|a| {
        Arc::new(AppliedRevision {
            commit: a.commit.to_string(),
            repository: a.repository.clone(),
            branch: a.branch.clone(),
            snapshot: a.snapshot.clone(),
        })
    })
}

/// Binds the API (see the module's decisions), prints its URL and serves it until
/// `stop` turns true.
pub async fn start(
    data_dir: &Path,
    listen: Option<SocketAddr>,
    cache: Cache,
    mut applied: AppliedReceiver,
    runtime: Arc<dyn Runtime>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    // The API reads its own form of the applied revision; follow ours into it.
    let (tx, rx) = watch::channel(revision(&applied.borrow_and_update()));
    {
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    changed = applied.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        tx.send_replace(revision(&applied.borrow_and_update()));
                    }
                }
            }
        });
    }
    let state = ApiState {
        cache,
        applied: rx,
        logs: Some(Arc::new(RuntimeLogs { runtime })),
    };
    let mut config = ServeConfig::new(api_dir(data_dir));
    let server = match listen {
        Some(addr) => {
            config.listen = addr;
            if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
                // Clients reach it by that address: the serving certificate names it
                // (certificates are made at the first start of a data directory).
                config.hosts.push(addr.ip().to_string());
            }
            Server::bind(config, state)
                .await
                .with_context(|| format!("starting the Kubernetes API on {addr} (--api-listen)"))?
        }
        None => match Server::bind(config.clone(), state.clone()).await {
            Ok(s) => s,
            Err(ServeError::Bind { addr, source }) => {
                tracing::debug!(%addr, error = %source, "default API address taken");
                config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
                Server::bind(config, state)
                    .await
                    .context("starting the Kubernetes API on a loopback port")?
            }
            Err(e) => return Err(e).context("starting the Kubernetes API"),
        },
    };
    println!(
        "Kubernetes API: {} (kommit kubeconfig --data-dir {} > kubeconfig; kubectl --kubeconfig kubeconfig get pods -A)",
        server.url(),
        data_dir.display()
    );
    let mut stop = stop;
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = server.run(stop).await {
            tracing::error!("Kubernetes API stopped: {e}");
        }
    }))
}

/// Container logs from the local node's runtime.
struct RuntimeLogs {
    runtime: Arc<dyn Runtime>,
}

fn log_error(e: RuntimeError) -> LogError {
    match e {
        RuntimeError::NotFound(m) => LogError::NotFound(m),
        e => LogError::Other(e.to_string()),
    }
}

/// The last `n` lines of `data` (a last line without a newline counts).
fn tail(data: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &data[i + 1..];
            }
        }
    }
    data
}

/// The instance of a pod's container that `kubectl logs [--previous]` means: the newest
/// attempt, or the one before it.
async fn pick(runtime: &dyn Runtime, request: &LogRequest) -> Result<ContainerStatus, LogError> {
    let mut instances: Vec<ContainerStatus> = runtime
        .list_containers(&ListFilter::pod(&request.uid))
        .await
        .map_err(log_error)?
        .into_iter()
        .filter(|c| c.name == request.container)
        .collect();
    instances.sort_by_key(|c| std::cmp::Reverse(c.attempt));
    let index = usize::from(request.previous);
    instances.into_iter().nth(index).ok_or_else(|| {
        LogError::NotFound(if request.previous {
            format!(
                "previous terminated container \"{}\" in pod \"{}\" not found",
                request.container, request.pod
            )
        } else {
            format!(
                "container \"{}\" in pod \"{}\" is waiting to start: no instance has run yet",
                request.container, request.pod
            )
        })
    })
}

async fn still_running(runtime: &dyn Runtime, uid: &str, id: &str) -> bool {
    match runtime.list_containers(&ListFilter::pod(uid)).await {
        Ok(cs) => cs
            .iter()
            .any(|c| c.id == id && c.state == ContainerState::Running),
        // The runtime did not answer: keep following, the next poll asks again.
        Err(_) => true,
    }
}

#[async_trait::async_trait]
impl LogSource for RuntimeLogs {
    async fn logs(&self, request: LogRequest) -> Result<LogStream, LogError> {
        let container = pick(self.runtime.as_ref(), &request).await?;
        let data = self
            .runtime
            .logs(&container.id, LogOptions::default())
            .await
            .map_err(log_error)?;
        let first = match request.tail_lines {
            Some(n) if n >= 0 => tail(&data, usize::try_from(n).unwrap_or(usize::MAX)),
            _ => &data[..],
        };
        let first = Bytes::copy_from_slice(first);
        let head = futures::stream::iter((!first.is_empty()).then_some(Ok(first)));
        if !request.follow || request.previous || container.state != ContainerState::Running {
            return Ok(head.boxed());
        }
        struct Follow {
            runtime: Arc<dyn Runtime>,
            uid: String,
            id: String,
            offset: usize,
        }
        let follow = Follow {
            runtime: self.runtime.clone(),
            uid: request.uid.clone(),
            id: container.id.clone(),
            offset: data.len(),
        };
        let rest = futures::stream::unfold(Some(follow), |state| async move {
            let mut f = state?;
            loop {
                tokio::time::sleep(FOLLOW_POLL).await;
                let running = still_running(f.runtime.as_ref(), &f.uid, &f.id).await;
                let data = match f.runtime.logs(&f.id, LogOptions::default()).await {
                    Ok(d) => d,
                    Err(RuntimeError::NotFound(_)) => return None,
                    Err(e) => return Some((Err(std::io::Error::other(e.to_string())), None)),
                };
                if data.len() < f.offset {
                    // The log was rotated or cut: go on from its new end.
                    f.offset = data.len();
                }
                let new = Bytes::copy_from_slice(&data[f.offset..]);
                f.offset = data.len();
                if !running {
                    // Everything the container wrote is in `data`: send it and end.
                    return (!new.is_empty()).then_some((Ok(new), None));
                }
                if !new.is_empty() {
                    return Some((Ok(new), Some(f)));
                }
            }
        });
        Ok(head.chain(rest).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail(b"a\nb\nc\n", 5), b"a\nb\nc\n");
        assert_eq!(tail(b"a\nb\nc\n", 0), b"");
        assert_eq!(tail(b"", 3), b"");
        assert_eq!(tail(b"one\n", 1), b"one\n");
    }
}
