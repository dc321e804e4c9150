//! The etcd v3 gRPC API over a [`Cache`]: services KV, Watch, Lease, Cluster
//! (MemberList) and Maintenance (Status, Alarm list). Calls kommit does not
//! support (membership changes, defragment, hash, snapshot, move-leader, the
//! whole Auth service) answer `Unimplemented` with a message.
//!
//! ```no_run
//! # async fn f(cache: kommit_cache::Cache) -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:2379").await?;
//! let opts = kommit_cache::grpc::ServeOptions::for_listener(&listener)?;
//! kommit_cache::grpc::serve(cache, listener, opts, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod convert;

use std::future::Future;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::engine::Cache;
use crate::error::Error;
use crate::types::*;
use crate::watch::CANCELED_BY_CLIENT;
use convert::*;

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

use pb::etcdserverpb as epb;

/// The etcd version reported by `Status` (the v3 API level served).
pub const ETCD_API_VERSION: &str = "3.4.0";

/// Bytes a gRPC message may exceed `max_request_bytes` by (etcd's allowance for
/// the envelope); larger messages are refused by the transport.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// How the server describes itself.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Member name (`etcdctl member list`).
    pub name: String,
    /// Client URLs advertised in the member list.
    pub client_urls: Vec<String>,
}

impl ServeOptions {
    /// Advertises the listener's own address.
    pub fn for_listener(listener: &tokio::net::TcpListener) -> std::io::Result<ServeOptions> {
        let addr = listener.local_addr()?;
        Ok(ServeOptions {
            name: "kommit".into(),
            client_urls: vec![format!("http://{addr}")],
        })
    }
}

#[derive(Clone)]
struct Svc {
    cache: Cache,
    headers: Headers,
    opts: ServeOptions,
}

impl Svc {
    fn header(&self) -> Option<epb::ResponseHeader> {
        self.headers.at(self.cache.current_revision())
    }

    fn check_size(&self, len: usize) -> Result<(), Status> {
        let limit = self.cache.options().max_request_bytes;
        if len > limit {
            return Err(status(&Error::RequestTooLarge { size: len, limit }));
        }
        Ok(())
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl epb::kv_server::Kv for Svc {
    async fn range(
        &self,
        req: Request<epb::RangeRequest>,
    ) -> Result<Response<epb::RangeResponse>, Status> {
        let r = range_in(req.into_inner())?;
        let resp = self.cache.range(r).await.map_err(|e| status(&e))?;
        Ok(Response::new(self.headers.range_out(resp)))
    }

    async fn put(
        &self,
        req: Request<epb::PutRequest>,
    ) -> Result<Response<epb::PutResponse>, Status> {
        let req = req.into_inner();
        self.check_size(prost::Message::encoded_len(&req))?;
        let resp = self.cache.put(put_in(req)).await.map_err(|e| status(&e))?;
        Ok(Response::new(self.headers.put_out(resp)))
    }

    async fn delete_range(
        &self,
        req: Request<epb::DeleteRangeRequest>,
    ) -> Result<Response<epb::DeleteRangeResponse>, Status> {
        let resp = self
            .cache
            .delete_range(delete_in(req.into_inner()))
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(self.headers.delete_out(resp)))
    }

    async fn txn(
        &self,
        req: Request<epb::TxnRequest>,
    ) -> Result<Response<epb::TxnResponse>, Status> {
        let req = req.into_inner();
        self.check_size(prost::Message::encoded_len(&req))?;
        let t = txn_in(req)?;
        let resp = self.cache.txn(t).await.map_err(|e| status(&e))?;
        Ok(Response::new(self.headers.txn_out(resp)))
    }

    async fn compact(
        &self,
        req: Request<epb::CompactionRequest>,
    ) -> Result<Response<epb::CompactionResponse>, Status> {
        // Compaction is applied before it is acknowledged, so `physical` holds always.
        let resp = self
            .cache
            .compact(req.into_inner().revision)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(epb::CompactionResponse {
            header: self.headers.at(resp.revision),
        }))
    }
}

fn filters_in(f: &[i32]) -> Vec<WatchFilter> {
    use epb::watch_create_request::FilterType;
    f.iter()
        .filter_map(|x| match FilterType::try_from(*x) {
            Ok(FilterType::Noput) => Some(WatchFilter::NoPut),
            Ok(FilterType::Nodelete) => Some(WatchFilter::NoDelete),
            Err(_) => None,
        })
        .collect()
}

impl Svc {
    fn watch_out(&self, r: WatchResponse) -> epb::WatchResponse {
        let reason = if r.cancel_reason == CANCELED_BY_CLIENT {
            String::new()
        } else {
            r.cancel_reason
        };
        epb::WatchResponse {
            header: self.headers.at(r.revision),
            watch_id: r.watch_id,
            created: false,
            canceled: r.canceled,
            compact_revision: r.compact_revision,
            cancel_reason: reason,
            fragment: false,
            events: r.events.into_iter().map(event_out).collect(),
        }
    }

    /// One Watch stream: many watchers multiplexed, as etcd's serverWatchStream.
    async fn watch_stream(
        self,
        mut inbound: Streaming<epb::WatchRequest>,
        tx: mpsc::Sender<Result<epb::WatchResponse, Status>>,
    ) {
        use epb::watch_request::RequestUnion as U;
        let mut watchers: StreamMap<i64, crate::Watcher> = StreamMap::new();
        let mut next_id = 0i64;
        loop {
            tokio::select! {
                msg = inbound.message() => {
                    let m = match msg {
                        Ok(Some(m)) => m,
                        Ok(None) => return,
                        Err(e) => {
                            tracing::debug!("watch stream ended: {e}");
                            return;
                        }
                    };
                    let out = match m.request_union {
                        Some(U::CreateRequest(c)) => {
                            let mut id = c.watch_id;
                            if id == 0 {
                                while watchers.contains_key(&next_id) {
                                    next_id += 1;
                                }
                                id = next_id;
                                next_id += 1;
                            }
                            if watchers.contains_key(&id) {
                                Some(epb::WatchResponse {
                                    header: self.header(),
                                    watch_id: id,
                                    created: true,
                                    canceled: true,
                                    cancel_reason: "mvcc: duplicate watch ID provided on the WatchStream".into(),
                                    ..Default::default()
                                })
                            } else {
                                let req = WatchRequest {
                                    key: c.key,
                                    range_end: c.range_end,
                                    start_revision: c.start_revision,
                                    progress_notify: c.progress_notify,
                                    filters: filters_in(&c.filters),
                                    prev_kv: c.prev_kv,
                                };
                                // `created` goes out before anything the watcher sends.
                                let created = epb::WatchResponse { header: self.header(), watch_id: id, created: true, ..Default::default() };
                                if tx.send(Ok(created)).await.is_err() {
                                    return;
                                }
                                watchers.insert(id, self.cache.watch(req, id));
                                None
                            }
                        }
                        Some(U::CancelRequest(c)) => {
                            if let Some((_, w)) = watchers.iter().find(|(k, _)| *k == c.watch_id) {
                                w.cancel();
                            }
                            None
                        }
                        Some(U::ProgressRequest(_)) => {
                            if watchers.is_empty() {
                                Some(epb::WatchResponse { header: self.header(), watch_id: -1, ..Default::default() })
                            } else {
                                for (_, w) in watchers.iter() {
                                    w.request_progress();
                                }
                                None
                            }
                        }
                        None => None,
                    };
                    if let Some(out) = out
                        && tx.send(Ok(out)).await.is_err()
                    {
                        return;
                    }
                }
                Some((_, resp)) = watchers.next(), if !watchers.is_empty() => {
                    if tx.send(Ok(self.watch_out(resp))).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[tonic::async_trait]
impl epb::watch_server::Watch for Svc {
    type WatchStream = BoxStream<epb::WatchResponse>;

    async fn watch(
        &self,
        req: Request<Streaming<epb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(self.clone().watch_stream(req.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl epb::lease_server::Lease for Svc {
    async fn lease_grant(
        &self,
        req: Request<epb::LeaseGrantRequest>,
    ) -> Result<Response<epb::LeaseGrantResponse>, Status> {
        let r = req.into_inner();
        let resp = self
            .cache
            .lease_grant(r.ttl, r.id)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(epb::LeaseGrantResponse {
            header: self.headers.at(resp.revision),
            id: resp.id,
            ttl: resp.ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<epb::LeaseRevokeRequest>,
    ) -> Result<Response<epb::LeaseRevokeResponse>, Status> {
        let rev = self
            .cache
            .lease_revoke(req.into_inner().id)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(epb::LeaseRevokeResponse {
            header: self.headers.at(rev),
        }))
    }

    type LeaseKeepAliveStream = BoxStream<epb::LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<epb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let svc = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(r)) = inbound.message().await {
                // A lease that does not exist answers TTL 0, as etcd does.
                let ttl = match svc.cache.lease_keep_alive(r.id).await {
                    Ok(k) => k.ttl,
                    Err(_) => 0,
                };
                let resp = epb::LeaseKeepAliveResponse {
                    header: svc.header(),
                    id: r.id,
                    ttl,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<epb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<epb::LeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        let t = self
            .cache
            .lease_time_to_live(r.id, r.keys)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(epb::LeaseTimeToLiveResponse {
            header: self.headers.at(t.revision),
            id: t.id,
            ttl: t.ttl,
            granted_ttl: t.granted_ttl,
            keys: t.keys,
        }))
    }

    async fn lease_leases(
        &self,
        _req: Request<epb::LeaseLeasesRequest>,
    ) -> Result<Response<epb::LeaseLeasesResponse>, Status> {
        let ids = self.cache.lease_leases().await.map_err(|e| status(&e))?;
        Ok(Response::new(epb::LeaseLeasesResponse {
            header: self.header(),
            leases: ids.into_iter().map(|id| epb::LeaseStatus { id }).collect(),
        }))
    }
}

fn single_member(what: &str) -> Status {
    Status::unimplemented(format!(
        "kommit's cache is a single member: {what} is not supported"
    ))
}

#[tonic::async_trait]
impl epb::cluster_server::Cluster for Svc {
    async fn member_add(
        &self,
        _: Request<epb::MemberAddRequest>,
    ) -> Result<Response<epb::MemberAddResponse>, Status> {
        Err(single_member("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _: Request<epb::MemberRemoveRequest>,
    ) -> Result<Response<epb::MemberRemoveResponse>, Status> {
        Err(single_member("MemberRemove"))
    }

    async fn member_update(
        &self,
        _: Request<epb::MemberUpdateRequest>,
    ) -> Result<Response<epb::MemberUpdateResponse>, Status> {
        Err(single_member("MemberUpdate"))
    }

    async fn member_list(
        &self,
        _: Request<epb::MemberListRequest>,
    ) -> Result<Response<epb::MemberListResponse>, Status> {
        Ok(Response::new(epb::MemberListResponse {
            header: self.header(),
            members: vec![epb::Member {
                id: self.headers.member_id,
                name: self.opts.name.clone(),
                peer_ur_ls: Vec::new(),
                client_ur_ls: self.opts.client_urls.clone(),
                is_learner: false,
            }],
        }))
    }

    async fn member_promote(
        &self,
        _: Request<epb::MemberPromoteRequest>,
    ) -> Result<Response<epb::MemberPromoteResponse>, Status> {
        Err(single_member("MemberPromote"))
    }
}

#[tonic::async_trait]
impl epb::maintenance_server::Maintenance for Svc {
    async fn alarm(
        &self,
        req: Request<epb::AlarmRequest>,
    ) -> Result<Response<epb::AlarmResponse>, Status> {
        if req.into_inner().action != epb::alarm_request::AlarmAction::Get as i32 {
            return Err(Status::unimplemented(
                "kommit's cache raises no alarms: only listing them (GET) is supported",
            ));
        }
        Ok(Response::new(epb::AlarmResponse {
            header: self.header(),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _: Request<epb::StatusRequest>,
    ) -> Result<Response<epb::StatusResponse>, Status> {
        let s = self.cache.status();
        Ok(Response::new(epb::StatusResponse {
            header: self.headers.at(s.revision),
            version: ETCD_API_VERSION.into(),
            db_size: s.db_size,
            leader: s.member_id,
            raft_index: s.applied_index,
            raft_term: 1,
            raft_applied_index: s.applied_index,
            errors: Vec::new(),
            db_size_in_use: s.db_size_in_use,
            is_learner: false,
        }))
    }

    async fn defragment(
        &self,
        _: Request<epb::DefragmentRequest>,
    ) -> Result<Response<epb::DefragmentResponse>, Status> {
        Err(Status::unimplemented(
            "kommit's cache has no backend file to defragment (snapshots rewrite the data directory)",
        ))
    }

    async fn hash(
        &self,
        _: Request<epb::HashRequest>,
    ) -> Result<Response<epb::HashResponse>, Status> {
        Err(Status::unimplemented("kommit's cache does not serve Hash"))
    }

    async fn hash_kv(
        &self,
        _: Request<epb::HashKvRequest>,
    ) -> Result<Response<epb::HashKvResponse>, Status> {
        Err(Status::unimplemented(
            "kommit's cache does not serve HashKV",
        ))
    }

    type SnapshotStream = BoxStream<epb::SnapshotResponse>;

    async fn snapshot(
        &self,
        _: Request<epb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(Status::unimplemented(
            "kommit's cache does not stream bbolt snapshots; copy its data directory instead",
        ))
    }

    async fn move_leader(
        &self,
        _: Request<epb::MoveLeaderRequest>,
    ) -> Result<Response<epb::MoveLeaderResponse>, Status> {
        Err(single_member("MoveLeader"))
    }
}

/// The gRPC services of a cache, as tonic routes (to serve, or to merge with
/// other services). Paths no service knows (the Auth service, for one) answer
/// `Unimplemented` naming the method.
pub fn routes(cache: Cache, opts: ServeOptions) -> tonic::service::Routes {
    let status = cache.status();
    let max_msg = cache.options().max_request_bytes + GRPC_OVERHEAD_BYTES;
    let svc = Svc {
        cache,
        headers: Headers {
            cluster_id: status.cluster_id,
            member_id: status.member_id,
        },
        opts,
    };
    let mut b = tonic::service::Routes::builder();
    b.add_service(epb::kv_server::KvServer::new(svc.clone()).max_decoding_message_size(max_msg))
        .add_service(
            epb::watch_server::WatchServer::new(svc.clone()).max_decoding_message_size(max_msg),
        )
        .add_service(
            epb::lease_server::LeaseServer::new(svc.clone()).max_decoding_message_size(max_msg),
        )
        .add_service(
            epb::cluster_server::ClusterServer::new(svc.clone()).max_decoding_message_size(max_msg),
        )
        .add_service(
            epb::maintenance_server::MaintenanceServer::new(svc).max_decoding_message_size(max_msg),
        );
    let router = b
        .routes()
        .into_axum_router()
        .fallback(|uri: tonic::codegen::http::Uri| async move {
            Status::unimplemented(format!("kommit's cache does not serve {}", uri.path()))
                .into_http::<tonic::body::Body>()
        })
        .layer(axum::middleware::from_fn(name_unimplemented));
    tonic::service::Routes::from(router)
}

/// Unknown methods of known services answer Unimplemented without a message;
/// this names the method, as the fallback does for unknown services.
async fn name_unimplemented(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path().to_owned();
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    if headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"12")
        && !headers.contains_key("grpc-message")
    {
        // grpc-message is percent-encoded; method paths are plain ASCII.
        let msg = format!("kommit's cache does not serve {path}").replace('%', "%25");
        if let Ok(v) = tonic::codegen::http::HeaderValue::from_str(&msg) {
            headers.insert("grpc-message", v);
        }
    }
    resp
}

/// Serves the etcd v3 API of `cache` on `listener` until `shutdown` completes.
pub async fn serve(
    cache: Cache,
    listener: tokio::net::TcpListener,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpListenerStream::new(listener).map(|s| {
        s.inspect(|s| {
            // Small requests and answers: do not wait to fill packets.
            if let Err(e) = s.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY: {e}");
            }
        })
    });
    tonic::transport::Server::builder()
        .add_routes(routes(cache, opts))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
