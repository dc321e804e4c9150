//! What the ref watcher tests share: object ids from hex and the next move of a watcher.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use kommit_desired::ObjectId;
use kommit_desired::watch::{RefEvent, RefWatcher, WatchEvent};

/// How long a test waits for an event (it bounds waiting only; a loaded machine is slow).
pub const WAIT: Duration = Duration::from_secs(30);

pub fn oid(s: &str) -> ObjectId {
    ObjectId::from_hex(s.as_bytes()).unwrap()
}

/// The watcher's next ref move; any error, stop or silence fails the test.
pub async fn next_move(w: &mut RefWatcher) -> RefEvent {
    match tokio::time::timeout(WAIT, w.next()).await {
        Ok(Some(WatchEvent::Moved(e))) => e,
        Ok(Some(WatchEvent::Error(e))) => panic!("watcher error: {e}"),
        Ok(None) => panic!("watcher stopped"),
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}
