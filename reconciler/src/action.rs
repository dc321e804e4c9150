//! What controllers return: writes for the executor and when to look again.
//!
//! Shaped after kube-rs: a reconcile returns an outcome saying when to requeue
//! ([`Requeue`], like `kube::runtime::controller::Action`), and failures go through an
//! error policy ([`error_policy`]) that chooses a back-off.

use std::time::Duration;

use crate::keys::ObjectKey;
use crate::object::Object;

/// One write to observed state.
///
/// Every write names the `mod_revision` it expects, so that two writers never lose each
/// other's updates: the executor turns it into an etcd transaction whose compare fails
/// when the key moved on, and the controller runs again on fresh state.
///
/// Events: a `Create` of an Event reports the write just before it in the list (its
/// *anchor*, see [`event_anchors`]); when that write conflicts the event is dropped, so
/// that no `Scheduled` or `ScalingReplicaSet` event tells of a write that did not happen.
/// Event writes are applied after the others and never count as conflicts.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create an observed object; the key must not exist (`create_revision == 0`).
    Create(Object),
    /// Replace an observed object; its `metadata.resourceVersion` must equal the key's
    /// current `mod_revision`.
    Update(Object),
    /// Delete an observed object; when `mod_revision` is given it must still be current.
    Delete {
        /// Which object.
        key: ObjectKey,
        /// Expected `mod_revision`, if the deletion depends on what was read.
        mod_revision: Option<i64>,
    },
    /// Write the status record of a desired object (Deployment from Git): the object
    /// carries metadata and `.status` (no spec; the spec is in Git). With a
    /// `resourceVersion` it replaces the record read at that revision; without, the
    /// record must not exist yet.
    WriteStatus(Object),
}

impl Action {
    /// The key this action writes.
    pub fn key(&self) -> Option<ObjectKey> {
        match self {
            Action::Create(o) | Action::Update(o) | Action::WriteStatus(o) => o.key().ok(),
            Action::Delete { key, .. } => Some(key.clone()),
        }
    }

    /// The object written, if any.
    pub fn object(&self) -> Option<&Object> {
        match self {
            Action::Create(o) | Action::Update(o) | Action::WriteStatus(o) => Some(o),
            Action::Delete { .. } => None,
        }
    }

    /// Whether this action creates an Event.
    pub fn is_event(&self) -> bool {
        matches!(self, Action::Create(Object::Event(_)))
    }

    /// A short human description, for logs.
    pub fn describe(&self) -> String {
        let key = self
            .key()
            .map(|k| k.to_string())
            .unwrap_or_else(|| "<unnamed>".into());
        match self {
            Action::Create(_) => format!("create {key}"),
            Action::Update(_) => format!("update {key}"),
            Action::Delete { .. } => format!("delete {key}"),
            Action::WriteStatus(_) => format!("status {key}"),
        }
    }
}

/// For each action, the index of the write an Event reports (the closest preceding
/// action that is not an Event); `None` for non-events and for events with nothing before.
pub fn event_anchors(actions: &[Action]) -> Vec<Option<usize>> {
    let mut last = None;
    actions
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if a.is_event() {
                last
            } else {
                last = Some(i);
                None
            }
        })
        .collect()
}

/// When a controller wants to run again without a change to what it watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Requeue {
    /// Only when something it watches changes.
    #[default]
    AwaitChange,
    /// After this long at the latest (a deadline, minReadySeconds, a node timeout).
    After(Duration),
}

impl Requeue {
    /// The earlier of two requeues.
    pub fn min(self, other: Requeue) -> Requeue {
        match (self, other) {
            (Requeue::AwaitChange, x) | (x, Requeue::AwaitChange) => x,
            (Requeue::After(a), Requeue::After(b)) => Requeue::After(a.min(b)),
        }
    }
}

/// The outcome of one reconcile: writes, and when to look again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reconciled {
    /// Writes, in the order they should be applied.
    pub actions: Vec<Action>,
    /// When to run again if nothing changes.
    pub requeue: Requeue,
}

impl Reconciled {
    /// Nothing to do.
    pub fn none() -> Self {
        Self::default()
    }

    /// Appends another outcome (actions after ours, earliest requeue).
    pub fn merge(&mut self, other: Reconciled) {
        self.actions.extend(other.actions);
        self.requeue = self.requeue.min(other.requeue);
    }

    /// Asks to run again after `d` at the latest.
    pub fn requeue_after(&mut self, d: Duration) {
        self.requeue = self.requeue.min(Requeue::After(d));
    }
}

/// Why a reconcile could not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    /// The desired object is invalid in a way validation should have caught.
    #[error("{object}: {field}: {message}")]
    Invalid {
        /// `Deployment default/web`.
        object: String,
        /// The field path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A write conflicted with another writer (compare-and-swap failed).
    #[error("conflict writing {0}")]
    Conflict(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}

/// The error policy: how long to wait before retrying after `error`, given how many times
/// in a row this reconcile has failed (`attempt` starts at 1).
///
/// Invalid input is retried slowly (only a new commit can fix it); conflicts right away
/// (fresh state usually resolves them); store errors back off exponentially from 100 ms
/// to 30 s, as client-go's default rate limiter for controllers does (5 ms doubling to
/// 1000 s there; ours is capped lower since one process owns the store).
pub fn error_policy(error: &ReconcileError, attempt: u32) -> Duration {
    match error {
        ReconcileError::Invalid { .. } => Duration::from_secs(300),
        ReconcileError::Conflict(_) if attempt <= 3 => Duration::ZERO,
        ReconcileError::Conflict(_) | ReconcileError::Store(_) => {
            let exp = attempt.saturating_sub(1).min(16);
            Duration::from_millis(100u64.saturating_mul(1u64 << exp)).min(Duration::from_secs(30))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_takes_the_earliest() {
        let a = Requeue::After(Duration::from_secs(5));
        let b = Requeue::After(Duration::from_secs(2));
        assert_eq!(a.min(b), b);
        assert_eq!(Requeue::AwaitChange.min(a), a);
        assert_eq!(a.min(Requeue::AwaitChange), a);
    }

    #[test]
    fn error_policy_backs_off() {
        let store = ReconcileError::Store("down".into());
        assert_eq!(error_policy(&store, 1), Duration::from_millis(100));
        assert_eq!(error_policy(&store, 2), Duration::from_millis(200));
        assert_eq!(error_policy(&store, 30), Duration::from_secs(30));
        let conflict = ReconcileError::Conflict("k".into());
        assert_eq!(error_policy(&conflict, 1), Duration::ZERO);
        assert!(error_policy(&conflict, 5) > Duration::ZERO);
    }
}
