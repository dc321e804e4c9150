//! Watchers.
//!
//! Each watcher is a task that pulls from the store's event log: it remembers
//! the next revision it owes its client, wakes when the durable revision moves,
//! copies the matching events (under a short read lock) and sends them into its
//! own bounded channel. Writers never wait for watchers, and live delivery and
//! catch-up from an old revision are the same code, so events arrive in
//! revision order, each exactly once.
//!
//! A watcher whose channel is full is blocked; once a blocked watcher is more
//! than `Options::watch_max_lag` revisions behind, it is cancelled with a
//! reason. A watcher whose next revision was compacted away is cancelled with
//! `compact_revision` set (etcd's ErrCompacted). Nothing is ever skipped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::engine::Core;
use crate::mvcc::in_range;
use crate::types::*;

enum Ctrl {
    Progress,
    Cancel,
}

/// A running watch. Receive with [`Watcher::recv`] (or use it as a
/// `futures::Stream`). The last response of a watcher that ends for any reason
/// other than being dropped has `canceled == true` and says why.
pub struct Watcher {
    id: i64,
    rx: mpsc::Receiver<WatchResponse>,
    end: Arc<Mutex<Option<WatchResponse>>>,
    ctrl: mpsc::UnboundedSender<Ctrl>,
    finished: bool,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").field("id", &self.id).finish()
    }
}

impl Watcher {
    /// The id given at creation (copied into every response).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The next response; `None` after the final (canceled) one.
    pub async fn recv(&mut self) -> Option<WatchResponse> {
        std::future::poll_fn(|cx| self.poll_next_response(cx)).await
    }

    fn poll_next_response(&mut self, cx: &mut Context<'_>) -> Poll<Option<WatchResponse>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(r)) => Poll::Ready(Some(r)),
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(self.end.lock().take())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Asks for a progress notification: an empty response whose revision
    /// tells how far the watcher has delivered (sent once it has caught up).
    pub fn request_progress(&self) {
        // If the task is gone, the watcher already ended; nothing to ask.
        let _ = self.ctrl.send(Ctrl::Progress);
    }

    /// Ends the watch; the final response has `canceled == true`.
    pub fn cancel(&self) {
        let _ = self.ctrl.send(Ctrl::Cancel);
    }
}

impl futures::Stream for Watcher {
    type Item = WatchResponse;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchResponse>> {
        self.get_mut().poll_next_response(cx)
    }
}

/// Reason given to a watcher cancelled by its client.
pub const CANCELED_BY_CLIENT: &str = "watch canceled by the client";

pub(crate) fn spawn(core: Arc<Core>, req: WatchRequest, id: i64) -> Watcher {
    let (tx, rx) = mpsc::channel(core.options.watch_buffer.max(1));
    let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
    let end = Arc::new(Mutex::new(None));
    // Decided now, so that a write acknowledged after watch() returns is seen.
    let next = if req.start_revision > 0 {
        req.start_revision
    } else {
        core.durable() + 1
    };
    let task = Task {
        core,
        req,
        id,
        tx,
        ctrl: ctrl_rx,
        end: end.clone(),
        next,
        progress_pending: false,
    };
    tokio::spawn(task.run());
    Watcher {
        id,
        rx,
        end,
        ctrl: ctrl_tx,
        finished: false,
    }
}

struct Task {
    core: Arc<Core>,
    req: WatchRequest,
    id: i64,
    tx: mpsc::Sender<WatchResponse>,
    ctrl: mpsc::UnboundedReceiver<Ctrl>,
    end: Arc<Mutex<Option<WatchResponse>>>,
    /// The first revision not yet delivered.
    next: i64,
    progress_pending: bool,
}

enum Stop {
    /// The receiver is gone: nobody to tell.
    Gone,
    Canceled {
        reason: String,
        compact_revision: i64,
    },
}

impl Task {
    async fn run(mut self) {
        let stop = self.serve().await;
        if let Stop::Canceled {
            reason,
            compact_revision,
        } = stop
        {
            tracing::debug!(watch_id = self.id, %reason, "watcher canceled");
            *self.end.lock() = Some(WatchResponse {
                watch_id: self.id,
                revision: self.core.durable(),
                events: Vec::new(),
                canceled: true,
                compact_revision,
                cancel_reason: reason,
            });
        }
        // Dropping `tx` closes the channel; the receiver then takes `end`.
    }

    fn matches(&self, e: &Event) -> bool {
        if !in_range(&e.kv.key, &self.req.key, &self.req.range_end) {
            return false;
        }
        for f in &self.req.filters {
            match (f, e.kind) {
                (WatchFilter::NoPut, EventType::Put)
                | (WatchFilter::NoDelete, EventType::Delete) => return false,
                _ => {}
            }
        }
        true
    }

    async fn serve(&mut self) -> Stop {
        let mut durable_rx = self.core.durable_tx.subscribe();
        let interval = self.core.options.progress_notify_interval;
        let mut last_sent = Instant::now();
        loop {
            // Deliver everything that is durable.
            loop {
                let durable = self.core.durable();
                if self.next > durable {
                    break;
                }
                let batch = self.core.options.watch_batch_events.max(1);
                let got = {
                    let store = self.core.store.read();
                    store.events(self.next, durable, batch, |e| self.matches(e))
                };
                let (mut events, upto) = match got {
                    Ok(x) => x,
                    Err(compact_revision) => {
                        return Stop::Canceled {
                            reason: "mvcc: required revision has been compacted".into(),
                            compact_revision,
                        };
                    }
                };
                let first_unsent = self.next;
                self.next = upto + 1;
                if events.is_empty() {
                    continue;
                }
                if !self.req.prev_kv {
                    for e in &mut events {
                        e.prev_kv = None;
                    }
                }
                let resp = WatchResponse {
                    watch_id: self.id,
                    revision: upto,
                    events,
                    ..Default::default()
                };
                if let Some(stop) = self.send(resp, first_unsent, &mut durable_rx).await {
                    return stop;
                }
                last_sent = Instant::now();
            }
            if self.progress_pending {
                self.progress_pending = false;
                if let Some(stop) = self.send(self.progress(), self.next, &mut durable_rx).await {
                    return stop;
                }
                last_sent = Instant::now();
            }
            let notify_at = last_sent + interval;
            tokio::select! {
                changed = durable_rx.changed() => {
                    if changed.is_err() {
                        return Stop::Canceled { reason: "the cache is closed".into(), compact_revision: 0 };
                    }
                }
                c = self.ctrl.recv() => match c {
                    Some(Ctrl::Progress) => self.progress_pending = true,
                    Some(Ctrl::Cancel) => {
                        return Stop::Canceled { reason: CANCELED_BY_CLIENT.into(), compact_revision: 0 };
                    }
                    None => return Stop::Gone,
                },
                _ = tokio::time::sleep_until(notify_at), if self.req.progress_notify => {
                    self.progress_pending = true;
                }
            }
        }
    }

    fn progress(&self) -> WatchResponse {
        WatchResponse {
            watch_id: self.id,
            revision: self.next - 1,
            ..Default::default()
        }
    }

    /// Sends one response, waiting for room; cancels the watcher if it stays
    /// blocked while the store runs too far ahead.
    async fn send(
        &mut self,
        resp: WatchResponse,
        first_unsent: i64,
        durable_rx: &mut tokio::sync::watch::Receiver<i64>,
    ) -> Option<Stop> {
        let permit = match self.tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Closed(_)) => return Some(Stop::Gone),
            Err(mpsc::error::TrySendError::Full(_)) => loop {
                let max_lag = self.core.options.watch_max_lag;
                let lag = self.core.durable() - (first_unsent - 1);
                if lag > max_lag {
                    return Some(Stop::Canceled {
                        reason: format!(
                            "watcher too slow: {lag} revisions behind the store while its buffer was full (limit {max_lag}); resume from revision {first_unsent}"
                        ),
                        compact_revision: 0,
                    });
                }
                tokio::select! {
                    p = self.tx.reserve() => match p {
                        Ok(p) => break p,
                        Err(_) => return Some(Stop::Gone),
                    },
                    changed = durable_rx.changed() => {
                        if changed.is_err() {
                            return Some(Stop::Canceled { reason: "the cache is closed".into(), compact_revision: 0 });
                        }
                    }
                    c = self.ctrl.recv() => match c {
                        Some(Ctrl::Progress) => self.progress_pending = true,
                        Some(Ctrl::Cancel) => {
                            return Some(Stop::Canceled { reason: CANCELED_BY_CLIENT.into(), compact_revision: 0 });
                        }
                        None => return Some(Stop::Gone),
                    },
                }
            },
        };
        permit.send(resp);
        None
    }
}
