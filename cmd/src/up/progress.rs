//! Terminal progress of a rollout: per-workload ready counts read from the cache after
//! each change, until the cluster matches the applied revision ("converged"). The
//! assessment itself is the reconciler's ([`kommit_reconciler::rollout::assess`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kommit_cache::{Cache, RangeRequest, WatchRequest};
use kommit_reconciler::rollout::{Assessment, assess};
use kommit_reconciler::{Desired, Observed};
use tokio::sync::watch;

/// What the progress printer tracks: the applied revision and when it was detected.
#[derive(Clone)]
pub struct Target {
    /// Short commit id.
    pub short: String,
    /// When the commit was detected (or kommit started, for a resumed revision).
    pub since: Instant,
    /// Its desired state.
    pub desired: Arc<Desired>,
}

/// The rollout of one target, as lines and a verdict.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// One line per workload (`hello/web: 2/3 ready`), in order.
    pub lines: BTreeMap<String, String>,
    /// Everything matches the revision.
    pub converged: bool,
}

/// Prints progress for the latest target until `shutdown`.
pub async fn run(
    cache: Cache,
    target: watch::Receiver<Option<Target>>,
    shutdown: watch::Receiver<bool>,
) {
    report(cache, target, shutdown, |line| println!("{line}")).await
}

/// Like [`run`], handing each line to `out` instead of printing it.
pub async fn report(
    cache: Cache,
    mut target: watch::Receiver<Option<Target>>,
    mut shutdown: watch::Receiver<bool>,
    mut out: impl FnMut(String),
) {
    let mut watcher = cache.watch(WatchRequest::prefix("/registry/"), 0);
    let mut printed: BTreeMap<String, String> = BTreeMap::new();
    let mut converged_printed = false;
    // The target whose progress `printed` and `converged_printed` describe. A new target
    // can be seen here first (not through `changed()` below) when it arrives while a
    // watch batch is being coalesced, so it is compared on every pass.
    let mut shown: Option<(String, Instant)> = None;
    loop {
        let current = target.borrow_and_update().clone();
        if let Some(t) = &current {
            let id = (t.short.clone(), t.since);
            if shown.as_ref() != Some(&id) {
                printed.clear();
                converged_printed = false;
                shown = Some(id);
            }
        }
        if let Some(t) = &current
            && !converged_printed
        {
            match compute(&cache, &t.desired).await {
                Ok(p) => {
                    for (k, line) in &p.lines {
                        if printed.get(k) != Some(line) {
                            out(format!("  {line}"));
                        }
                    }
                    printed = p.lines;
                    if p.converged {
                        out(format!(
                            "converged at {} in {:.1}s",
                            t.short,
                            t.since.elapsed().as_secs_f64()
                        ));
                        converged_printed = true;
                    }
                }
                Err(e) => tracing::warn!("cannot read the rollout's progress: {e}"),
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = target.changed() => {
                if changed.is_err() { return; }
            }
            batch = watcher.recv() => {
                match batch {
                    Some(b) if !b.canceled => {
                        // Coalesce bursts of writes into one read (at most 50 ms).
                        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
                        while let Ok(Some(b)) =
                            tokio::time::timeout_at(deadline, watcher.recv()).await
                        {
                            if b.canceled { break; }
                        }
                    }
                    _ => watcher = cache.watch(WatchRequest::prefix("/registry/"), 0),
                }
            }
        }
    }
}

async fn list<T: k8s_openapi::serde::de::DeserializeOwned>(
    cache: &Cache,
    prefix: &str,
) -> Result<Vec<T>, kommit_cache::Error> {
    let r = cache.range(RangeRequest::prefix(prefix.to_owned())).await?;
    Ok(r.kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

/// What a rollout's assessment reads from the cache: pods, ReplicaSets and the status
/// records of Deployments, Jobs and DaemonSets.
pub async fn observe(cache: &Cache) -> Result<Observed, kommit_cache::Error> {
    Ok(Observed {
        pods: list(cache, "/registry/pods/").await?,
        replica_sets: list(cache, "/registry/replicasets/").await?,
        deployments: list(cache, "/registry/deployments/").await?,
        jobs: list(cache, "/registry/jobs/").await?,
        daemon_sets: list(cache, "/registry/daemonsets/").await?,
        ..Observed::default()
    })
}

/// The progress lines of an assessment (keyed `Deployment ns/name`, in order).
pub fn lines(a: &Assessment) -> Progress {
    let mut progress = Progress {
        converged: a.converged,
        ..Progress::default()
    };
    for o in &a.objects {
        progress.lines.insert(o.id(), o.line());
    }
    if a.leftover_pods > 0 {
        progress.lines.insert(
            "~removed".into(),
            format!(
                "{} pod(s) no longer in the revision to remove",
                a.leftover_pods
            ),
        );
    }
    progress
}

/// The progress of `desired` from what the cache holds now.
pub async fn compute(cache: &Cache, desired: &Desired) -> Result<Progress, kommit_cache::Error> {
    Ok(lines(&assess(desired, &observe(cache).await?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kommit_cache::{Options, PutRequest};

    fn target(short: &str) -> Option<Target> {
        Some(Target {
            short: short.into(),
            since: Instant::now(),
            desired: Arc::new(Desired::default()),
        })
    }

    async fn expect_line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, prefix: &str) {
        let wait = async {
            while let Some(l) = rx.recv().await {
                if l.starts_with(prefix) {
                    return;
                }
            }
            panic!("the printer stopped before saying {prefix:?}");
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("no line starting with {prefix:?}"));
    }

    /// A target that arrives while a burst of cache writes is being coalesced still gets
    /// its progress and its "converged" line (it once went unprinted, forever).
    #[tokio::test]
    async fn a_target_arriving_during_a_write_burst_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), Options::default()).unwrap();
        let (target_tx, target_rx) = watch::channel(target("aaaaaaaa"));
        let (_stop_tx, stop_rx) = watch::channel(false);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let printer = tokio::spawn(report(cache.clone(), target_rx, stop_rx, move |l| {
            let _ = tx.send(l);
        }));
        expect_line(&mut rx, "converged at aaaaaaaa").await;
        for round in 0..20 {
            // A write wakes the printer, which then coalesces for 50 ms; the next target
            // lands inside that window.
            cache
                .put(PutRequest::new(format!("/registry/pods/x/p{round}"), "{}"))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            let short = format!("{round:08}");
            target_tx.send_replace(target(&short));
            expect_line(&mut rx, &format!("converged at {short}")).await;
        }
        printer.abort();
    }
}
