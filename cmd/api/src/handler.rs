//! Request routing: discovery, reads, watch, logs; writes refused.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;
use serde_json::{Value, json};

use crate::ApiState;
use crate::auth::Tokens;
use crate::discovery::{self, AGGREGATED_CONTENT_TYPE, Resource};
use crate::objects;
use crate::openapi;
use crate::select::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::table::{self, Include};

pub(crate) struct Shared {
    pub api: ApiState,
    pub tokens: Tokens,
}

/// The API as an axum `Router` (no TLS): every route, behind bearer-token authentication
/// with `tokens`.
pub fn app(state: ApiState, tokens: Tokens) -> Router {
    let shared = Arc::new(Shared { api: state, tokens });
    Router::new()
        .fallback(route)
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate))
        .with_state(shared)
}

async fn authenticate(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if matches!(path, "/healthz" | "/livez" | "/readyz") {
        return next.run(req).await;
    }
    let user = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .and_then(|t| s.tokens.authenticate(t.trim()));
    match user {
        Some(_) => next.run(req).await,
        None => {
            tracing::debug!(path, "unauthenticated request refused");
            ApiError::unauthorized().into_response()
        }
    }
}

fn json_response<T: Serialize>(code: StatusCode, v: &T, content_type: &'static str) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = (code, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn wants_yaml(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|a| a.trim().starts_with("application/yaml"))
}

fn object_response<T: Serialize>(v: &T, accept: &str) -> Response {
    if wants_yaml(accept)
        && let Ok(text) = serde_saphyr::to_string(v)
    {
        let mut r = (StatusCode::OK, text).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/yaml"),
        );
        return r;
    }
    json_response(StatusCode::OK, v, "application/json")
}

/// What a path under /api or /apis names.
#[derive(Debug)]
pub(crate) struct Target {
    pub res: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

fn unknown_resource(group: &str, version: &str, plural: &str) -> ApiError {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    ApiError::no_such_path(format!(
        "the server could not find the requested resource: {gv} has no resource {plural:?}"
    ))
}

/// What a path names. A write names any subresource (`scale`, `eviction`, ...): it is
/// refused with the Git message whatever it is.
fn parse_target(
    group: &str,
    version: &str,
    segs: &[&str],
    reading: bool,
) -> Result<Target, ApiError> {
    let find = |plural: &str| {
        discovery::find(group, version, plural)
            .ok_or_else(|| unknown_resource(group, version, plural))
    };
    let is_plural = |p: &str| discovery::find(group, version, p).is_some();
    let t = match segs {
        ["namespaces", ns, plural, rest @ ..] if is_plural(plural) && rest.len() <= 2 => {
            let res = find(plural)?;
            if !res.info.namespaced {
                return Err(ApiError::no_such_path(format!(
                    "{} is not namespaced: use /{}{version}/{}",
                    res.info.plural,
                    if group.is_empty() {
                        "api/".to_string()
                    } else {
                        format!("apis/{group}/")
                    },
                    res.info.plural
                )));
            }
            Target {
                res,
                namespace: Some(ns.to_string()),
                name: rest.first().map(|s| s.to_string()),
                sub: rest.get(1).map(|s| s.to_string()),
            }
        }
        [plural, rest @ ..] if rest.len() <= 2 => Target {
            res: find(plural)?,
            namespace: None,
            name: rest.first().map(|s| s.to_string()),
            sub: rest.get(1).map(|s| s.to_string()),
        },
        _ => {
            return Err(ApiError::no_such_path(format!(
                "the server could not find the requested resource: /{}",
                segs.join("/")
            )));
        }
    };
    if t.name.as_deref() == Some("") {
        return Err(ApiError::bad_request("empty object name"));
    }
    if t.res.info.namespaced && t.name.is_some() && t.namespace.is_none() {
        return Err(ApiError::no_such_path(format!(
            "{} is namespaced: GET /.../namespaces/<namespace>/{}/<name>",
            t.res.info.plural, t.res.info.plural
        )));
    }
    if let Some(sub) = &t.sub
        && reading
        && !t.res.subresources.contains(&sub.as_str())
    {
        return Err(ApiError::no_such_path(format!(
            "{} has no subresource {sub:?}",
            t.res.info.plural
        )));
    }
    Ok(t)
}

async fn route(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> = req.uri().query().map(url_pairs).unwrap_or_default();
    let headers = req.headers().clone();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let result = dispatch(&s, &method, &path, &query, &headers, &accept, req).await;
    match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, path, error = %e, "request failed");
            e.into_response()
        }
    }
}

fn url_pairs(q: &str) -> HashMap<String, String> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    s: &Shared,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    accept: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    let reading = *method == Method::GET || *method == Method::HEAD;
    match segs.as_slice() {
        ["healthz"] | ["livez"] | ["readyz"] => return Ok((StatusCode::OK, "ok").into_response()),
        ["openapi", "v2"] | ["swagger.json"] if reading => {
            return Ok(empty_openapi_v2(accept));
        }
        ["openapi", "v3"] if reading => {
            return openapi_v3(openapi::index(), None, query, headers, accept);
        }
        ["openapi", "v3", rest @ ..] if reading => {
            let path = rest.join("/");
            let doc = openapi::group_version(&path).ok_or_else(|| {
                ApiError::no_such_path(format!(
                    "no OpenAPI v3 document for {path:?}: GET /openapi/v3 lists the served group-versions"
                ))
            })?;
            return openapi_v3(doc.body.clone(), Some(&doc.hash), query, headers, accept);
        }
        ["openapi", ..] | ["swagger.json"] | ["swaggerapi", ..] => {
            return Err(ApiError::no_such_path(format!(
                "the server could not find the requested resource ({method} {path}): OpenAPI v3 is at /openapi/v3"
            )));
        }
        _ => {}
    }
    if reading {
        let aggregated = discovery::wants_aggregated(accept);
        let doc = match segs.as_slice() {
            ["version"] => Some((discovery::version(), false)),
            ["api"] if aggregated => Some((discovery::aggregated_core(), true)),
            ["api"] => Some((discovery::core_versions(), false)),
            ["apis"] if aggregated => Some((discovery::aggregated_groups(), true)),
            ["apis"] => Some((discovery::group_list(), false)),
            ["api", "v1"] => Some((
                discovery::resource_list("", "v1").unwrap_or(Value::Null),
                false,
            )),
            ["apis", g] => Some((
                discovery::group(g)
                    .ok_or_else(|| ApiError::no_such_path(format!("no API group {g:?}")))?,
                false,
            )),
            ["apis", g, v] => Some((
                discovery::resource_list(g, v).ok_or_else(|| {
                    ApiError::no_such_path(format!("no API group version {g}/{v}"))
                })?,
                false,
            )),
            _ => None,
        };
        if let Some((doc, agg)) = doc {
            let ct = if agg {
                AGGREGATED_CONTENT_TYPE
            } else {
                "application/json"
            };
            return Ok(json_response(StatusCode::OK, &doc, ct));
        }
    }
    // `kubectl describe namespace` lists these by path, without discovery: kommit
    // enforces no quotas or limit ranges, so there are none.
    if reading
        && let [
            "api",
            "v1",
            "namespaces",
            _,
            plural @ ("resourcequotas" | "limitranges"),
        ] = segs.as_slice()
    {
        let kind = if *plural == "resourcequotas" {
            "ResourceQuotaList"
        } else {
            "LimitRangeList"
        };
        let list = json!({
            "kind": kind,
            "apiVersion": "v1",
            "metadata": {"resourceVersion": s.api.cache.current_revision().to_string()},
            "items": [],
        });
        return Ok(object_response(&list, accept));
    }
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (g, v, rest),
        _ => {
            return Err(ApiError::no_such_path(format!(
                "the server could not find the requested resource ({method} {path})"
            )));
        }
    };
    let target = parse_target(group, version, rest, reading)?;
    if !reading {
        return Err(refuse_write(s, method, &target, req).await);
    }
    match (&target.name, &target.sub) {
        (Some(name), Some(sub)) if sub == "log" => {
            crate::watch::logs(s, &target, name, query).await
        }
        (Some(name), _) => get_one(s, &target, name, query, accept).await,
        (None, _) => {
            let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
            if watching {
                crate::watch::watch(s, &target, query, accept).await
            } else {
                list(s, &target, query, accept).await
            }
        }
    }
}

async fn get_one(
    s: &Shared,
    t: &Target,
    name: &str,
    query: &HashMap<String, String>,
    accept: &str,
) -> Result<Response, ApiError> {
    let (_, obj) = objects::get(&s.api, t.res, t.namespace.as_deref(), name).await?;
    let obj = obj.ok_or_else(|| ApiError::not_found(t.res.info.plural, t.res.info.group, name))?;
    if table::wants_table(accept) {
        let include = Include::parse(query.get("includeObject").map(String::as_str))
            .map_err(ApiError::bad_request)?;
        let meta = json!({"resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))});
        let t = table::table(
            t.res.info.kind,
            [&obj],
            include,
            meta,
            jiff::Timestamp::now(),
        );
        return Ok(json_response(
            StatusCode::OK,
            &t,
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        ));
    }
    Ok(object_response(&obj, accept))
}

/// OpenAPI v2 in protobuf, as kubectl asks for it (`Accept`)...
const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// ... and as the answer names it (a media type cannot contain `@`).
const OPENAPI_V2_PROTOBUF_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `/openapi/v2`: a valid document that defines no schema.
///
/// kubectl validates manifests against OpenAPI v2 before it sends a write, and refuses
/// to send anything when the document cannot be downloaded ("failed to download
/// openapi"). With a document that names no kind, it skips validation, sends the
/// request, and the user reads the server's answer: the refusal pointing to Git.
/// `kubectl explain` reads OpenAPI v3 ([`openapi`]), not this document.
fn empty_openapi_v2(accept: &str) -> Response {
    let title = "kommit (no schemas are served)";
    let version = concat!("v1.33.0-kommit.", env!("CARGO_PKG_VERSION"));
    if accept.contains(OPENAPI_V2_PROTOBUF) {
        // gnostic's openapi_v2.Document: swagger = 1, info = 2 (Info: title = 1, version = 2).
        fn field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
            out.push(tag << 3 | 2);
            let mut n = bytes.len();
            while n >= 0x80 {
                out.push((n as u8 & 0x7f) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
            out.extend_from_slice(bytes);
        }
        let mut info = Vec::new();
        field(&mut info, 1, title.as_bytes());
        field(&mut info, 2, version.as_bytes());
        let mut doc = Vec::new();
        field(&mut doc, 1, b"2.0");
        field(&mut doc, 2, &info);
        let mut r = (StatusCode::OK, doc).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(OPENAPI_V2_PROTOBUF_TYPE),
        );
        return r;
    }
    json_response(
        StatusCode::OK,
        &json!({
            "swagger": "2.0",
            "info": {"title": title, "version": version},
            "paths": {},
            "definitions": {},
        }),
        "application/json",
    )
}

/// An OpenAPI v3 answer (`/openapi/v3` or one group-version document), as
/// kube-apiserver gives it: JSON only (a client that accepts only protobuf gets 406),
/// `ETag` with the document's hash, and `Cache-Control: public, immutable` when the
/// request names the current hash (`?hash=`), as the URLs of `/openapi/v3` do.
fn openapi_v3(
    body: bytes::Bytes,
    hash: Option<&str>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    accept: &str,
) -> Result<Response, ApiError> {
    let json_ok = accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or_default().trim();
        matches!(media, "application/json" | "application/*" | "*/*" | "")
    });
    if !json_ok {
        return Err(ApiError::not_acceptable(format!(
            "OpenAPI v3 is served as application/json only, not {accept:?}"
        )));
    }
    let etag = hash.map(|h| format!("\"{h}\""));
    let matched = etag.as_deref().is_some_and(|etag| {
        headers
            .get(header::IF_NONE_MATCH)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| h.split(',').any(|t| t.trim() == etag))
    });
    let mut r = if matched {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, body).into_response()
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let immutable = hash.is_some() && query.get("hash").map(String::as_str) == hash;
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, immutable"
        } else {
            "no-cache, private"
        }),
    );
    if let Some(etag) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        h.insert(header::ETAG, etag);
    }
    Ok(r)
}

/// Selectors of a request.
pub(crate) struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn from_query(q: &HashMap<String, String>, kind: &str) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(
            q.get("fieldSelector").map(String::as_str).unwrap_or(""),
            kind,
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Selectors { labels, fields })
    }
    pub fn matches(&self, v: &Value) -> bool {
        self.labels.matches(v) && self.fields.matches(v)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    /// Cache revision of the first page.
    rv: i64,
    /// `group/plural` listed.
    r: String,
    /// Namespace listed ("" for all).
    ns: String,
    /// Last (namespace, name) returned.
    ns_last: String,
    name_last: String,
}

fn resource_id(res: &Resource) -> String {
    format!("{}/{}", res.info.group, res.info.plural)
}

fn decode_continue(token: &str, res: &Resource, ns: &str) -> Result<ContinueToken, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "continue token {token:?} is not valid for this list ({} in {:?})",
            res.info.plural, ns
        ))
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if t.r != resource_id(res) || t.ns != ns || t.rv <= 0 {
        return Err(bad());
    }
    Ok(t)
}

pub(crate) fn parse_limit(q: &HashMap<String, String>) -> Result<usize, ApiError> {
    match q.get("limit").map(String::as_str) {
        None | Some("") => Ok(0),
        Some(l) => {
            let n: i128 = l
                .parse()
                .map_err(|_| ApiError::bad_request(format!("limit: {l:?} is not an integer")))?;
            if n > i64::MAX as i128 || n < i64::MIN as i128 {
                return Err(ApiError::bad_request(format!("limit: {l} is out of range")));
            }
            Ok(if n <= 0 {
                0
            } else {
                n.min(usize::MAX as i128) as usize
            })
        }
    }
}

fn list_kind(res: &Resource) -> String {
    format!("{}List", res.info.kind)
}

async fn list(
    s: &Shared,
    t: &Target,
    query: &HashMap<String, String>,
    accept: &str,
) -> Result<Response, ApiError> {
    let sel = Selectors::from_query(query, t.res.info.kind)?;
    let limit = parse_limit(query)?;
    let ns = t.namespace.clone().unwrap_or_default();
    let cont = match query.get("continue").map(String::as_str) {
        None | Some("") => None,
        Some(c) => Some(decode_continue(c, t.res, &ns)?),
    };
    let include = Include::parse(query.get("includeObject").map(String::as_str))
        .map_err(ApiError::bad_request)?;
    let revision = cont.as_ref().map_or(0, |c| c.rv);
    let (rev, items) = objects::list(&s.api, t.res, t.namespace.as_deref(), revision).await?;
    let after = cont.map(|c| (c.ns_last, c.name_last));
    let mut selected: Vec<&Value> = Vec::new();
    let mut remaining = 0usize;
    let mut last: Option<&(String, String)> = None;
    let iter: Box<dyn Iterator<Item = (&(String, String), &Value)>> = match &after {
        Some(a) => Box::new(items.range((
            std::ops::Bound::Excluded(a.clone()),
            std::ops::Bound::Unbounded,
        ))),
        None => Box::new(items.iter()),
    };
    for (id, v) in iter {
        if !sel.matches(v) {
            continue;
        }
        if limit > 0 && selected.len() >= limit {
            remaining += 1;
            continue;
        }
        selected.push(v);
        last = Some(id);
    }
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if remaining > 0
        && let Some((ns_last, name_last)) = last
    {
        let token = ContinueToken {
            rv: rev,
            r: resource_id(t.res),
            ns: ns.clone(),
            ns_last: ns_last.clone(),
            name_last: name_last.clone(),
        };
        let bytes = serde_json::to_vec(&token).unwrap_or_default();
        meta["continue"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        meta["remainingItemCount"] = json!(remaining);
    }
    if table::wants_table(accept) {
        let tbl = table::table(
            t.res.info.kind,
            selected,
            include,
            meta,
            jiff::Timestamp::now(),
        );
        return Ok(json_response(
            StatusCode::OK,
            &tbl,
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        ));
    }
    let list = List {
        api_version: t.res.info.api_version(),
        items: &selected,
        kind: list_kind(t.res),
        metadata: &meta,
    };
    Ok(object_response(&list, accept))
}

/// A list as served, borrowing its items: no copy of the objects is made to write it.
/// The fields are in the order a `Value` object writes its keys (sorted).
#[derive(Serialize)]
struct List<'a> {
    #[serde(rename = "apiVersion")]
    api_version: String,
    items: &'a [&'a Value],
    kind: String,
    metadata: &'a Value,
}

async fn refuse_write(s: &Shared, method: &Method, t: &Target, req: Request) -> ApiError {
    // The object's name: in the path, or for a create in the body.
    let mut name = t.name.clone();
    let mut namespace = t.namespace.clone();
    if name.is_none() && *method == Method::POST {
        let body = axum::body::to_bytes(req.into_body(), 4 << 20)
            .await
            .unwrap_or_default();
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            name = v
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string);
            if namespace.is_none() {
                namespace = v
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
        }
    }
    let applied = s.api.applied.borrow().clone();
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "change",
    };
    let what = match (&name, &namespace) {
        (Some(n), Some(ns)) if t.res.info.namespaced => format!("{} {ns}/{n}", t.res.info.kind),
        (Some(n), _) => format!("{} {n}", t.res.info.kind),
        (None, _) => t.res.info.plural.to_string(),
    };
    let mut message = format!(
        "kommit's API is read-only: cannot {verb} {what}. The desired state of this cluster lives in Git"
    );
    match &applied {
        Some(a) => {
            message.push_str(&format!(
                " (repository {}, branch {})",
                a.repository, a.branch
            ));
            if let Some(n) = &name
                && let Some(src) = objects::source_of(a, t.res, namespace.as_deref(), n)
            {
                message.push_str(&format!("; {what} is defined in {src}"));
            }
        }
        None => message.push_str(" (no revision applied yet)"),
    }
    message.push_str(": change the manifests there, commit and push.");
    ApiError {
        code: 405,
        reason: "MethodNotAllowed",
        message,
        details: Some(json!({
            "name": name.unwrap_or_default(),
            "group": t.res.info.group,
            "kind": t.res.info.plural,
        })),
    }
}
