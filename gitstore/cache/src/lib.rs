//! Observed state: an etcd-compatible multi-version key-value cache.
