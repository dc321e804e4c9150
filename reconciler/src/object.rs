//! A stored object of any kind the reconciler writes, with its key and JSON encoding.
//!
//! The `metadata.resourceVersion` of an object read from the cache is the key's
//! `mod_revision`, as in Kubernetes; actions carry it so the executor can compare-and-swap.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Event, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::keys::{KeyError, ObjectKey};

/// Errors decoding or keying an object.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The object has no name.
    #[error("{kind} without metadata.name")]
    NoName {
        /// The kind.
        kind: &'static str,
    },
    /// The object's scope does not fit its kind.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The stored value is not JSON of the kind.
    #[error("{key}: value is not a {kind}: {source}")]
    Decode {
        /// The key read.
        key: String,
        /// The expected kind.
        kind: &'static str,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The kind has no typed representation here.
    #[error("kind {0} is not handled by the reconciler")]
    Unsupported(String),
}

macro_rules! objects {
    ($($variant:ident),* $(,)?) => {
        /// One object of a kind the reconciler reads or writes.
        #[derive(Clone, Debug, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        pub enum Object {
            $(
                #[doc = concat!("A ", stringify!($variant), ".")]
                $variant($variant),
            )*
        }

        impl Object {
            /// The kind (`Pod`, `ReplicaSet`, ...).
            pub fn kind(&self) -> &'static str {
                match self { $(Object::$variant(_) => stringify!($variant),)* }
            }

            /// The object's metadata.
            pub fn metadata(&self) -> &ObjectMeta {
                match self { $(Object::$variant(o) => &o.metadata,)* }
            }

            /// The object's metadata, mutable.
            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self { $(Object::$variant(o) => &mut o.metadata,)* }
            }

            /// The JSON value stored under the object's key (with `apiVersion` and `kind`).
            pub fn to_json(&self) -> serde_json::Value {
                let v = match self {
                    $(Object::$variant(o) => serde_json::to_value(o),)*
                };
                // k8s-openapi objects always serialise (their fields are plain data).
                v.expect("k8s-openapi objects serialise to JSON")
            }

            /// Decodes a stored value of `kind`.
            pub fn from_json(kind: &str, key: &str, bytes: &[u8]) -> Result<Object, ObjectError> {
                match kind {
                    $(stringify!($variant) => serde_json::from_slice::<$variant>(bytes)
                        .map(Object::$variant)
                        .map_err(|source| ObjectError::Decode {
                            key: key.to_string(),
                            kind: stringify!($variant),
                            source,
                        }),)*
                    other => Err(ObjectError::Unsupported(other.to_string())),
                }
            }
        }

        $(
            impl From<$variant> for Object {
                fn from(o: $variant) -> Object { Object::$variant(o) }
            }
        )*
    };
}

objects!(
    Pod,
    ReplicaSet,
    Deployment,
    DaemonSet,
    Job,
    CronJob,
    Node,
    Lease,
    Event,
    Namespace,
    Service,
    Endpoints,
    EndpointSlice,
);

impl Object {
    /// The object's key (kind, namespace, name).
    pub fn key(&self) -> Result<ObjectKey, ObjectError> {
        meta_key(self.kind(), self.metadata())
    }

    /// The `mod_revision` this object was read at (its `metadata.resourceVersion`), if any.
    pub fn mod_revision(&self) -> Option<i64> {
        mod_revision(self.metadata())
    }
}

/// The key of an object of `kind` with `meta`.
pub fn meta_key(kind: &'static str, meta: &ObjectMeta) -> Result<ObjectKey, ObjectError> {
    let name = meta.name.as_deref().ok_or(ObjectError::NoName { kind })?;
    Ok(ObjectKey::new(kind, meta.namespace.as_deref(), name)?)
}

/// `metadata.resourceVersion` read as the etcd `mod_revision` it is.
pub fn mod_revision(meta: &ObjectMeta) -> Option<i64> {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
}
