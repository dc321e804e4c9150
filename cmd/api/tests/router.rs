//! The router alone (`tower::ServiceExt::oneshot`): discovery goldens, Table goldens,
//! Status errors for bad requests, paging, refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kommit_api::{ApiState, Tokens};
use kommit_cache::{Cache, PutRequest};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "test-token";

async fn state() -> ApiState {
    let cache = Cache::in_memory();
    for (ns, name, phase) in [
        ("a", "p1", "Running"),
        ("a", "p2", "Pending"),
        ("b", "p3", "Running"),
    ] {
        let v = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"containers": [{"name": "c"}]}, "status": {"phase": phase}});
        cache
            .put(PutRequest::new(
                format!("/registry/pods/{ns}/{name}"),
                serde_json::to_vec(&v).unwrap(),
            ))
            .await
            .unwrap();
    }
    let (_tx, rx) = tokio::sync::watch::channel(None);
    std::mem::forget(_tx);
    ApiState {
        cache,
        applied: rx,
        logs: None,
    }
}

async fn call(
    state: &ApiState,
    method: &str,
    uri: &str,
    accept: Option<&str>,
    token: Option<&str>,
) -> (StatusCode, String, Value) {
    let app = kommit_api::app(state.clone(), Tokens::from_plain([(TOKEN, "admin")]));
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|h| h.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, ct, v)
}

async fn get(state: &ApiState, uri: &str) -> (StatusCode, String, Value) {
    call(state, "GET", uri, None, Some(TOKEN)).await
}

fn golden(name: &str, v: &Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let text = serde_json::to_string_pretty(v).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(text, want, "{name} differs from its golden file");
}

const AGG: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

#[tokio::test]
async fn discovery_documents() {
    let s = state().await;
    for (uri, file) in [
        ("/api", "api.json"),
        ("/apis", "apis.json"),
        ("/api/v1", "api_v1.json"),
        ("/apis/apps/v1", "apis_apps_v1.json"),
    ] {
        let (st, ct, v) = get(&s, uri).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(ct, "application/json");
        golden(file, &v);
    }
    for (uri, file) in [
        ("/api", "api_aggregated.json"),
        ("/apis", "apis_aggregated.json"),
    ] {
        let (st, ct, v) = call(&s, "GET", uri, Some(AGG), Some(TOKEN)).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            ct,
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        );
        golden(file, &v);
    }
    let (_, _, v) = get(&s, "/api/v1").await;
    let pods = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods")
        .unwrap();
    assert_eq!(pods["verbs"], json!(["get", "list", "watch"]));
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["categories"], json!(["all"]));
}

#[tokio::test]
async fn table_rows() {
    let now: jiff::Timestamp = "2025-01-01T12:00:00Z".parse().unwrap();
    let pod = json!({"metadata": {"name": "web-1", "namespace": "d", "creationTimestamp": "2025-01-01T11:57:30Z"},
        "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.7", "containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}, "lastState": {"terminated": {"finishedAt": "2025-01-01T11:59:00Z", "exitCode": 1}}},
            {"name": "b", "ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
    let deploy = json!({"metadata": {"name": "web", "creationTimestamp": "2024-12-30T08:00:00Z"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": [{"name": "web", "image": "hello:1"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
    let svc = json!({"metadata": {"name": "web", "creationTimestamp": "2025-01-01T10:00:00Z"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
    let node = json!({"metadata": {"name": "n1", "creationTimestamp": "2024-01-01T00:00:00Z", "labels": {"node-role.kubernetes.io/control-plane": ""}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.33.0"}}});
    for (kind, obj, file) in [
        ("Pod", &pod, "table_pod.json"),
        ("Deployment", &deploy, "table_deployment.json"),
        ("Service", &svc, "table_service.json"),
        ("Node", &node, "table_node.json"),
    ] {
        let t = kommit_api::table::table(
            kind,
            [obj],
            kommit_api::table::Include::None,
            json!({}),
            now,
        );
        golden(file, &serde_json::to_value(t).expect("a Table serialises"));
    }
    let t = serde_json::to_value(kommit_api::table::table(
        "Pod",
        [&pod],
        kommit_api::table::Include::None,
        json!({}),
        now,
    ))
    .expect("a Table serialises");
    assert_eq!(
        t["rows"][0]["cells"],
        json!([
            "web-1",
            "1/2",
            "CrashLoopBackOff",
            "5 (60s ago)",
            "2m30s",
            "10.0.0.7",
            "n1",
            "<none>",
            "<none>"
        ])
    );
}

#[tokio::test]
async fn authentication() {
    let s = state().await;
    for token in [None, Some("wrong")] {
        let (st, _, v) = call(&s, "GET", "/api/v1/pods", None, token).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["reason"], "Unauthorized");
        assert_eq!(v["code"], 401);
    }
}

#[tokio::test]
async fn bad_requests_get_status_errors() {
    let s = state().await;
    let (st, _, v) = get(&s, "/api/v1/widgets").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(v["message"].as_str().unwrap().contains("widgets"), "{v}");
    let (st, _, v) = get(&s, "/api/v1/pods?labelSelector=app%20in%20web").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unable to parse requirement"),
        "{v}"
    );
    let (st, _, v) = get(&s, "/api/v1/pods?fieldSelector=spec.bogus%3D1").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("field label not supported: spec.bogus"),
        "{v}"
    );
    // A huge limit lists everything; one beyond any integer is a clear error.
    let (st, _, v) = get(&s, "/api/v1/pods?limit=9223372036854775807").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
    let (st, _, v) = get(&s, "/api/v1/pods?limit=100000000000000000000000").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    // A continue token from another list, and garbage.
    let (_, _, page) = get(&s, "/api/v1/pods?limit=1").await;
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    let (st, _, v) = get(&s, &format!("/api/v1/configmaps?limit=1&continue={token}")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, _, v) = get(
        &s,
        &format!("/api/v1/namespaces/a/pods?limit=1&continue={token}"),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, _, _) = get(&s, "/api/v1/pods?continue=garbage!").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // Not found.
    let (st, _, v) = get(&s, "/api/v1/namespaces/a/pods/nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["message"], "pods \"nope\" not found");
    // OpenAPI v2 is a document without schemas (v3 has them).
    let (st, _, v) = get(&s, "/openapi/v2").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["swagger"], "2.0");
    assert_eq!(v["definitions"], serde_json::json!({}));
}

/// GET with headers, answering the response headers too.
async fn get_with(
    state: &ApiState,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let app = kommit_api::app(state.clone(), Tokens::from_plain([(TOKEN, "admin")]));
    let mut req = Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let h = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        h,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn openapi_v3_serves_the_schemas_of_every_served_kind() {
    let s = state().await;
    // The index: one entry per group-version, as kube-apiserver lists them.
    let (st, h, index) = get_with(&s, "/openapi/v3", &[("accept", "application/json")]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["content-type"], "application/json");
    let paths = index["paths"].as_object().unwrap();
    let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "api/v1",
            "apis/apps/v1",
            "apis/batch/v1",
            "apis/coordination.k8s.io/v1",
            "apis/discovery.k8s.io/v1",
            "apis/kommit.dev/v1",
            "apis/rbac.authorization.k8s.io/v1",
        ]
    );
    let url = paths["api/v1"]["serverRelativeURL"].as_str().unwrap();
    let hash = url
        .strip_prefix("/openapi/v3/api/v1?hash=")
        .expect("a URL with the document's hash");
    assert_eq!(hash.len(), 64, "{url}");
    // The same hash on the next request: the document is built once.
    let (_, _, again) = get(&s, "/openapi/v3").await;
    assert_eq!(again, index);

    // The core document, through its URL: immutable, tagged with its hash.
    let (st, h, doc) = get_with(&s, url, &[("accept", "application/json")]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["etag"], format!("\"{hash}\""));
    assert_eq!(h["cache-control"], "public, immutable");
    assert_eq!(doc["openapi"], "3.0.0");
    assert_eq!(
        kommit_api::openapi::dangling_refs(&doc),
        Vec::<String>::new(),
        "every $ref resolves inside the document"
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let pod = &schemas["io.k8s.api.core.v1.Pod"];
    assert_eq!(
        pod["x-kubernetes-group-version-kind"],
        json!([{"group": "", "kind": "Pod", "version": "v1"}])
    );
    assert!(
        pod["description"]
            .as_str()
            .unwrap()
            .starts_with("Pod is a collection of containers")
    );
    assert_eq!(
        pod["properties"]["spec"]["allOf"],
        json!([{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}])
    );
    assert!(pod.get("required").is_none(), "{}", pod["required"]);
    for reached in [
        "io.k8s.api.core.v1.Container",
        "io.k8s.api.core.v1.Probe",
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
        "io.k8s.api.core.v1.ServiceSpec",
        "io.k8s.api.core.v1.PodList",
    ] {
        assert!(schemas.contains_key(reached), "{reached} missing");
    }
    // kubectl finds a resource's kind through the `get` of its path.
    let op = &doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"];
    assert_eq!(
        op["x-kubernetes-group-version-kind"],
        json!({"group": "", "kind": "Pod", "version": "v1"})
    );
    assert_eq!(op["operationId"], "listCoreV1NamespacedPod");
    let op = &doc["paths"]["/api/v1/nodes/{name}"]["get"];
    assert_eq!(op["operationId"], "readCoreV1Node");

    // Every group-version document is whole; kommit's Commit has its schema.
    for (gv, entry) in paths {
        let (st, _, doc) = get(&s, entry["serverRelativeURL"].as_str().unwrap()).await;
        assert_eq!(st, StatusCode::OK, "{gv}");
        assert_eq!(
            kommit_api::openapi::dangling_refs(&doc),
            Vec::<String>::new(),
            "{gv}"
        );
    }
    let (_, _, doc) = get(&s, "/openapi/v3/apis/kommit.dev/v1").await;
    let commit = &doc["components"]["schemas"]["dev.kommit.v1.Commit"];
    assert_eq!(
        commit["x-kubernetes-group-version-kind"],
        json!([{"group": "kommit.dev", "kind": "Commit", "version": "v1"}])
    );
    assert_eq!(
        commit["properties"]["status"]["properties"]["state"]["enum"],
        json!([
            "Progressing",
            "Converged",
            "Failed",
            "Superseded",
            "Rejected"
        ])
    );
    let (_, _, doc) = get(&s, "/openapi/v3/apis/apps/v1").await;
    assert_eq!(
        doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );

    // Without the hash: revalidated; with the ETag: 304.
    let (st, h, _) = get_with(&s, "/openapi/v3/api/v1", &[]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["cache-control"], "no-cache, private");
    let etag = format!("\"{hash}\"");
    let (st, _, _) = get_with(&s, "/openapi/v3/api/v1", &[("if-none-match", &etag)]).await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);

    // Unknown group-versions, protobuf only, anonymous: clear errors.
    let (st, _, v) = get(&s, "/openapi/v3/apis/networking.k8s.io/v1").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("GET /openapi/v3 lists"),
        "{v}"
    );
    let (st, _, v) = get_with(
        &s,
        "/openapi/v3/api/v1",
        &[(
            "accept",
            "application/com.github.proto-openapi.spec.v3@v1.0+protobuf",
        )],
    )
    .await;
    assert_eq!(st, StatusCode::NOT_ACCEPTABLE, "{v}");
    let (st, _, _) = call(&s, "GET", "/openapi/v3", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn paging_returns_every_object_once() {
    let s = state().await;
    let mut names = Vec::new();
    let mut uri = "/api/v1/pods?limit=2".to_string();
    loop {
        let (st, _, v) = get(&s, &uri).await;
        assert_eq!(st, StatusCode::OK);
        for i in v["items"].as_array().unwrap() {
            names.push(i["metadata"]["name"].as_str().unwrap().to_string());
        }
        match v["metadata"]["continue"].as_str() {
            Some(c) => uri = format!("/api/v1/pods?limit=2&continue={c}"),
            None => break,
        }
    }
    assert_eq!(names, ["p1", "p2", "p3"]);
}

#[tokio::test]
async fn old_resource_version_is_gone() {
    let s = state().await;
    let rev = s.cache.current_revision();
    s.cache.compact(rev).await.unwrap();
    let (st, _, v) = get(&s, "/api/v1/pods?watch=true&resourceVersion=1").await;
    assert_eq!(st, StatusCode::GONE, "{v}");
    assert_eq!(v["reason"], "Expired");
}

#[tokio::test]
async fn writes_are_refused() {
    let s = state().await;
    for m in ["POST", "PUT", "PATCH", "DELETE"] {
        let (st, _, v) = call(&s, m, "/api/v1/namespaces/a/pods/p1", None, Some(TOKEN)).await;
        assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(v["reason"], "MethodNotAllowed");
        assert!(
            v["message"].as_str().unwrap().contains("lives in Git"),
            "{v}"
        );
    }
    // Writes to subresources, served for reading or not, are refused the same way.
    for uri in [
        "/api/v1/namespaces/a/pods/p1/status",
        "/apis/apps/v1/namespaces/a/deployments/web/scale",
        "/api/v1/namespaces/a/pods/p1/eviction",
    ] {
        let (st, _, v) = call(&s, "PATCH", uri, None, Some(TOKEN)).await;
        assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED, "{uri}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains("lives in Git"),
            "{uri}: {v}"
        );
    }
    let (st, _, _) = get(&s, "/apis/apps/v1/namespaces/a/deployments/web/scale").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let _ = Arc::new(());
}

#[tokio::test]
async fn quotas_and_limit_ranges_are_empty_lists() {
    let s = state().await;
    for (plural, kind) in [
        ("resourcequotas", "ResourceQuotaList"),
        ("limitranges", "LimitRangeList"),
    ] {
        let (st, _, v) = get(&s, &format!("/api/v1/namespaces/a/{plural}")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["kind"], kind);
        assert_eq!(v["items"], serde_json::json!([]));
    }
}
