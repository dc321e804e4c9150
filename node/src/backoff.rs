//! Restart and image-pull back-off, as the kubelet does it (CrashLoopBackOff,
//! ImagePullBackOff): the first failure is retried at once, then after 10 s, 20 s, 40 s, ...
//! up to 300 s; an entry whose last retry is more than twice the maximum (10 minutes) old
//! when the next failure happens starts again from 10 s ("reset after 10 minutes running").
//!
//! Time is [`tokio::time::Instant`], so tests drive it with `tokio::time::pause`.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Kubernetes' initial back-off.
pub const INITIAL: Duration = Duration::from_secs(10);
/// Kubernetes' maximum back-off.
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: Instant,
}

/// Per-key exponential back-off.
#[derive(Debug, Clone)]
pub struct BackOff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

impl Default for BackOff {
    fn default() -> Self {
        Self::new(INITIAL, MAX)
    }
}

impl BackOff {
    /// A back-off from `initial` doubling to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        BackOff {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    fn expired(&self, e: &Entry, event: Instant) -> bool {
        event.saturating_duration_since(e.last_update) > self.max * 2
    }

    /// Whether a retry for `key` must still wait after a failure at `event`; returns how
    /// long the current back-off step is when it must.
    pub fn in_backoff_since(&self, key: &str, event: Instant, now: Instant) -> Option<Duration> {
        let e = self.entries.get(key)?;
        if self.expired(e, event) {
            return None;
        }
        (now.saturating_duration_since(event) < e.backoff).then_some(e.backoff)
    }

    /// When the retry for a failure at `event` may happen (`event` when not backing off).
    pub fn retry_at(&self, key: &str, event: Instant, now: Instant) -> Instant {
        match self.in_backoff_since(key, event, now) {
            Some(d) => event + d,
            None => event,
        }
    }

    /// Records a retry of `key` for a failure at `event`: the next step doubles (or starts
    /// at the initial delay when the key is new or its last retry is long past).
    pub fn next(&mut self, key: &str, event: Instant, now: Instant) {
        let fresh = Entry {
            backoff: self.initial,
            last_update: now,
        };
        let entry = match self.entries.get(key) {
            Some(e) if !self.expired(e, event) => Entry {
                backoff: (e.backoff * 2).min(self.max),
                last_update: now,
            },
            _ => fresh,
        };
        self.entries.insert(key.to_string(), entry);
    }

    /// The current step of `key`.
    pub fn current(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.backoff)
    }

    /// Forgets `key`.
    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Forgets keys with a prefix (a pod's).
    pub fn reset_prefix(&mut self, prefix: &str) {
        self.entries.retain(|k, _| !k.starts_with(prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container that fails as soon as it starts: the delays between failures and
    /// restarts follow 0, 10, 20, 40, 80, 160, 300, 300 s.
    #[tokio::test(start_paused = true)]
    async fn crash_loop_schedule_doubles_to_five_minutes() {
        let mut b = BackOff::default();
        let mut delays = Vec::new();
        for _ in 0..8 {
            let failed_at = Instant::now();
            let retry = b.retry_at("c", failed_at, Instant::now());
            tokio::time::sleep_until(retry).await;
            assert!(b.in_backoff_since("c", failed_at, Instant::now()).is_none());
            b.next("c", failed_at, Instant::now());
            delays.push((Instant::now() - failed_at).as_secs());
        }
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
    }

    /// After running for more than ten minutes, the next crash restarts at once and the
    /// following one waits 10 s again.
    #[tokio::test(start_paused = true)]
    async fn back_off_resets_after_ten_minutes_running() {
        let mut b = BackOff::default();
        for _ in 0..5 {
            let failed = Instant::now();
            tokio::time::sleep_until(b.retry_at("c", failed, Instant::now())).await;
            b.next("c", failed, Instant::now());
        }
        assert_eq!(b.current("c"), Some(Duration::from_secs(160)));
        // Runs 11 minutes, then crashes.
        tokio::time::sleep(Duration::from_secs(11 * 60)).await;
        let failed = Instant::now();
        assert_eq!(
            b.retry_at("c", failed, Instant::now()),
            failed,
            "restart at once"
        );
        b.next("c", failed, Instant::now());
        assert_eq!(b.current("c"), Some(Duration::from_secs(10)));
        // Crashes again right away: waits 10 s.
        let failed = Instant::now();
        assert_eq!(
            b.retry_at("c", failed, Instant::now()) - failed,
            Duration::from_secs(10)
        );
    }

    /// Running for less than ten minutes keeps the back-off growing.
    #[tokio::test(start_paused = true)]
    async fn short_runs_keep_the_back_off() {
        let mut b = BackOff::default();
        let failed = Instant::now();
        b.next("c", failed, Instant::now());
        tokio::time::sleep(Duration::from_secs(9 * 60)).await;
        let failed = Instant::now();
        assert_eq!(
            b.in_backoff_since("c", failed, Instant::now()),
            Some(Duration::from_secs(10))
        );
    }
}
