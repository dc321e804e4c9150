//! Reading objects: observed ones from the cache, desired ones from the applied
//! snapshot, merged.
//!
//! - An object only the cache has (a Pod a ReplicaSet made, a Node, an Event) is served
//!   as stored, with `metadata.resourceVersion` = its key's `mod_revision`.
//! - An object only Git has (a ConfigMap, a Service before anything observed it) is
//!   served from the snapshot.
//! - An object both have is merged: when the cache holds a status record (metadata and
//!   status, no spec: Deployments), the spec comes from Git and uid, resourceVersion,
//!   creationTimestamp, generation, owner references, extra annotations and the status
//!   from the cache; when the cache holds a full copy (bare Pods, ReplicaSets and
//!   Namespaces from Git), the copy is served.
//!
//! Every object Git declares carries `kommit.dev/revision` (the applied commit),
//! `kommit.dev/source` (its file in the repository) and `kommit.dev/last-commit` (the
//! commit that last changed that file).

use std::collections::BTreeMap;
use std::sync::Arc;

use kommit_cache::{KeyValue, RangeRequest};
use kommit_desired::{DesiredObject, ObjectKey as DesiredKey};
use serde_json::{Map, Value};

use crate::discovery::Resource;
use crate::status::ApiError;
use crate::{ApiState, AppliedRevision};

/// Annotation: the applied commit.
pub const REVISION_ANNOTATION: &str = "kommit.dev/revision";
/// Annotation: the file in the repository that declares the object.
pub const SOURCE_ANNOTATION: &str = "kommit.dev/source";
/// Annotation: the commit that last changed that file.
pub const LAST_COMMIT_ANNOTATION: &str = "kommit.dev/last-commit";

/// Objects of one resource, by (namespace, name).
pub type Items = BTreeMap<(String, String), Value>;

fn ensure_type(v: &mut Value, res: &Resource) {
    if let Value::Object(m) = v {
        if !m.contains_key("apiVersion") {
            m.insert("apiVersion".into(), Value::String(res.info.api_version()));
        }
        if !m.contains_key("kind") {
            m.insert("kind".into(), Value::String(res.info.kind.into()));
        }
    }
}

/// Decodes a cache value (None when it is not a JSON object: logged and skipped).
pub fn decode(kv: &KeyValue, res: &Resource) -> Option<Value> {
    match serde_json::from_slice::<Value>(&kv.value) {
        Ok(mut v @ Value::Object(_)) => {
            ensure_type(&mut v, res);
            if let Some(Value::Object(meta)) = v.get_mut("metadata") {
                meta.insert(
                    "resourceVersion".into(),
                    Value::String(kv.mod_revision.to_string()),
                );
            }
            Some(v)
        }
        _ => {
            tracing::warn!(key = %String::from_utf8_lossy(&kv.key), "cache value is not a JSON object; skipped");
            None
        }
    }
}

fn meta_str<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// (namespace, name) of an object.
pub fn ident(v: &Value) -> (String, String) {
    (
        meta_str(v, "namespace").to_string(),
        meta_str(v, "name").to_string(),
    )
}

fn annotate(v: &mut Value, d: &DesiredObject, applied: &AppliedRevision) {
    let Some(Value::Object(meta)) = v.get_mut("metadata") else {
        return;
    };
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !ann.is_object() {
        *ann = Value::Object(Map::new());
    }
    if let Value::Object(a) = ann {
        a.insert(
            REVISION_ANNOTATION.into(),
            Value::String(applied.commit.clone()),
        );
        a.insert(
            SOURCE_ANNOTATION.into(),
            Value::String(d.provenance.path.clone()),
        );
        a.insert(
            LAST_COMMIT_ANNOTATION.into(),
            Value::String(d.provenance.last_commit.to_string()),
        );
    }
}

/// The object the API serves for a desired object and its observed record, if any.
pub fn merge(d: &DesiredObject, observed: Option<Value>, applied: &AppliedRevision) -> Value {
    let mut out = match observed {
        Some(o) if o.get("spec").is_some() || d.object.kind() == "Namespace" => o,
        Some(o) => {
            let mut desired = d.object.to_json();
            if let (Some(Value::Object(dm)), Some(Value::Object(om))) =
                (desired.get_mut("metadata"), o.get("metadata"))
            {
                for f in [
                    "uid",
                    "resourceVersion",
                    "creationTimestamp",
                    "generation",
                    "ownerReferences",
                    "finalizers",
                    "deletionTimestamp",
                ] {
                    if let Some(x) = om.get(f) {
                        dm.insert(f.into(), x.clone());
                    }
                }
                if let Some(Value::Object(oa)) = om.get("annotations") {
                    let da = dm
                        .entry("annotations")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(da) = da {
                        for (k, v) in oa {
                            da.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                }
            }
            if let (Value::Object(dm), Some(status)) = (&mut desired, o.get("status")) {
                dm.insert("status".into(), status.clone());
            }
            desired
        }
        None => d.object.to_json(),
    };
    annotate(&mut out, d, applied);
    out
}

fn desired_key(res: &Resource, namespace: Option<&str>, name: &str) -> DesiredKey {
    DesiredKey {
        group: res.info.group.into(),
        kind: res.info.kind.into(),
        namespace: if res.info.namespaced {
            namespace.map(Into::into)
        } else {
            None
        },
        name: name.into(),
    }
}

/// The desired objects of one resource (in one namespace, or all).
fn desired_of<'a>(
    applied: &'a AppliedRevision,
    res: &'a Resource,
    namespace: Option<&'a str>,
) -> impl Iterator<Item = &'a Arc<DesiredObject>> + 'a {
    let start = DesiredKey {
        group: res.info.group.into(),
        kind: res.info.kind.into(),
        namespace: namespace.map(Into::into),
        name: "".into(),
    };
    applied
        .snapshot
        .objects
        .range(start..)
        .take_while(move |(k, _)| {
            *k.group == *res.info.group
                && *k.kind == *res.info.kind
                && (namespace.is_none() || k.namespace.as_deref() == namespace)
        })
        .map(|(_, d)| d)
}

/// Every object of `res` (in `namespace`, or all namespaces), read at the cache's
/// `revision` (0: now). Returns the revision read and the objects.
pub async fn list(
    state: &ApiState,
    res: &Resource,
    namespace: Option<&str>,
    revision: i64,
) -> Result<(i64, Items), ApiError> {
    let namespace = namespace.filter(|_| res.info.namespaced);
    let prefix = match namespace {
        Some(ns) => res.info.namespace_prefix(ns),
        None => res.info.prefix(),
    };
    let got = state
        .cache
        .range(RangeRequest::prefix(prefix).with_revision(revision))
        .await
        .map_err(|e| match e {
            kommit_cache::Error::Compacted { .. } => ApiError::gone(format!(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter. ({e})"
            )),
            kommit_cache::Error::FutureRevision { .. } => {
                ApiError::bad_request(format!("continue token from the future: {e}"))
            }
            _ => ApiError::internal(format!("reading the cache: {e}")),
        })?;
    let mut items = Items::new();
    for kv in &got.kvs {
        if let Some(v) = decode(kv, res) {
            items.insert(ident(&v), v);
        }
    }
    let applied = state.applied.borrow().clone();
    if let Some(applied) = applied {
        for d in desired_of(&applied, res, namespace) {
            let id = (
                d.key.namespace.as_deref().unwrap_or_default().to_string(),
                d.key.name.to_string(),
            );
            let observed = items.remove(&id);
            items.insert(id, merge(d, observed, &applied));
        }
    }
    Ok((got.revision, items))
}

/// One object (None: not found), with the cache revision read.
pub async fn get(
    state: &ApiState,
    res: &Resource,
    namespace: Option<&str>,
    name: &str,
) -> Result<(i64, Option<Value>), ApiError> {
    let key = match namespace.filter(|_| res.info.namespaced) {
        Some(ns) => format!("{}{name}", res.info.namespace_prefix(ns)),
        None => format!("{}{name}", res.info.prefix()),
    };
    let got = state
        .cache
        .range(RangeRequest::key(key))
        .await
        .map_err(|e| ApiError::internal(format!("reading the cache: {e}")))?;
    let observed = got.kvs.first().and_then(|kv| decode(kv, res));
    let applied = state.applied.borrow().clone();
    let desired = applied.as_ref().and_then(|a| {
        a.snapshot
            .objects
            .get(&desired_key(res, namespace, name))
            .cloned()
    });
    let v = match (desired, applied) {
        (Some(d), Some(a)) => Some(merge(&d, observed, &a)),
        _ => observed,
    };
    Ok((got.revision, v))
}

/// The file that declares an object in the applied revision, if Git declares it.
pub fn source_of(
    applied: &AppliedRevision,
    res: &Resource,
    namespace: Option<&str>,
    name: &str,
) -> Option<String> {
    applied
        .snapshot
        .objects
        .get(&desired_key(res, namespace, name))
        .map(|d| format!("{}:{}", d.provenance.path, d.provenance.line))
}
