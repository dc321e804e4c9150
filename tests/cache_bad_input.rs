#![allow(clippy::unwrap_used)]
//! Bad input gets a clear error, never a hang or a crash: malformed gRPC
//! messages, values over the size limit, invalid ranges, watches on compacted
//! revisions, leases that do not exist, oversized txns.

mod cache_support;

use bytes::{Buf, BufMut, Bytes};
use cache_support::*;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Sends and receives raw bytes, to put malformed protobuf on the wire.
#[derive(Default, Clone)]
struct RawCodec;

struct Raw;

impl Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

async fn raw_call(
    addr: std::net::SocketAddr,
    path: &'static str,
    body: &[u8],
) -> Result<Bytes, tonic::Status> {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(Bytes::copy_from_slice(body)),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

fn stderr_of(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kommit::start(dir.path());
    let ep = k.endpoint();

    // Malformed protobuf: a field tag with an invalid wire type, then truncated bytes.
    for garbage in [&[0x0f, 0xff, 0xff][..], &[0x0a, 0x50, 0x61][..]] {
        let e = raw_call(k.addr, "/etcdserverpb.KV/Put", garbage)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal, "{e:?}");
        assert!(e.message().contains("decode"), "{e:?}");
    }
    let e = raw_call(k.addr, "/etcdserverpb.Lease/LeaseGrant", &[0xff; 7])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal, "{e:?}");
    // An unknown method names itself.
    let e = raw_call(k.addr, "/etcdserverpb.KV/Explode", b"")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    assert!(e.message().contains("/etcdserverpb.KV/Explode"), "{e:?}");
    // The server is still fine.
    assert_eq!(etcdctl_ok(&ep, &["put", "k", "v"]).trim(), "OK");

    // Values over the limit (1.5 MiB, etcd's default --max-request-bytes).
    let big = "x".repeat(1_600_000);
    let out = etcdctl(&ep, &["put", "/registry/configmaps/ns/big"], Some(&big));
    assert!(stderr_of(&out).contains("etcdserver: request is too large"));
    // Past the gRPC envelope allowance the transport refuses the message.
    let mut c = connect(k.addr).await;
    let e =
        c.kv.put(put("/registry/configmaps/ns/huge", &"y".repeat(3 << 20)))
            .await
            .unwrap_err();
    assert!(e.message().contains("too large"), "{e:?}");
    assert_eq!(
        etcdctl_ok(
            &ep,
            &["get", "/registry/configmaps/", "--prefix", "--keys-only"]
        ),
        ""
    );

    // Invalid ranges.
    let e = c.kv.range(range("")).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: key is not provided"
        )
    );
    let e =
        c.kv.range(epb::RangeRequest {
            sort_order: 9,
            ..range("k")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let backwards = epb::RangeRequest {
        range_end: "a".as_bytes().to_vec().into(),
        ..range("z")
    };
    assert_eq!(
        c.kv.range(backwards).await.unwrap().into_inner().count,
        0,
        "an end before the start is empty, as in etcd"
    );
    let e =
        c.kv.delete_range(epb::DeleteRangeRequest::default())
            .await
            .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let out = etcdctl(&ep, &["get", "k", "--rev=99999"], None);
    assert!(stderr_of(&out).contains("required revision is a future revision"));

    // Too many operations in one txn.
    let ops: Vec<epb::RequestOp> = (0..129)
        .map(|i| epb::RequestOp {
            request: Some(epb::request_op::Request::RequestPut(put(
                &format!("t{i}"),
                "v",
            ))),
        })
        .collect();
    let e =
        c.kv.txn(epb::TxnRequest {
            compare: vec![],
            success: ops,
            failure: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.message(),
        "etcdserver: too many operations in txn request"
    );
    let e =
        c.kv.txn(epb::TxnRequest {
            compare: vec![],
            success: vec![epb::RequestOp { request: None }],
            failure: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // Watch on a compacted revision.
    for i in 0..5 {
        etcdctl_ok(&ep, &["put", "w", &i.to_string()]);
    }
    etcdctl_ok(&ep, &["compaction", "5"]);
    let out = etcdctl(&ep, &["watch", "w", "--rev=2"], None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("required revision has been compacted"),
        "{text}"
    );

    // Leases that do not exist.
    let out = etcdctl(&ep, &["put", "x", "1", "--lease=1234"], None);
    assert!(stderr_of(&out).contains("requested lease not found"));
    let out = etcdctl(&ep, &["lease", "keep-alive", "--once", "1234"], None);
    // The server answers TTL 0; the client reports the lease missing.
    assert!(stderr_of(&out).contains("requested lease not found"));
    assert!(etcdctl_ok(&ep, &["lease", "timetolive", "1234"]).contains("already expired"));
    let out = etcdctl(&ep, &["lease", "revoke", "1234"], None);
    assert!(stderr_of(&out).contains("requested lease not found"));
    let out = etcdctl(&ep, &["lease", "grant", "9000000001"], None);
    assert!(stderr_of(&out).contains("too large lease TTL"));
}
