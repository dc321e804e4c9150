//! The applied revision as the rest of the process sees it: a `tokio::sync::watch` of
//! [`AppliedState`]. The API server reads it; keep this type the only coupling.

use std::sync::Arc;

use kommit_desired::{ObjectId, Snapshot};
use tokio::sync::watch;

/// The commit the cluster runs, with its validated snapshot.
#[derive(Debug, Clone)]
pub struct AppliedState {
    /// The applied commit.
    pub commit: ObjectId,
    /// Where it came from: the repository path or URL.
    pub repository: String,
    /// The tracked branch.
    pub branch: String,
    /// The validated objects at `commit`.
    pub snapshot: Arc<Snapshot>,
}

/// Sender side: `None` until a first revision is applied.
pub type AppliedSender = watch::Sender<Option<Arc<AppliedState>>>;
/// Receiver side, for readers (the node's ControlPlane, the API).
pub type AppliedReceiver = watch::Receiver<Option<Arc<AppliedState>>>;

/// A channel with nothing applied yet.
pub fn channel() -> (AppliedSender, AppliedReceiver) {
    watch::channel(None)
}
