//! OpenAPI v3 schemas of the served kinds, as kube-apiserver publishes them, so that
//! `kubectl explain` works.
//!
//! - `GET /openapi/v3` lists one entry per served group-version:
//!   `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=<HASH>"}, ...}}`.
//! - `GET /openapi/v3/api/v1` and `/openapi/v3/apis/GROUP/VERSION` answer an OpenAPI 3.0
//!   document: `paths` with the read operations kommit serves (each `get` names its
//!   kind in `x-kubernetes-group-version-kind`, which is how kubectl finds the kind of
//!   a resource) and `components.schemas` with every schema reachable from the served
//!   kinds; the top-level ones carry `x-kubernetes-group-version-kind` too.
//!
//! Kubernetes' schemas come from k8s-openapi (its `schemars` feature: descriptions,
//! types, required fields, enums, as in the upstream OpenAPI documents); kommit's own
//! `kommit.dev/v1` `Commit` has a schema written here. The documents are built once:
//! they do not change while the process runs, and their hash (SHA-256 of the body) is
//! stable across restarts of the same build.

use std::sync::OnceLock;

use bytes::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use k8s_openapi::schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::discovery::{Resource, resources};

/// Where component schemas live in an OpenAPI 3 document.
const COMPONENTS: &str = "#/components/schemas/";

/// One group-version document, serialized.
#[derive(Debug)]
pub struct GroupVersionDocument {
    /// `api/v1`, `apis/apps/v1`.
    pub path: String,
    /// The OpenAPI 3.0 document (JSON).
    pub body: Bytes,
    /// Upper-case hex SHA-256 of `body`.
    pub hash: String,
}

struct Documents {
    index: Bytes,
    group_versions: Vec<GroupVersionDocument>,
}

fn documents() -> &'static Documents {
    static DOCS: OnceLock<Documents> = OnceLock::new();
    DOCS.get_or_init(build)
}

/// `GET /openapi/v3`: the group-versions and where their documents are.
pub fn index() -> Bytes {
    documents().index.clone()
}

/// The document of `api/v1` or `apis/GROUP/VERSION`, if kommit serves that group-version.
pub fn group_version(path: &str) -> Option<&'static GroupVersionDocument> {
    documents().group_versions.iter().find(|d| d.path == path)
}

/// Every served group-version document.
pub fn group_versions() -> &'static [GroupVersionDocument] {
    &documents().group_versions
}

fn build() -> Documents {
    let mut gvs: Vec<(&'static str, &'static str)> = Vec::new();
    for r in resources() {
        let gv = (r.info.group, r.info.version);
        if !gvs.contains(&gv) {
            gvs.push(gv);
        }
    }
    let mut group_versions = Vec::new();
    let mut paths = Map::new();
    for (group, version) in gvs {
        let doc = document(group, version);
        let body = Bytes::from(serde_json::to_vec(&doc).expect("a JSON value serializes"));
        let hash = hex::encode_upper(Sha256::digest(&body));
        let path = gv_path(group, version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
        );
        group_versions.push(GroupVersionDocument { path, body, hash });
    }
    let index = serde_json::to_vec(&json!({ "paths": paths })).expect("a JSON value serializes");
    Documents {
        index: Bytes::from(index),
        group_versions,
    }
}

/// `api/v1`, `apis/apps/v1`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The schema name of a served kind, adding its schema (and every schema it reaches) to
/// the generator's definitions. `None`: no schema for that kind.
fn add_kind(generator: &mut SchemaGenerator, group: &str, kind: &str) -> Option<String> {
    use k8s_openapi::api::{apps, batch, coordination, core, discovery, rbac};
    fn add<T: JsonSchema>(generator: &mut SchemaGenerator) -> Option<String> {
        generator.subschema_for::<T>();
        Some(T::schema_name().into_owned())
    }
    match (group, kind) {
        ("", "Pod") => add::<core::v1::Pod>(generator),
        ("", "Node") => add::<core::v1::Node>(generator),
        ("", "Namespace") => add::<core::v1::Namespace>(generator),
        ("", "Event") => add::<core::v1::Event>(generator),
        ("", "Service") => add::<core::v1::Service>(generator),
        ("", "Endpoints") => add::<core::v1::Endpoints>(generator),
        ("", "ConfigMap") => add::<core::v1::ConfigMap>(generator),
        ("", "Secret") => add::<core::v1::Secret>(generator),
        ("", "ServiceAccount") => add::<core::v1::ServiceAccount>(generator),
        ("", "PersistentVolumeClaim") => add::<core::v1::PersistentVolumeClaim>(generator),
        ("apps", "Deployment") => add::<apps::v1::Deployment>(generator),
        ("apps", "ReplicaSet") => add::<apps::v1::ReplicaSet>(generator),
        ("apps", "DaemonSet") => add::<apps::v1::DaemonSet>(generator),
        ("apps", "StatefulSet") => add::<apps::v1::StatefulSet>(generator),
        ("batch", "Job") => add::<batch::v1::Job>(generator),
        ("batch", "CronJob") => add::<batch::v1::CronJob>(generator),
        ("coordination.k8s.io", "Lease") => add::<coordination::v1::Lease>(generator),
        ("discovery.k8s.io", "EndpointSlice") => add::<discovery::v1::EndpointSlice>(generator),
        ("rbac.authorization.k8s.io", "Role") => add::<rbac::v1::Role>(generator),
        ("rbac.authorization.k8s.io", "RoleBinding") => add::<rbac::v1::RoleBinding>(generator),
        ("rbac.authorization.k8s.io", "ClusterRole") => add::<rbac::v1::ClusterRole>(generator),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            add::<rbac::v1::ClusterRoleBinding>(generator)
        }
        ("kommit.dev", "Commit") => add::<CommitSchema>(generator),
        _ => None,
    }
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

/// The OpenAPI 3.0 document of one group-version.
fn document(group: &str, version: &str) -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let served: Vec<(&Resource, String)> = resources()
        .iter()
        .filter(|r| r.info.group == group && r.info.version == version)
        .filter_map(|r| Some((r, add_kind(&mut generator, group, r.info.kind)?)))
        .collect();
    let list_meta = generator.subschema_for::<ListMeta>();
    let mut schemas = generator.take_definitions(true);
    let mut paths = Map::new();
    for (r, name) in &served {
        let kind = r.info.kind;
        if let Some(Value::Object(schema)) = schemas.get_mut(name) {
            // k8s-openapi requires `metadata` (a Rust field that is not an Option);
            // the API server's schemas do not, and explain would say `-required-`.
            if let Some(Value::Array(required)) = schema.get_mut("required") {
                required.retain(|f| f != "metadata");
                if required.is_empty() {
                    schema.remove("required");
                }
            }
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([gvk(group, version, kind)]),
            );
        }
        let list_name = format!("{name}List");
        schemas.insert(
            list_name.clone(),
            list_schema(group, version, kind, name, &list_meta),
        );
        add_paths(&mut paths, r, name, &list_name);
    }
    let title = if group.is_empty() {
        "Kubernetes".to_string()
    } else {
        format!("Kubernetes {group}")
    };
    json!({
        "openapi": "3.0.0",
        "info": {
            "title": title,
            "version": concat!("v1.33.0-kommit.", env!("CARGO_PKG_VERSION")),
        },
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// `PodList`: what a list operation answers.
fn list_schema(group: &str, version: &str, kind: &str, item: &str, list_meta: &Schema) -> Value {
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "items": {
                "description": format!("List of {kind} objects."),
                "type": "array",
                "items": {"$ref": format!("{COMPONENTS}{item}")},
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": {
                "allOf": [list_meta],
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
            },
        },
        "x-kubernetes-group-version-kind": [gvk(group, version, &format!("{kind}List"))],
    })
}

/// The read operations of one resource: list (all namespaces and in one namespace),
/// read one, as kube-apiserver names them.
fn add_paths(paths: &mut Map<String, Value>, r: &Resource, schema: &str, list_schema: &str) {
    let info = r.info;
    let prefix = if info.group.is_empty() {
        format!("/api/{}", info.version)
    } else {
        format!("/apis/{}/{}", info.group, info.version)
    };
    let gvk = gvk(info.group, info.version, info.kind);
    // readCoreV1NamespacedPod, listAppsV1DeploymentForAllNamespaces.
    let group_word: String = if info.group.is_empty() {
        "Core".into()
    } else {
        info.group
            .split('.')
            .next()
            .unwrap_or_default()
            .split('-')
            .map(capitalized)
            .collect()
    };
    let op_prefix = format!("{group_word}{}", capitalized(info.version));
    let tag = format!(
        "{}_{}",
        if info.group.is_empty() {
            "core"
        } else {
            info.group.split('.').next().unwrap_or_default()
        },
        info.version
    );
    let op = |action: &str, id: String, description: String, schema: &str, params: Value| {
        json!({"get": {
            "description": description,
            "operationId": id,
            "tags": [tag],
            "responses": {"200": {
                "description": "OK",
                "content": {"application/json": {"schema": {"$ref": format!("{COMPONENTS}{schema}")}}},
            }},
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        },
        "parameters": params})
    };
    let path_param = |name: &str, description: &str| {
        json!({"name": name, "in": "path", "required": true, "description": description,
               "schema": {"type": "string", "uniqueItems": true}})
    };
    let name_param = path_param("name", &format!("name of the {}", info.kind));
    let ns_param = path_param(
        "namespace",
        "object name and auth scope, such as for teams and projects",
    );
    let kind = info.kind;
    let plural = info.plural;
    if info.namespaced {
        paths.insert(
            format!("{prefix}/{plural}"),
            op(
                "list",
                format!("list{op_prefix}{kind}ForAllNamespaces"),
                format!("list or watch objects of kind {kind}"),
                list_schema,
                json!([]),
            ),
        );
        paths.insert(
            format!("{prefix}/namespaces/{{namespace}}/{plural}"),
            op(
                "list",
                format!("list{op_prefix}Namespaced{kind}"),
                format!("list or watch objects of kind {kind}"),
                list_schema,
                json!([ns_param]),
            ),
        );
        paths.insert(
            format!("{prefix}/namespaces/{{namespace}}/{plural}/{{name}}"),
            op(
                "get",
                format!("read{op_prefix}Namespaced{kind}"),
                format!("read the specified {kind}"),
                schema,
                json!([name_param, ns_param]),
            ),
        );
    } else {
        paths.insert(
            format!("{prefix}/{plural}"),
            op(
                "list",
                format!("list{op_prefix}{kind}"),
                format!("list or watch objects of kind {kind}"),
                list_schema,
                json!([]),
            ),
        );
        paths.insert(
            format!("{prefix}/{plural}/{{name}}"),
            op(
                "get",
                format!("read{op_prefix}{kind}"),
                format!("read the specified {kind}"),
                schema,
                json!([name_param]),
            ),
        );
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// kommit's `Commit` (`kommit.dev/v1`): the rollout record of one commit, written by
/// hand after `kommit_reconciler::rollout::CommitRecord`.
struct CommitSchema;

impl JsonSchema for CommitSchema {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "dev.kommit.v1.Commit".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let meta = generator.subschema_for::<ObjectMeta>();
        let time = |description: &str| json!({"description": description, "type": "string", "format": "date-time"});
        let string = |description: &str| json!({"description": description, "type": "string"});
        let int = |description: &str| json!({"description": description, "type": "integer", "format": "int32"});
        let changes = json!({
            "description": "Objects the commit adds, changes or removes (empty for a rejected commit).",
            "type": "array",
            "items": {
                "type": "object",
                "required": ["action", "kind", "name"],
                "properties": {
                    "action": {"description": "What the commit does to the object.", "type": "string", "enum": ["Added", "Changed", "Removed"]},
                    "kind": string("The object's kind."),
                    "namespace": string("The object's namespace (empty for cluster-scoped kinds)."),
                    "name": string("The object's name."),
                    "summary": string("What the rollout does to it (\"3 pods replaced, rolling with maxSurge 1 ...\")."),
                },
            },
        });
        let objects = json!({
            "description": "Progress of every workload of the revision, as last observed.",
            "type": "array",
            "items": {
                "type": "object",
                "required": ["kind", "namespace", "name", "health"],
                "properties": {
                    "kind": string("Deployment, Pod, Job or DaemonSet."),
                    "namespace": string("The workload's namespace."),
                    "name": string("The workload's name."),
                    "desired": int("Pods wanted (replicas, completions, nodes to run on; 1 for a bare Pod)."),
                    "updated": int("Pods of the current template (Deployments, DaemonSets), or succeeded (Jobs)."),
                    "ready": int("Updated pods that are ready."),
                    "available": int("Updated pods that are available (ready for minReadySeconds)."),
                    "old": int("Pods of older templates still running."),
                    "health": {"description": "Health of the workload.", "type": "string", "enum": ["Progressing", "Healthy", "Failed"]},
                    "message": string("One line for people: `2/3 ready, 1 old`."),
                    "reason": string("Why it failed (ProgressDeadlineExceeded, CrashLoopBackOff, ...)."),
                },
            },
        });
        let value = json!({
            "description": "Commit is the record of one commit of the cluster's Git repository: who made it, what it changes, and how its rollout went. kommit writes it; its name is the full commit id.",
            "type": "object",
            "properties": {
                "apiVersion": string("APIVersion defines the versioned schema of this representation of an object: kommit.dev/v1."),
                "kind": string("Kind is a string value representing the REST resource this object represents: Commit."),
                "metadata": {
                    "allOf": [meta],
                    "description": "Standard object's metadata. The name is the full commit id; creationTimestamp is when kommit detected the commit; the label kommit.dev/state holds the rollout state.",
                },
                "spec": {
                    "description": "Who made the commit and what it says.",
                    "type": "object",
                    "required": ["commit"],
                    "properties": {
                        "commit": string("The full commit id (hex)."),
                        "author": string("The author, as `Name <email>`."),
                        "message": string("The whole commit message."),
                        "committed": time("When the commit was made (the committer's time)."),
                        "branch": string("The tracked branch."),
                        "previous": string("The commit the cluster ran when this one was detected."),
                    },
                },
                "status": {
                    "description": "The rollout of the commit so far.",
                    "type": "object",
                    "required": ["state"],
                    "properties": {
                        "state": {
                            "description": "Where the rollout stands: Progressing (applied, converging), Converged (every workload updated and ready), Failed (cannot finish, see reason), Superseded (a newer commit was applied first) or Rejected (validation failed, never applied).",
                            "type": "string",
                            "enum": ["Progressing", "Converged", "Failed", "Superseded", "Rejected"],
                        },
                        "reason": string("Why it ended that way (ProgressDeadlineExceeded, CrashLoopBackOff, ...)."),
                        "message": string("A message for people."),
                        "startTime": time("When the commit was detected."),
                        "endTime": time("When the rollout ended (any final state)."),
                        "readySince": time("Since when everything has been updated and ready."),
                        "supersededBy": string("The newer commit that superseded this one."),
                        "changes": changes,
                        "objects": objects,
                        "errors": {
                            "description": "Validation errors of a rejected commit, one per line as `kommit validate` prints them.",
                            "type": "array",
                            "items": {"type": "string"},
                        },
                    },
                },
            },
        });
        Schema::try_from(value).expect("a JSON object is a schema")
    }
}

/// `$ref`s of a document that name no schema of its `components.schemas`.
pub fn dangling_refs(doc: &Value) -> Vec<String> {
    fn walk(v: &Value, schemas: &Map<String, Value>, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "$ref"
                        && let Some(r) = v.as_str()
                        && !r
                            .strip_prefix(COMPONENTS)
                            .is_some_and(|name| schemas.contains_key(name))
                    {
                        out.push(r.to_string());
                    }
                    walk(v, schemas, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, schemas, out)),
            _ => {}
        }
    }
    let empty = Map::new();
    let schemas = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut out = Vec::new();
    walk(doc, schemas, &mut out);
    out
}
