//! The lessor: leases with a TTL; keys attached to a lease are deleted when it
//! is revoked or expires.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

#[derive(Debug, Clone)]
pub(crate) struct Lease {
    /// Granted TTL in seconds.
    pub ttl: i64,
    pub expiry: Instant,
    pub keys: BTreeSet<Bytes>,
}

impl Lease {
    pub fn remaining(&self, now: Instant) -> Duration {
        self.expiry.saturating_duration_since(now)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Lessor {
    pub leases: HashMap<i64, Lease>,
}

impl Lessor {
    pub fn grant(&mut self, id: i64, ttl: i64, now: Instant) {
        let expiry = now + Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
        self.leases.insert(
            id,
            Lease {
                ttl,
                expiry,
                keys: BTreeSet::new(),
            },
        );
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn remove(&mut self, id: i64) -> Option<Lease> {
        self.leases.remove(&id)
    }

    /// Extends a lease by its TTL; `None` if it does not exist or already expired.
    pub fn renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        let lease = self.leases.get_mut(&id)?;
        if lease.expiry <= now {
            return None;
        }
        lease.expiry = now + Duration::from_secs(u64::try_from(lease.ttl).unwrap_or(0));
        Some(lease.ttl)
    }

    pub fn attach(&mut self, id: i64, key: &Bytes) {
        if id == 0 {
            return;
        }
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.insert(key.clone());
        }
    }

    pub fn detach(&mut self, id: i64, key: &[u8]) {
        if id == 0 {
            return;
        }
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.remove(key);
        }
    }

    /// Leases whose expiry has passed.
    pub fn expired(&self, now: Instant) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expiry <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The earliest expiry, if any lease exists.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.expiry).min()
    }

    /// Restarts every lease's clock (after a restart: a lease's remaining time is
    /// not persisted, as in etcd, so each gets its full TTL again).
    pub fn refresh_all(&mut self, now: Instant) {
        for l in self.leases.values_mut() {
            l.expiry = now + Duration::from_secs(u64::try_from(l.ttl).unwrap_or(0));
        }
    }
}
