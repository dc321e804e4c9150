//! The real `kubectl explain` against the API on a loopback socket: every served kind
//! has its schema, fields carry Kubernetes' descriptions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explains_every_served_kind() {
    let c = Cluster::start().await;

    let out = c.kubectl_ok(&["explain", "pods"]);
    assert!(out.contains("KIND:       Pod"), "{out}");
    assert!(out.contains("VERSION:    v1"), "{out}");
    assert!(
        out.contains("metadata\t<ObjectMeta>\n"),
        "metadata is not required, as with kube-apiserver: {out}"
    );
    assert!(
        out.contains("Pod is a collection of containers that can run on a host."),
        "{out}"
    );
    assert!(
        out.contains("spec\t<PodSpec>")
            && out.contains("Specification of the desired behavior of the pod."),
        "{out}"
    );

    let out = c.kubectl_ok(&["explain", "deployment.spec.template.spec.containers"]);
    assert!(out.contains("GROUP:      apps"), "{out}");
    assert!(out.contains("KIND:       Deployment"), "{out}");
    assert!(out.contains("FIELD: containers <[]Container>"), "{out}");
    assert!(out.contains("image\t<string>"), "{out}");
    assert!(out.contains("name\t<string> -required-"), "{out}");

    let out = c.kubectl_ok(&["explain", "deployment.spec.replicas"]);
    assert!(out.contains("FIELD: replicas <integer>"), "{out}");
    assert!(out.contains("Number of desired pods."), "{out}");

    let out = c.kubectl_ok(&["explain", "svc", "--recursive"]);
    assert!(out.contains("KIND:       Service"), "{out}");
    assert!(out.contains("    clusterIP\t<string>"), "{out}");
    assert!(out.contains("      targetPort\t<IntOrString>"), "{out}");

    let out = c.kubectl_ok(&["explain", "commits"]);
    assert!(out.contains("GROUP:      kommit.dev"), "{out}");
    assert!(out.contains("KIND:       Commit"), "{out}");
    assert!(out.contains("Commit is the record of one commit"), "{out}");
    let out = c.kubectl_ok(&["explain", "kc.status.state"]);
    assert!(out.contains("ENUM:"), "{out}");
    assert!(out.contains("Superseded"), "{out}");

    // Every resource discovery lists: explain finds its kind and schema.
    let resources = c.kubectl_ok(&["api-resources", "-o", "name"]);
    let mut n = 0;
    for r in resources.lines().filter(|l| !l.is_empty()) {
        let out = c.kubectl_ok(&["explain", r]);
        assert!(
            out.contains("KIND:") && out.contains("FIELDS:"),
            "{r}: {out}"
        );
        n += 1;
    }
    assert!(n >= 20, "{resources}");

    // With schemas served, `kubectl apply` (client-side validation on) still sends the
    // write and shows the server's refusal.
    c.repo.write(
        "extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n  namespace: hello\ndata:\n  a: b\n",
    );
    let err = c.kubectl_err(&[
        "apply",
        "-f",
        &c.repo.path().join("extra.yaml").display().to_string(),
    ]);
    assert!(
        err.contains("MethodNotAllowed") && err.contains("lives in Git"),
        "{err}"
    );

    let err = c.kubectl_err(&["explain", "pods.spec.nope"]);
    assert!(err.contains("field \"nope\" does not exist"), "{err}");
}
