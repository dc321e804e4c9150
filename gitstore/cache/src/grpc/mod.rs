//! The etcd v3 gRPC API over a [`Cache`](crate::Cache).

/// Generated from kommit's statement of etcd's protos (see `proto/`).
#[allow(clippy::all, missing_docs, clippy::unwrap_used)]
pub mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}
