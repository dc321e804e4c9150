//! WATCH streams from the cache, and `pods/log` streams from the [`LogSource`](crate::LogSource).
//!
//! Each watch runs as one task that forwards cache events as newline-delimited JSON
//! `{"type": ..., "object": ...}` (in Table form when asked). The task ends when the
//! client goes away (the response body is dropped), the watch times out
//! (`timeoutSeconds`), or the cache ends the watch; [`active_watches`] counts the tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use kommit_cache::{EventType, WatchRequest};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::LogRequest;
use crate::handler::{Selectors, Shared, Target};
use crate::objects;
use crate::status::ApiError;
use crate::table::{self, Include};

static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Number of watch tasks running in this process.
pub fn active_watches() -> usize {
    ACTIVE.load(Ordering::SeqCst)
}

struct Counted;
impl Counted {
    fn new() -> Self {
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        Counted
    }
}
impl Drop for Counted {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

fn encode_event(ty: &str, object: Value) -> Bytes {
    let mut b = serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

pub(crate) async fn watch(
    s: &Shared,
    t: &Target,
    query: &HashMap<String, String>,
    accept: &str,
) -> Result<Response, ApiError> {
    let sel = Selectors::from_query(query, t.res.info.kind)?;
    let as_table = table::wants_table(accept);
    let include = Include::parse(query.get("includeObject").map(String::as_str))
        .map_err(ApiError::bad_request)?;
    let timeout = match query.get("timeoutSeconds").map(String::as_str) {
        None | Some("") => None,
        Some(x) => Some(std::time::Duration::from_secs(x.parse::<u64>().map_err(
            |_| ApiError::bad_request(format!("timeoutSeconds: {x:?} is not a number of seconds")),
        )?)),
    };
    let rv = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(x) => Some(x.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!("resourceVersion: {x:?} is not a resource version"))
        })?),
    };
    let compacted = s.api.cache.compact_revision();
    let mut initial = Vec::new();
    let start = match rv {
        Some(rv) if rv < compacted => {
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({compacted})"
            )));
        }
        Some(rv) if rv > s.api.cache.current_revision() => {
            return Err(ApiError::gone(format!(
                "too large resource version: {rv}, current: {}",
                s.api.cache.current_revision()
            )));
        }
        Some(rv) => rv + 1,
        None => {
            // No resourceVersion: every current object as ADDED, then the changes.
            let (rev, items) = objects::list(&s.api, t.res, t.namespace.as_deref(), 0).await?;
            initial = items.into_values().filter(|v| sel.matches(v)).collect();
            rev + 1
        }
    };
    let prefix = match t.namespace.as_deref().filter(|_| t.res.info.namespaced) {
        Some(ns) => t.res.info.namespace_prefix(ns),
        None => t.res.info.prefix(),
    };
    let mut watcher = s.api.cache.watch(
        WatchRequest::prefix(prefix)
            .from_revision(start)
            .with_prev_kv(),
        0,
    );
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let res = t.res;
    let api = s.api.clone();
    let now = jiff::Timestamp::now;
    let render = move |v: Value| -> Value {
        if as_table {
            let meta = json!({"resourceVersion": v.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))});
            serde_json::to_value(table::table(res.info.kind, [&v], include, meta, now()))
                .expect("a Table of JSON values serialises")
        } else {
            v
        }
    };
    let counted = Counted::new();
    tokio::spawn(async move {
        let _counted = counted;
        let deadline = async {
            match timeout {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        for v in initial {
            if tx.send(encode_event("ADDED", render(v))).await.is_err() {
                return;
            }
        }
        loop {
            let resp = tokio::select! {
                _ = tx.closed() => return,
                _ = &mut deadline => return,
                r = watcher.recv() => r,
            };
            let Some(resp) = resp else { return };
            if resp.canceled {
                let e = if resp.compact_revision > 0 {
                    ApiError::gone(format!(
                        "too old resource version: {} ({})",
                        start - 1,
                        resp.compact_revision
                    ))
                } else {
                    ApiError::internal(format!("watch ended: {}", resp.cancel_reason))
                };
                let _ = tx.send(encode_event("ERROR", e.to_status())).await;
                return;
            }
            for ev in resp.events {
                let (ty, kv) = match ev.kind {
                    EventType::Put if ev.kv.create_revision == ev.kv.mod_revision => {
                        ("ADDED", ev.kv)
                    }
                    EventType::Put => ("MODIFIED", ev.kv),
                    EventType::Delete => match ev.prev_kv {
                        Some(mut prev) => {
                            prev.mod_revision = ev.kv.mod_revision;
                            ("DELETED", prev)
                        }
                        None => continue,
                    },
                };
                let Some(v) = objects::decode(&kv, res) else {
                    continue;
                };
                let v = merge_desired(&api, res, v);
                if !sel.matches(&v) {
                    continue;
                }
                if tx.send(encode_event(ty, render(v))).await.is_err() {
                    return;
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
    let mut r = Response::new(Body::from_stream(stream));
    let ct = if as_table {
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    } else {
        "application/json"
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    Ok(r)
}

fn merge_desired(
    api: &crate::ApiState,
    res: &'static crate::discovery::Resource,
    v: Value,
) -> Value {
    let applied = api.applied.borrow().clone();
    let Some(applied) = applied else { return v };
    let (ns, name) = objects::ident(&v);
    let key = kommit_desired::ObjectKey {
        group: res.info.group.into(),
        kind: res.info.kind.into(),
        namespace: res.info.namespaced.then(|| ns.into()),
        name: name.into(),
    };
    match applied.snapshot.objects.get(&key) {
        Some(d) => objects::merge(d, Some(v), &applied),
        None => v,
    }
}

pub(crate) async fn logs(
    s: &Shared,
    t: &Target,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let ns = t.namespace.clone().unwrap_or_default();
    let (_, pod) = objects::get(&s.api, t.res, Some(&ns), name).await?;
    let pod = pod.ok_or_else(|| ApiError::not_found("pods", "", name))?;
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            pod.pointer("/spec/initContainers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let container = match query.get("container").filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(c) => c.clone(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None => match pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            Some([one]) => one
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                )));
            }
        },
    };
    let bool_param = |k: &str| matches!(query.get(k).map(String::as_str), Some("true" | "1"));
    let tail_lines = match query.get("tailLines").map(String::as_str) {
        None | Some("") => None,
        Some(x) => Some(
            x.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("tailLines: {x:?} is not a number")))?,
        ),
    };
    // `--limit-bytes`: the first N bytes of what the source gives.
    let mut limit_bytes = match query.get("limitBytes").map(String::as_str) {
        None | Some("") => None,
        Some(x) => match x.parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limitBytes: {x:?} is not a positive number"
                )));
            }
        },
    };
    let source = s.api.logs.clone().ok_or_else(|| {
        ApiError::bad_request(format!(
            "logs are not available: this kommit process runs no node agent for pod {ns}/{name}"
        ))
    })?;
    let request = LogRequest {
        namespace: ns.clone(),
        pod: name.to_string(),
        uid: pod
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        container,
        follow: bool_param("follow"),
        tail_lines,
        previous: bool_param("previous"),
    };
    let stream = source.logs(request).await.map_err(|e| match e {
        crate::LogError::NotFound(m) => ApiError::bad_request(m),
        crate::LogError::Other(m) => ApiError::internal(m),
    })?;
    let counted = Counted::new();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let _counted = counted;
        let mut stream = stream;
        loop {
            let item = tokio::select! {
                _ = tx.closed() => return,
                i = stream.next() => i,
            };
            let Some(mut item) = item else { return };
            let mut last = false;
            if let (Some(left), Ok(bytes)) = (limit_bytes.as_mut(), item.as_mut()) {
                let len = bytes.len() as u64;
                if len >= *left {
                    bytes.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                    last = true;
                } else {
                    *left -= len;
                }
            }
            if tx.send(item).await.is_err() || last {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(r)
}
