//! The real kubectl against the API on a loopback socket: a cache with observed objects
//! and a snapshot loaded from a Git repository made with the git CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_the_cluster() {
    let c = Cluster::start().await;

    // Discovery + list of nodes.
    let out = c.kubectl_ok(&["get", "nodes"]);
    assert!(
        out.contains("NAME") && out.contains("STATUS") && out.contains("ROLES"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("n1 ") && l.contains("Ready")),
        "{out}"
    );

    // Pods in every namespace, wide.
    let out = c.kubectl_ok(&["get", "pods", "-A", "-o", "wide"]);
    let header = out.lines().next().unwrap();
    for col in [
        "NAMESPACE",
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED NODE",
        "READINESS GATES",
    ] {
        assert!(header.contains(col), "missing {col}: {out}");
    }
    let web = out
        .lines()
        .find(|l| l.contains("web-5d8f-abcde"))
        .expect("pod listed");
    assert!(web.starts_with("hello "), "{web}");
    assert!(
        web.contains("1/1")
            && web.contains("Running")
            && web.contains("10.244.0.5")
            && web.contains("n1"),
        "{web}"
    );
    let pending = out
        .lines()
        .find(|l| l.contains("web-5d8f-fghij"))
        .expect("pod listed");
    assert!(
        pending.contains("0/1") && pending.contains("ContainerCreating"),
        "{pending}"
    );

    // Several kinds in one namespace, with the Deployment merged from Git and the cache.
    let out = c.kubectl_ok(&["get", "deploy,rs,pods", "-n", "hello"]);
    assert!(
        out.contains("deployment.apps/web") && out.contains("1/2"),
        "{out}"
    );
    assert!(out.contains("replicaset.apps/web-5d8f"), "{out}");
    assert!(out.contains("pod/web-5d8f-abcde"), "{out}");

    // `get all` through the category.
    let out = c.kubectl_ok(&["get", "all", "-n", "hello"]);
    assert!(
        out.contains("service/web") && out.contains("ClusterIP") && out.contains("80/TCP"),
        "{out}"
    );
    assert!(
        out.contains("deployment.apps/web") && out.contains("pod/web-5d8f-abcde"),
        "{out}"
    );

    // Whole objects: YAML, JSON through jq.
    let out = c.kubectl_ok(&["get", "deploy", "web", "-n", "hello", "-o", "yaml"]);
    assert!(out.contains("kommit.dev/source: apps/web.yaml"), "{out}");
    assert!(
        out.contains(&format!("kommit.dev/revision: {}", c.commit)),
        "{out}"
    );
    assert!(
        out.contains("image: hello:1") && out.contains("readyReplicas: 1"),
        "{out}"
    );
    let out = c.sh_ok(&format!(
        "kubectl --kubeconfig {} get pods -n hello -o json | jq -r '.items[].metadata.name'",
        c.kubeconfig.display()
    ));
    assert_eq!(out.trim(), "web-5d8f-abcde\nweb-5d8f-fghij");

    // Selectors.
    let out = c.kubectl_ok(&["get", "pods", "-A", "-l", "app=web", "-o", "name"]);
    assert_eq!(out.trim(), "pod/web-5d8f-abcde\npod/web-5d8f-fghij");
    let out = c.kubectl_ok(&["get", "pods", "-A", "-l", "app!=web", "-o", "name"]);
    assert_eq!(out.trim(), "pod/other");
    let out = c.kubectl_ok(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        "status.phase=Running",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "pod/web-5d8f-abcde");

    // Paging with a small chunk size gives the same list.
    let out = c.kubectl_ok(&["get", "pods", "-A", "--chunk-size=1", "-o", "name"]);
    assert_eq!(out.lines().count(), 3, "{out}");

    // describe reads events by field selector.
    let out = c.kubectl_ok(&["describe", "pod", "web-5d8f-abcde", "-n", "hello"]);
    assert!(out.contains("Node:") && out.contains("n1"), "{out}");
    assert!(
        out.contains("Scheduled")
            && out.contains("Successfully assigned hello/web-5d8f-abcde to n1"),
        "{out}"
    );
    for what in [["deployment", "web"], ["service", "web"]] {
        let out = c.kubectl_ok(&["describe", what[0], what[1], "-n", "hello"]);
        assert!(out.contains("Name:") && out.contains("web"), "{out}");
    }
    let out = c.kubectl_ok(&["describe", "node", "n1"]);
    assert!(out.contains("Name:") && out.contains("n1"), "{out}");

    // Logs through the LogSource.
    let out = c.kubectl_ok(&["logs", "web-5d8f-abcde", "-n", "hello"]);
    assert_eq!(out, "hello 1\nhello 2\nhello 3\n");
    let out = c.kubectl_ok(&[
        "logs",
        "web-5d8f-abcde",
        "-n",
        "hello",
        "--tail=1",
        "-c",
        "web",
    ]);
    assert_eq!(out, "hello 3\n");
    let out = c.kubectl_ok(&["logs", "web-5d8f-abcde", "-n", "hello", "--limit-bytes=9"]);
    assert_eq!(out, "hello 1\nh");

    // Writes are refused with the Git message.
    c.repo.write("extra.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n  namespace: hello\ndata:\n  a: b\n");
    let err = c.kubectl_err(&[
        "apply",
        "--validate=false",
        "-f",
        &c.repo.path().join("extra.yaml").display().to_string(),
    ]);
    assert!(
        err.contains("MethodNotAllowed")
            && err.contains("lives in Git")
            && err.contains("branch main"),
        "{err}"
    );
    let err = c.kubectl_err(&["delete", "pod", "web-5d8f-abcde", "-n", "hello"]);
    assert!(
        err.contains("lives in Git") && err.contains("cannot delete Pod hello/web-5d8f-abcde"),
        "{err}"
    );
    let err = c.kubectl_err(&["delete", "configmap", "settings", "-n", "hello"]);
    assert!(
        err.contains("is defined in config/settings.yaml:1"),
        "{err}"
    );

    // Bad requests.
    let err = c.kubectl_err(&["get", "widgets"]);
    assert!(
        err.contains("the server doesn't have a resource type \"widgets\""),
        "{err}"
    );
    let err = c.kubectl_err(&["get", "pods", "-A", "-l", "app in web"]);
    assert!(
        err.contains("unable to parse") || err.contains("unable to parse requirement"),
        "{err}"
    );
    let err = c.kubectl_err(&["get", "pods", "-A", "--field-selector", "spec.bogus=1"]);
    assert!(
        err.contains("field label not supported: spec.bogus"),
        "{err}"
    );

    // Anonymous and wrong-token access.
    let err = c.kubectl_err_with(&["get", "pods", "-A"], Some("not-the-token"));
    assert!(
        err.contains("Unauthorized") || err.contains("You must be logged in"),
        "{err}"
    );
    let out = c.curl(
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{}/api/v1/pods", c.url),
        ],
        None,
    );
    assert_eq!(out, "401");
    let out = c.curl(&["-s", &format!("{}/api/v1/pods", c.url)], None);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["code"], 401);

    // explain: see kubectl_explain.rs.
}
