//! Terminal progress of a rollout: per-workload ready counts read from the cache after
//! each change, until the cluster matches the applied revision ("converged").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kommit_cache::{Cache, RangeRequest, WatchRequest};
use kommit_reconciler::{Desired, hash, meta, podutil};
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

fn unschedulable(pod: &Pod) -> Option<String> {
    let c = podutil::condition(pod, "PodScheduled")?;
    (c.status == "False").then(|| c.message.clone().unwrap_or_else(|| "unschedulable".into()))
}

/// The progress of `desired` from what the cache holds now.
pub async fn compute(cache: &Cache, desired: &Desired) -> Result<Progress, kommit_cache::Error> {
    let pods: Vec<Pod> = list(cache, "/registry/pods/").await?;
    let rss: Vec<ReplicaSet> = list(cache, "/registry/replicasets/").await?;
    let mut progress = Progress {
        converged: true,
        ..Progress::default()
    };
    let mut explained: BTreeSet<String> = BTreeSet::new();
    let uid = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.uid.clone().unwrap_or_default()
    };
    for d in &desired.deployments {
        let ns = meta::namespace(&d.metadata);
        let name = meta::name(&d.metadata);
        let Some(d_uid) = desired.uid_of("Deployment", ns, name) else {
            continue;
        };
        let spec = d.spec.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1);
        let owned: Vec<&ReplicaSet> = rss
            .iter()
            .filter(|rs| meta::controller_of(&rs.metadata).is_some_and(|o| o.uid == d_uid))
            .collect();
        let new_uid = owned
            .iter()
            .find(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| hash::equal_ignore_hash(t, &spec.template))
            })
            .map(|rs| uid(&rs.metadata));
        let (mut ready, mut total, mut old) = (0, 0, 0);
        let mut pending: Option<String> = None;
        for p in &pods {
            let Some(owner) = meta::controller_of(&p.metadata) else {
                continue;
            };
            if !owned.iter().any(|rs| uid(&rs.metadata) == owner.uid) {
                continue;
            }
            explained.insert(uid(&p.metadata));
            if podutil::is_terminal(p) {
                continue;
            }
            if Some(&owner.uid) == new_uid.as_ref() && !podutil::is_terminating(p) {
                total += 1;
                if podutil::phase(p) == "Running" && podutil::is_ready(p) {
                    ready += 1;
                }
                if let Some(why) = unschedulable(p) {
                    pending = Some(why);
                }
            } else {
                old += 1;
            }
        }
        let mut line = format!("{ns}/{name}: {ready}/{replicas} ready");
        if old > 0 {
            line.push_str(&format!(", {old} old"));
        }
        if let Some(why) = pending {
            line.push_str(&format!(" (Pending: {why})"));
        }
        if !(ready == replicas && total == replicas && old == 0) {
            progress.converged = false;
        }
        progress
            .lines
            .insert(format!("Deployment {ns}/{name}"), line);
    }
    for d in &desired.pods {
        let ns = meta::namespace(&d.metadata);
        let name = meta::name(&d.metadata);
        let found = pods
            .iter()
            .find(|p| meta::namespace(&p.metadata) == ns && meta::name(&p.metadata) == name);
        let state = match found {
            None => {
                progress.converged = false;
                "not created yet".to_owned()
            }
            Some(p) => {
                explained.insert(uid(&p.metadata));
                let phase = podutil::phase(p).to_owned();
                let done = podutil::is_terminal(p) || (phase == "Running" && podutil::is_ready(p));
                if !done {
                    progress.converged = false;
                }
                match unschedulable(p) {
                    Some(why) => format!("{phase} ({why})"),
                    None => phase,
                }
            }
        };
        progress
            .lines
            .insert(format!("Pod {ns}/{name}"), format!("{ns}/{name}: {state}"));
    }
    workloads(cache, desired, &pods, &mut explained, &mut progress).await?;
    let leftover = pods
        .iter()
        .filter(|p| {
            !explained.contains(&uid(&p.metadata)) && meta::controller_of(&p.metadata).is_some()
        })
        .count();
    if leftover > 0 {
        progress.converged = false;
        progress.lines.insert(
            "~removed".into(),
            format!("{leftover} pod(s) no longer in the revision to remove"),
        );
    }
    Ok(progress)
}

/// Jobs (done when Complete or Failed) and DaemonSets (done when every node that should
/// run one has an updated, ready pod); the pods of both, and of Jobs CronJobs made, are
/// accounted for.
async fn workloads(
    cache: &Cache,
    desired: &Desired,
    pods: &[Pod],
    explained: &mut BTreeSet<String>,
    progress: &mut Progress,
) -> Result<(), kommit_cache::Error> {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::batch::v1::Job;
    let jobs: Vec<Job> = list(cache, "/registry/jobs/").await?;
    let mut owners: BTreeSet<String> = jobs.iter().filter_map(|j| j.metadata.uid.clone()).collect();
    for j in &desired.jobs {
        let (ns, name) = (meta::namespace(&j.metadata), meta::name(&j.metadata));
        owners.insert(meta::desired_uid("Job", &j.metadata));
        let status = jobs
            .iter()
            .find(|r| meta::namespace(&r.metadata) == ns && meta::name(&r.metadata) == name)
            .and_then(|r| r.status.clone())
            .unwrap_or_default();
        let completions = j.spec.as_ref().and_then(|s| s.completions).unwrap_or(1);
        let succeeded = status.succeeded.unwrap_or(0);
        let state = if let Some(c) = kommit_reconciler::job::true_condition(&status, "Failed") {
            format!("Failed ({})", c.reason.as_deref().unwrap_or(""))
        } else if kommit_reconciler::job::true_condition(&status, "Complete").is_some() {
            format!("Complete ({succeeded}/{completions} succeeded)")
        } else {
            progress.converged = false;
            format!(
                "{} active, {succeeded}/{completions} succeeded",
                status.active.unwrap_or(0)
            )
        };
        progress
            .lines
            .insert(format!("Job {ns}/{name}"), format!("{ns}/{name}: {state}"));
    }
    let records: Vec<DaemonSet> = list(cache, "/registry/daemonsets/").await?;
    for d in &desired.daemon_sets {
        let (ns, name) = (meta::namespace(&d.metadata), meta::name(&d.metadata));
        owners.insert(meta::desired_uid("DaemonSet", &d.metadata));
        let st = records
            .iter()
            .find(|r| meta::namespace(&r.metadata) == ns && meta::name(&r.metadata) == name)
            .and_then(|r| r.status.clone());
        let line = match &st {
            Some(s) => format!(
                "{ns}/{name}: {}/{} ready (daemon)",
                s.number_ready, s.desired_number_scheduled
            ),
            None => format!("{ns}/{name}: not synced yet (daemon)"),
        };
        let done = st.as_ref().is_some_and(|s| {
            s.observed_generation == Some(d.metadata.generation.unwrap_or(1))
                && s.number_ready == s.desired_number_scheduled
                && s.current_number_scheduled == s.desired_number_scheduled
                && s.updated_number_scheduled == Some(s.desired_number_scheduled)
                && s.number_misscheduled == 0
        });
        if !done {
            progress.converged = false;
        }
        progress
            .lines
            .insert(format!("DaemonSet {ns}/{name}"), line);
    }
    for p in pods {
        if meta::controller_of(&p.metadata).is_some_and(|o| owners.contains(&o.uid)) {
            explained.insert(p.metadata.uid.clone().unwrap_or_default());
        }
    }
    Ok(())
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
