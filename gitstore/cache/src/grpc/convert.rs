//! Conversions between the wire types (`pb`) and the in-process types.

use super::pb::etcdserverpb as epb;
use super::pb::mvccpb;
use crate::error::{Error, ErrorCode};
use crate::types::*;

/// The gRPC status for an error: etcd's code and exact message.
pub fn status(e: &Error) -> tonic::Status {
    let code = match e.code() {
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::OutOfRange => tonic::Code::OutOfRange,
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::Internal => tonic::Code::Internal,
    };
    tonic::Status::new(code, e.etcd_message())
}

pub fn invalid_sort() -> tonic::Status {
    tonic::Status::invalid_argument("etcdserver: invalid sort option")
}

pub fn kv_out(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn event_out(e: Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            EventType::Put => mvccpb::event::EventType::Put as i32,
            EventType::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv_out(e.kv)),
        prev_kv: e.prev_kv.map(kv_out),
    }
}

pub fn range_in(r: epb::RangeRequest) -> Result<RangeRequest, tonic::Status> {
    use epb::range_request::{SortOrder as O, SortTarget as T};
    let sort_order = match O::try_from(r.sort_order).map_err(|_| invalid_sort())? {
        O::None => SortOrder::None,
        O::Ascend => SortOrder::Ascend,
        O::Descend => SortOrder::Descend,
    };
    let sort_target = match T::try_from(r.sort_target).map_err(|_| invalid_sort())? {
        T::Key => SortTarget::Key,
        T::Version => SortTarget::Version,
        T::Create => SortTarget::Create,
        T::Mod => SortTarget::Mod,
        T::Value => SortTarget::Value,
    };
    Ok(RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn put_in(p: epb::PutRequest) -> PutRequest {
    PutRequest {
        key: p.key,
        value: p.value,
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

pub fn delete_in(d: epb::DeleteRangeRequest) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: d.key,
        range_end: d.range_end,
        prev_kv: d.prev_kv,
    }
}

fn compare_in(c: epb::Compare) -> Result<Compare, tonic::Status> {
    use epb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => CompareResult::Equal,
        Ok(R::Greater) => CompareResult::Greater,
        Ok(R::Less) => CompareResult::Less,
        Ok(R::NotEqual) => CompareResult::NotEqual,
        Err(_) => {
            return Err(tonic::Status::invalid_argument(
                "etcdserver: invalid compare result",
            ));
        }
    };
    let int = |u: &Option<U>| -> i64 {
        match u {
            Some(U::Version(v) | U::CreateRevision(v) | U::ModRevision(v) | U::Lease(v)) => *v,
            _ => 0,
        }
    };
    // The target names the field; the operand is read from the union as etcd does.
    let target = match T::try_from(c.target) {
        Ok(T::Version) => CompareTarget::Version(int(&c.target_union)),
        Ok(T::Create) => CompareTarget::CreateRevision(int(&c.target_union)),
        Ok(T::Mod) => CompareTarget::ModRevision(int(&c.target_union)),
        Ok(T::Lease) => CompareTarget::Lease(int(&c.target_union)),
        Ok(T::Value) => CompareTarget::Value(match c.target_union {
            Some(U::Value(v)) => v,
            _ => bytes::Bytes::new(),
        }),
        Err(_) => {
            return Err(tonic::Status::invalid_argument(
                "etcdserver: invalid compare target",
            ));
        }
    };
    Ok(Compare {
        key: c.key,
        range_end: c.range_end,
        result,
        target,
    })
}

fn op_in(op: epb::RequestOp) -> Result<RequestOp, tonic::Status> {
    use epb::request_op::Request as R;
    Ok(match op.request {
        Some(R::RequestRange(r)) => RequestOp::Range(range_in(r)?),
        Some(R::RequestPut(p)) => RequestOp::Put(put_in(p)),
        Some(R::RequestDeleteRange(d)) => RequestOp::DeleteRange(delete_in(d)),
        Some(R::RequestTxn(t)) => RequestOp::Txn(txn_in(t)?),
        // An empty op is refused, with etcd's error for it.
        None => return Err(status(&Error::KeyNotFound)),
    })
}

pub fn txn_in(t: epb::TxnRequest) -> Result<TxnRequest, tonic::Status> {
    let ops = |v: Vec<epb::RequestOp>| -> Result<Vec<RequestOp>, tonic::Status> {
        v.into_iter().map(op_in).collect()
    };
    Ok(TxnRequest {
        compare: t
            .compare
            .into_iter()
            .map(compare_in)
            .collect::<Result<_, _>>()?,
        success: ops(t.success)?,
        failure: ops(t.failure)?,
    })
}

/// Builds response headers for one server.
#[derive(Debug, Clone, Copy)]
pub struct Headers {
    pub cluster_id: u64,
    pub member_id: u64,
}

impl Headers {
    pub fn at(&self, revision: i64) -> Option<epb::ResponseHeader> {
        Some(epb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: 1,
        })
    }

    pub fn range_out(&self, r: RangeResponse) -> epb::RangeResponse {
        epb::RangeResponse {
            header: self.at(r.revision),
            kvs: r.kvs.into_iter().map(kv_out).collect(),
            more: r.more,
            count: r.count,
        }
    }

    pub fn put_out(&self, r: PutResponse) -> epb::PutResponse {
        epb::PutResponse {
            header: self.at(r.revision),
            prev_kv: r.prev_kv.map(kv_out),
        }
    }

    pub fn delete_out(&self, r: DeleteRangeResponse) -> epb::DeleteRangeResponse {
        epb::DeleteRangeResponse {
            header: self.at(r.revision),
            deleted: r.deleted,
            prev_kvs: r.prev_kvs.into_iter().map(kv_out).collect(),
        }
    }

    pub fn txn_out(&self, r: TxnResponse) -> epb::TxnResponse {
        epb::TxnResponse {
            header: self.at(r.revision),
            succeeded: r.succeeded,
            responses: inner_ops(r.responses),
        }
    }
}

/// Responses inside a txn, as etcd sends them: their headers carry only the
/// revision, and a nested txn's header is empty.
fn inner_ops(ops: Vec<ResponseOp>) -> Vec<epb::ResponseOp> {
    use epb::response_op::Response as R;
    let h = |revision: i64| {
        Some(epb::ResponseHeader {
            revision,
            ..Default::default()
        })
    };
    ops.into_iter()
        .map(|op| epb::ResponseOp {
            response: Some(match op {
                ResponseOp::Range(x) => R::ResponseRange(epb::RangeResponse {
                    header: h(x.revision),
                    kvs: x.kvs.into_iter().map(kv_out).collect(),
                    more: x.more,
                    count: x.count,
                }),
                ResponseOp::Put(x) => R::ResponsePut(epb::PutResponse {
                    header: h(x.revision),
                    prev_kv: x.prev_kv.map(kv_out),
                }),
                ResponseOp::DeleteRange(x) => R::ResponseDeleteRange(epb::DeleteRangeResponse {
                    header: h(x.revision),
                    deleted: x.deleted,
                    prev_kvs: x.prev_kvs.into_iter().map(kv_out).collect(),
                }),
                ResponseOp::Txn(x) => R::ResponseTxn(epb::TxnResponse {
                    header: Some(epb::ResponseHeader::default()),
                    succeeded: x.succeeded,
                    responses: inner_ops(x.responses),
                }),
            }),
        })
        .collect()
}
