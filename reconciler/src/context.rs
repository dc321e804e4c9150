//! What a controller may take from outside its inputs: the time and fresh names.
//!
//! Both are injected so that a controller is a pure function of (desired, observed,
//! context): tests fix the clock and seed the generator.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The alphabet Kubernetes uses for generated name suffixes (no vowels, no confusable
/// characters: `bcdfghjklmnpqrstvwxz2456789`).
pub const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Length of the random suffix of generated names (`web-7d4b9c-x2k9p`).
pub const NAME_SUFFIX_LEN: usize = 5;

/// The clock and name source a reconcile runs with.
#[derive(Debug)]
pub struct Context {
    now: Timestamp,
    rng: Mutex<StdRng>,
    seq: AtomicU64,
}

impl Context {
    /// A context at `now` with fresh randomness (production).
    pub fn new(now: Timestamp) -> Self {
        Context {
            now,
            rng: Mutex::new(StdRng::from_os_rng()),
            seq: AtomicU64::new(0),
        }
    }

    /// A context at `now` whose names and uids are determined by `seed` (tests).
    pub fn seeded(now: Timestamp, seed: u64) -> Self {
        Context {
            now,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            seq: AtomicU64::new(0),
        }
    }

    /// The current time, truncated to whole seconds (what `metav1.Time` stores).
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The current time as `metav1.Time`.
    pub fn now_time(&self) -> Time {
        Time(truncate_seconds(self.now))
    }

    /// The current time as `metav1.MicroTime`.
    pub fn now_micro(&self) -> MicroTime {
        MicroTime(self.now)
    }

    /// Seconds elapsed since `t` (negative if `t` is in the future).
    pub fn since(&self, t: Timestamp) -> SignedDuration {
        self.now.duration_since(t)
    }

    fn with_rng<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        // A poisoned lock only means another reconcile panicked; the generator is still usable.
        let mut g = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// A 5-character suffix from Kubernetes' name alphabet.
    pub fn name_suffix(&self) -> String {
        self.with_rng(|rng| {
            (0..NAME_SUFFIX_LEN)
                .map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char)
                .collect()
        })
    }

    /// `base` followed by a random suffix, as the API server does for `generateName`.
    pub fn generate_name(&self, base: &str) -> String {
        format!("{base}{}", self.name_suffix())
    }

    /// A fresh random (v4) UID.
    pub fn new_uid(&self) -> String {
        let bytes: [u8; 16] = self.with_rng(|rng| rng.random());
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    /// A strictly increasing number within this context (for unique event names).
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }
}

/// `t` without its sub-second part.
pub fn truncate_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_names_are_reproducible_and_use_the_alphabet() {
        let t = Timestamp::from_second(1_700_000_000).unwrap();
        let a = Context::seeded(t, 7);
        let b = Context::seeded(t, 7);
        let (na, nb) = (a.generate_name("web-"), b.generate_name("web-"));
        assert_eq!(na, nb);
        let suffix = na.strip_prefix("web-").unwrap();
        assert_eq!(suffix.len(), 5);
        assert!(suffix.bytes().all(|c| NAME_ALPHABET.contains(&c)));
        assert_eq!(a.new_uid(), b.new_uid());
        assert_ne!(a.new_uid(), a.new_uid());
    }
}
