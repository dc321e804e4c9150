//! The ref watcher on real repositories: local (notify, and polling alone) and remote
//! (fetched into a mirror, on demand and at an interval), including a force-push.
#![allow(clippy::unwrap_used)]

#[path = "../../../tests/support/mod.rs"]
mod support;
mod watching;

use std::time::Duration;

use kommit_desired::watch::{RefWatcher, Source, WatchConfig, WatchEvent};
use support::GitRepo;
use watching::{WAIT, next_move, oid};

async fn assert_quiet(w: &mut RefWatcher, d: Duration) {
    if let Ok(ev) = tokio::time::timeout(d, w.next()).await {
        panic!("unexpected event {ev:?}");
    }
}

fn file(repo: &GitRepo, text: &str) -> String {
    repo.write("cm.yaml", text);
    repo.commit(text)
}

/// Commit B on main, then a force-push: main moved in one step to a commit C made on A.
async fn moves_and_force_push(repo: &GitRepo, w: &mut RefWatcher, a: &str) {
    let b = file(repo, "b");
    let e = next_move(w).await;
    assert_eq!(
        (e.previous, e.commit, e.fast_forward),
        (Some(oid(a)), oid(&b), true)
    );
    repo.git(&["checkout", "-q", "--detach", a]);
    let c = file(repo, "c");
    repo.git(&["branch", "-f", "main", &c]);
    let e = next_move(w).await;
    assert_eq!(
        (e.previous, e.commit, e.fast_forward),
        (Some(oid(&b)), oid(&c), false)
    );
    assert_eq!(e.reference, "refs/heads/main");
}

#[tokio::test]
async fn local_repository_with_notifications() {
    let repo = GitRepo::init();
    let a = file(&repo, "a");
    let mut config = WatchConfig::new(Source::Local(repo.path().to_owned()), "main");
    // Polling is too slow to matter: only notifications can pass this test in time.
    config.poll_interval = Duration::from_secs(3600);
    let mut w = RefWatcher::spawn(config, None).unwrap();
    let first = next_move(&mut w).await;
    assert_eq!(
        (first.previous, first.commit, first.fast_forward),
        (None, oid(&a), true)
    );
    assert_quiet(&mut w, Duration::from_millis(300)).await;
    moves_and_force_push(&repo, &mut w, &a).await;
    // Packing refs (packed-refs rewritten, loose ref removed) is no move.
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["pack-refs", "--all"]);
    assert_quiet(&mut w, Duration::from_millis(500)).await;
    let d = file(&repo, "d");
    assert_eq!(next_move(&mut w).await.commit, oid(&d));
}

#[tokio::test]
async fn local_repository_by_polling_alone() {
    let repo = GitRepo::init();
    let a = file(&repo, "a");
    let mut config = WatchConfig::new(Source::Local(repo.path().to_owned()), "refs/heads/main");
    config.use_notify = false;
    config.poll_interval = Duration::from_millis(100);
    // Started with the current commit known: no first event.
    let mut w = RefWatcher::spawn(config, Some(oid(&a))).unwrap();
    assert_quiet(&mut w, Duration::from_millis(400)).await;
    moves_and_force_push(&repo, &mut w, &a).await;
}

#[tokio::test]
async fn remote_repository_fetched_on_demand_and_at_an_interval() {
    let upstream = GitRepo::init_bare();
    let work = GitRepo::init();
    let a = file(&work, "a");
    let url = format!("file://{}", upstream.path().display());
    work.git(&["push", "-q", &url, "main"]);
    let mirror = work.scratch().join("mirror.git");
    let mut config = WatchConfig::new(
        Source::Remote {
            url: url.clone(),
            mirror: mirror.clone(),
        },
        "main",
    );
    config.poll_interval = Duration::from_secs(3600);
    let mut w = RefWatcher::spawn(config, None).unwrap();
    let first = next_move(&mut w).await;
    assert_eq!(
        (first.commit, first.repository.clone()),
        (oid(&a), mirror.clone())
    );
    // A push is seen when the webhook asks for a fetch.
    let b = file(&work, "b");
    work.git(&["push", "-q", &url, "main"]);
    assert_quiet(&mut w, Duration::from_millis(300)).await;
    assert!(w.handle().refresh());
    let e = next_move(&mut w).await;
    assert_eq!(
        (e.previous, e.commit, e.fast_forward),
        (Some(oid(&a)), oid(&b), true)
    );
    // The mirror holds the commit: it can be loaded from there.
    let r = kommit_desired::open_repository(&mirror).unwrap();
    assert!(r.find_commit(oid(&b)).is_ok());
    drop(w);

    // At an interval, a force-push is fetched and reported as such.
    let mut config = WatchConfig::new(
        Source::Remote {
            url: url.clone(),
            mirror,
        },
        "main",
    );
    config.poll_interval = Duration::from_millis(200);
    let mut w = RefWatcher::spawn(config, Some(oid(&b))).unwrap();
    work.git(&["reset", "-q", "--hard", &a]);
    let c = file(&work, "c");
    work.git(&["push", "-q", "--force", &url, "main"]);
    let e = next_move(&mut w).await;
    assert_eq!(
        (e.previous, e.commit, e.fast_forward),
        (Some(oid(&b)), oid(&c), false)
    );
}

#[tokio::test]
async fn a_missing_ref_or_remote_is_reported_not_fatal() {
    let repo = GitRepo::init();
    file(&repo, "a");
    let mut config = WatchConfig::new(Source::Local(repo.path().to_owned()), "release");
    config.poll_interval = Duration::from_millis(100);
    let mut w = RefWatcher::spawn(config, None).unwrap();
    match tokio::time::timeout(WAIT, w.next()).await.unwrap() {
        Some(WatchEvent::Error(e)) => {
            assert!(e.contains("refs/heads/release does not exist"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // Reported once, then the branch appears and is reported.
    assert_quiet(&mut w, Duration::from_millis(300)).await;
    repo.git(&["branch", "release"]);
    let e = next_move(&mut w).await;
    assert_eq!(e.commit, oid(&repo.head()));

    let scratch = tempfile::tempdir().unwrap();
    let mut config = WatchConfig::new(
        Source::Remote {
            url: format!("file://{}/nothing-here", scratch.path().display()),
            mirror: scratch.path().join("mirror"),
        },
        "main",
    );
    config.poll_interval = Duration::from_millis(100);
    let mut w = RefWatcher::spawn(config, None).unwrap();
    match tokio::time::timeout(WAIT, w.next()).await.unwrap() {
        Some(WatchEvent::Error(e)) => assert!(e.starts_with("fetching file://"), "{e}"),
        other => panic!("{other:?}"),
    }
}
