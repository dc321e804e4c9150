//! Typed errors. Each variant is one of etcd's error classes; [`Error::etcd_message`]
//! gives the exact text etcd puts on the wire, which etcd clients match on.

use std::path::PathBuf;

/// An error answering a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The requested revision is older than the last compaction.
    #[error("revision has been compacted (compacted up to revision {compact_revision})")]
    Compacted { compact_revision: i64 },
    /// The requested revision is newer than the store's.
    #[error("revision {requested} is a future revision (current revision {current})")]
    FutureRevision { requested: i64, current: i64 },
    #[error("lease {0} not found")]
    LeaseNotFound(i64),
    #[error("lease {0} already exists")]
    LeaseExists(i64),
    #[error("lease TTL {0} is too large (maximum {max})", max = crate::MAX_LEASE_TTL)]
    LeaseTtlTooLarge(i64),
    /// The request is larger than `Options::max_request_bytes`.
    #[error("request is too large: {size} bytes, the limit is {limit} bytes")]
    RequestTooLarge { size: usize, limit: usize },
    #[error("key is not provided")]
    EmptyKey,
    /// `ignore_value` / `ignore_lease` on a key that does not exist.
    #[error("key not found (ignore_value/ignore_lease needs an existing key)")]
    KeyNotFound,
    #[error("value is provided together with ignore_value")]
    ValueProvided,
    #[error("lease is provided together with ignore_lease")]
    LeaseProvided,
    #[error("too many operations in txn request: {ops}, the limit is {limit}")]
    TooManyOps { ops: usize, limit: usize },
    #[error("duplicate key given in txn request: {0:?}")]
    DuplicateKey(bytes::Bytes),
    /// The data directory could not be written; the store refuses writes from then on.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The store was shut down.
    #[error("the cache is closed")]
    Closed,
}

/// etcd's gRPC status code classes (subset used by the v3 API errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    OutOfRange,
    NotFound,
    FailedPrecondition,
    Unavailable,
    Internal,
}

impl Error {
    /// The text etcd sends for this error class (clients match on it).
    pub fn etcd_message(&self) -> &'static str {
        match self {
            Error::Compacted { .. } => "etcdserver: mvcc: required revision has been compacted",
            Error::FutureRevision { .. } => {
                "etcdserver: mvcc: required revision is a future revision"
            }
            Error::LeaseNotFound(_) => "etcdserver: requested lease not found",
            Error::LeaseExists(_) => "etcdserver: lease already exists",
            Error::LeaseTtlTooLarge(_) => "etcdserver: too large lease TTL",
            Error::RequestTooLarge { .. } => "etcdserver: request is too large",
            Error::EmptyKey => "etcdserver: key is not provided",
            Error::KeyNotFound => "etcdserver: key not found",
            Error::ValueProvided => "etcdserver: value is provided",
            Error::LeaseProvided => "etcdserver: lease is provided",
            Error::TooManyOps { .. } => "etcdserver: too many operations in txn request",
            Error::DuplicateKey(_) => "etcdserver: duplicate key given in txn request",
            Error::Storage(_) => "etcdserver: storage failure",
            Error::Closed => "etcdserver: server stopped",
        }
    }

    /// The gRPC status class etcd uses for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Compacted { .. } | Error::FutureRevision { .. } | Error::LeaseTtlTooLarge(_) => {
                ErrorCode::OutOfRange
            }
            Error::LeaseNotFound(_) => ErrorCode::NotFound,
            Error::LeaseExists(_) => ErrorCode::FailedPrecondition,
            Error::RequestTooLarge { .. }
            | Error::EmptyKey
            | Error::KeyNotFound
            | Error::ValueProvided
            | Error::LeaseProvided
            | Error::TooManyOps { .. }
            | Error::DuplicateKey(_) => ErrorCode::InvalidArgument,
            Error::Storage(_) => ErrorCode::Internal,
            Error::Closed => ErrorCode::Unavailable,
        }
    }
}

/// An error opening a data directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the data directory is in use by another process")]
    Locked { path: PathBuf },
    #[error("{path}: corrupt data: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}
