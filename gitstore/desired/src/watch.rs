//! Watching the tracked ref: each new commit is reported as a [`RefEvent`].
//!
//! - A local repository is watched with `notify` on its ref files (`HEAD`, `packed-refs`,
//!   `refs/`), with polling every [`WatchConfig::poll_interval`] as a fallback (and as
//!   the only mechanism when notify cannot be used or `use_notify` is false).
//! - A remote URL (`file://`, `http(s)://`, `ssh://`) is fetched into a bare mirror
//!   (`+refs/heads/*:refs/heads/*`, so force-pushes come through) every poll interval and
//!   whenever [`WatchHandle::refresh`] is called (a webhook does that).
//!
//! The work happens on a dedicated thread (gix is blocking); events arrive on a tokio
//! channel, so `kommit up` awaits [`RefWatcher::next`]. The first event reports the
//! ref's current commit when it differs from the `last_known` one the watcher started
//! with. `fast_forward` is false when the new commit does not descend from the previous
//! one (a force-push).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use gix::ObjectId;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Where the repository is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A repository on this machine (bare or with a work tree).
    Local(PathBuf),
    /// A remote URL, fetched into a bare mirror at `mirror` (created when missing).
    Remote {
        /// `file://`, `http(s)://` or `ssh://` URL.
        url: String,
        /// Folder of the mirror.
        mirror: PathBuf,
    },
}

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The repository.
    pub source: Source,
    /// The tracked ref: `main` or `refs/heads/main`.
    pub reference: String,
    /// How often to poll (local) or fetch (remote).
    pub poll_interval: Duration,
    /// Use file notifications for local repositories (polling stays as a fallback).
    pub use_notify: bool,
}

impl WatchConfig {
    /// Watch `reference` of `source`, polling every 5 s, with notifications.
    pub fn new(source: Source, reference: &str) -> WatchConfig {
        WatchConfig {
            source,
            reference: reference.to_owned(),
            poll_interval: Duration::from_secs(5),
            use_notify: true,
        }
    }

    fn full_ref(&self) -> String {
        if self.reference.starts_with("refs/") {
            self.reference.clone()
        } else {
            format!("refs/heads/{}", self.reference)
        }
    }
}

/// The tracked ref moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefEvent {
    /// The ref (`refs/heads/main`).
    pub reference: String,
    /// The commit it pointed to before (None for the first event without `last_known`).
    pub previous: Option<ObjectId>,
    /// The commit it points to now.
    pub commit: ObjectId,
    /// False when `commit` does not descend from `previous`: a force-push.
    pub fast_forward: bool,
    /// The repository to load the commit from (the mirror, for a remote).
    pub repository: PathBuf,
}

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A new commit on the tracked ref.
    Moved(RefEvent),
    /// Something failed (a fetch, a missing ref); watching goes on.
    Error(String),
}

/// Why a watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The mirror of a remote could not be created.
    #[error("cannot create the mirror {path}: {message}")]
    Mirror {
        /// Mirror folder.
        path: String,
        /// Why.
        message: String,
    },
    /// The watcher thread could not be started.
    #[error("cannot start the watcher thread: {0}")]
    Thread(String),
}

enum Wake {
    Changed,
    Refresh,
}

/// Asks a running watcher to check (fetch) now. Cloneable; cheap.
#[derive(Debug, Clone)]
pub struct WatchHandle {
    wake: std_mpsc::Sender<Wake>,
}

impl WatchHandle {
    /// Check the ref (fetch the remote) now instead of at the next interval.
    /// False when the watcher has stopped.
    pub fn refresh(&self) -> bool {
        self.wake.send(Wake::Refresh).is_ok()
    }
}

/// A running watcher. Dropping it stops the watcher thread (at its next wake-up).
pub struct RefWatcher {
    events: mpsc::Receiver<WatchEvent>,
    handle: WatchHandle,
}

impl RefWatcher {
    /// Starts watching. `last_known`: the commit the caller already has (applied), so
    /// the first event comes only when the ref points elsewhere.
    pub fn spawn(
        config: WatchConfig,
        last_known: Option<ObjectId>,
    ) -> Result<RefWatcher, WatchError> {
        if let Source::Remote { mirror, .. } = &config.source
            && !mirror.join("HEAD").exists()
        {
            std::fs::create_dir_all(mirror)
                .map_err(|e| mirror_err(mirror, e))
                .and_then(|()| {
                    gix::init_bare(mirror)
                        .map(drop)
                        .map_err(|e| mirror_err(mirror, e))
                })?;
        }
        let (tx, rx) = mpsc::channel(64);
        let (wake_tx, wake_rx) = std_mpsc::channel();
        let notify_tx = wake_tx.clone();
        std::thread::Builder::new()
            .name("kommit-ref-watcher".to_owned())
            .spawn(move || run(config, last_known, &tx, &wake_rx, notify_tx))
            .map_err(|e| WatchError::Thread(e.to_string()))?;
        Ok(RefWatcher {
            events: rx,
            handle: WatchHandle { wake: wake_tx },
        })
    }

    /// The next event; None once the watcher has stopped.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.events.recv().await
    }

    /// A handle to trigger checks (for a webhook).
    pub fn handle(&self) -> WatchHandle {
        self.handle.clone()
    }
}

fn mirror_err(p: &Path, e: impl std::fmt::Display) -> WatchError {
    WatchError::Mirror {
        path: p.display().to_string(),
        message: e.to_string(),
    }
}

fn repo_dir(config: &WatchConfig) -> PathBuf {
    match &config.source {
        Source::Local(p) => p.clone(),
        Source::Remote { mirror, .. } => mirror.clone(),
    }
}

fn run(
    config: WatchConfig,
    mut last: Option<ObjectId>,
    tx: &mpsc::Sender<WatchEvent>,
    wake: &std_mpsc::Receiver<Wake>,
    notify_tx: std_mpsc::Sender<Wake>,
) {
    let reference = config.full_ref();
    let dir = repo_dir(&config);
    // Keep the notify watcher alive for the thread's lifetime.
    let _notifier = match (&config.source, config.use_notify) {
        (Source::Local(p), true) => start_notify(p, notify_tx),
        _ => None,
    };
    let mut last_error: Option<String> = None;
    loop {
        if tx.is_closed() {
            return;
        }
        let result = check(&config, &dir, &reference);
        match result {
            Ok(Some(commit)) if Some(commit) != last => {
                let fast_forward = match last {
                    None => true,
                    Some(prev) => gix::open(&dir)
                        .ok()
                        .and_then(|r| crate::is_ancestor(&r, prev, commit).ok())
                        .unwrap_or(false),
                };
                let event = RefEvent {
                    reference: reference.clone(),
                    previous: last,
                    commit,
                    fast_forward,
                    repository: dir.clone(),
                };
                debug!(?event, "tracked ref moved");
                if tx.blocking_send(WatchEvent::Moved(event)).is_err() {
                    return;
                }
                last = Some(commit);
                last_error = None;
            }
            Ok(_) => last_error = None,
            Err(e) => {
                // Report an error once until it changes, not at every poll.
                if last_error.as_ref() != Some(&e) {
                    warn!(error = %e, "watching {reference}");
                    if tx.blocking_send(WatchEvent::Error(e.clone())).is_err() {
                        return;
                    }
                    last_error = Some(e);
                }
            }
        }
        match wake.recv_timeout(config.poll_interval) {
            Ok(Wake::Changed) => {
                // Git writes a ref through a lock file and a rename: let it finish, and
                // fold the burst of notifications into one check.
                std::thread::sleep(Duration::from_millis(20));
                while let Ok(Wake::Changed) = wake.try_recv() {}
            }
            Ok(Wake::Refresh) | Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn start_notify(repo: &Path, wake: std_mpsc::Sender<Wake>) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let git_dir = match gix::open(repo) {
        Ok(r) => r.git_dir().to_path_buf(),
        Err(e) => {
            warn!(error = %e, "cannot open {} for notifications; polling only", repo.display());
            return None;
        }
    };
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && ev.paths.iter().any(|p| is_ref_path(p))
        {
            let _ = wake.send(Wake::Changed);
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "file notifications unavailable; polling only");
            return None;
        }
    };
    let targets = [
        (git_dir.clone(), RecursiveMode::NonRecursive),
        (git_dir.join("refs"), RecursiveMode::Recursive),
    ];
    for (path, mode) in targets {
        if let Err(e) = watcher.watch(&path, mode) {
            warn!(error = %e, "cannot watch {}; polling only", path.display());
            return None;
        }
    }
    Some(watcher)
}

fn is_ref_path(p: &Path) -> bool {
    let s = p.to_string_lossy();
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    s.contains("/refs/") || name == "HEAD" || name == "packed-refs"
}

/// The commit the ref points to now (fetching first for a remote).
fn check(config: &WatchConfig, dir: &Path, reference: &str) -> Result<Option<ObjectId>, String> {
    if let Source::Remote { url, .. } = &config.source {
        fetch(dir, url).map_err(|e| format!("fetching {url}: {e}"))?;
    }
    let repo = gix::open(dir).map_err(|e| format!("opening {}: {e}", dir.display()))?;
    let found = repo
        .try_find_reference(reference)
        .map_err(|e| format!("reading {reference}: {e}"))?;
    let Some(mut r) = found else {
        return Err(format!("{reference} does not exist in {}", dir.display()));
    };
    let id = r
        .peel_to_id()
        .map_err(|e| format!("resolving {reference}: {e}"))?;
    Ok(Some(id.detach()))
}

/// Fetches every branch of `url` into the bare mirror at `dir`, force-updating.
fn fetch(dir: &Path, url: &str) -> Result<(), String> {
    let repo = gix::open(dir).map_err(|e| e.to_string())?;
    let remote = repo
        .remote_at(url)
        .map_err(|e| e.to_string())?
        .with_refspecs(
            Some("+refs/heads/*:refs/heads/*"),
            gix::remote::Direction::Fetch,
        )
        .map_err(|e| e.to_string())?;
    let connection = remote
        .connect(gix::remote::Direction::Fetch)
        .map_err(|e| e.to_string())?;
    let interrupt = AtomicBool::new(false);
    connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| e.to_string())?
        .receive(gix::progress::Discard, &interrupt)
        .map_err(|e| e.to_string())?;
    Ok(())
}
