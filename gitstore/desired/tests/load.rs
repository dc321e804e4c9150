//! Loading commits from real repositories made with the git CLI: objects, provenance,
//! incremental loads, and every kind of bad input.
#![allow(clippy::unwrap_used)]

#[path = "../../../tests/support/mod.rs"]
mod support;

use kommit_desired::{LoadError, LoadOptions, Object, ObjectKey, Snapshot, open_repository};
use support::GitRepo;

const WEB: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          ports:
            - {name: http, containerPort: 80}
          envFrom:
            - configMapRef: {name: web-config}
";

const SHOP: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: shop
data:
  MODE: production
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
    - port: 80
      targetPort: http
";

fn key(group: &str, kind: &str, ns: Option<&str>, name: &str) -> ObjectKey {
    ObjectKey {
        group: group.into(),
        kind: kind.into(),
        namespace: ns.map(Into::into),
        name: name.into(),
    }
}

fn load(repo: &GitRepo, rev: &str) -> Result<Snapshot, LoadError> {
    let r = open_repository(repo.path()).unwrap();
    Snapshot::load(&r, rev, &LoadOptions::default())
}

/// The rendered errors of a rejected commit.
fn errors(repo: &GitRepo, rev: &str) -> Vec<String> {
    match load(repo, rev) {
        Err(LoadError::Rejected(r)) => r.errors.iter().map(ToString::to_string).collect(),
        Ok(s) => panic!("commit accepted with {} objects", s.objects.len()),
        Err(e) => panic!("not a rejection: {e}"),
    }
}

fn valid_repo() -> GitRepo {
    let repo = GitRepo::init();
    repo.write("README.md", "not a manifest\n");
    repo.write(".github/workflows/ci.yml", "on: push\n");
    repo.write("apps/web.yaml", WEB);
    repo.write("shop.yaml", SHOP);
    repo.commit("shop");
    repo
}

#[test]
fn loads_every_object_with_provenance() {
    let repo = valid_repo();
    let first = repo.head();
    repo.write(
        "extra/sa.yml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: robot, namespace: shop}\n",
    );
    let second = repo.commit("robot");
    let snap = load(&repo, "main").unwrap();
    assert_eq!(snap.commit.to_string(), second);
    let keys: Vec<String> = snap.objects.keys().map(ToString::to_string).collect();
    assert_eq!(
        keys,
        [
            "ConfigMap shop/web-config",
            "Namespace shop",
            "Service shop/web",
            "ServiceAccount shop/robot",
            "Deployment shop/web"
        ]
    );
    let svc = snap.get(&key("", "Service", Some("shop"), "web")).unwrap();
    assert_eq!(svc.provenance.path, "shop.yaml");
    assert_eq!(svc.provenance.document_index, 2);
    assert_eq!(svc.provenance.line, 14);
    assert_eq!(
        svc.provenance.last_commit.to_string(),
        first,
        "shop.yaml last changed in the first commit"
    );
    let sa = snap
        .get(&key("", "ServiceAccount", Some("shop"), "robot"))
        .unwrap();
    assert_eq!(sa.provenance.last_commit.to_string(), second);
    let Object::Deployment(d) = &snap
        .get(&key("apps", "Deployment", Some("shop"), "web"))
        .unwrap()
        .object
    else {
        panic!("not a Deployment")
    };
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
    // The work tree is never read: a change that is not committed is not seen.
    repo.write("apps/web.yaml", "garbage: [");
    assert_eq!(load(&repo, "HEAD").unwrap().objects.len(), 5);
}

#[test]
fn loads_a_bare_repository_a_tag_and_a_sub_path() {
    let repo = valid_repo();
    repo.git(&["tag", "-a", "v1", "-m", "release"]);
    let bare = GitRepo::init_bare();
    repo.git(&["push", "-q", bare.path().to_str().unwrap(), "main", "v1"]);
    let r = open_repository(bare.path()).unwrap();
    let all = Snapshot::load(&r, "v1", &LoadOptions::default()).unwrap();
    assert_eq!(all.objects.len(), 4);
    // Only apps/: the Deployment alone, whose namespace and ConfigMap are then missing.
    let Err(LoadError::Rejected(r)) = Snapshot::load(&r, "main", &LoadOptions::with_path("apps/"))
    else {
        panic!("apps/ alone must be rejected")
    };
    let text: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 2, "{text:#?}");
    assert!(
        text[0].starts_with(
            "apps/web.yaml:5:14: metadata.namespace: namespace `shop` is not declared"
        ),
        "{text:#?}"
    );
    assert!(text[1].starts_with("apps/web.yaml:20:36: spec.template.spec.containers[0].envFrom[0].configMapRef.name: ConfigMap `web-config` is not in this commit"), "{text:#?}");
    let missing = Snapshot::load(
        &open_repository(bare.path()).unwrap(),
        "main",
        &LoadOptions::with_path("nope"),
    );
    assert!(
        matches!(missing, Err(LoadError::PathNotFound { .. })),
        "{missing:?}"
    );
}

#[test]
fn list_kinds_are_expanded_and_json_files_read() {
    let repo = GitRepo::init();
    repo.write(
        "list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: a}\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: b}\n    data: {k: v}\n",
    );
    repo.write(
        "c.json",
        "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"ConfigMap\",\n  \"metadata\": {\"name\": \"c\"}\n}\n",
    );
    repo.commit("list");
    let snap = load(&repo, "HEAD").unwrap();
    let b = snap
        .get(&key("", "ConfigMap", Some("default"), "b"))
        .unwrap();
    assert_eq!((b.provenance.document_index, b.provenance.line), (0, 7));
    assert!(
        snap.get(&key("", "ConfigMap", Some("default"), "c"))
            .is_some()
    );
}

#[test]
fn incremental_load_reads_only_changed_blobs() {
    let repo = valid_repo();
    let r = open_repository(repo.path()).unwrap();
    let first = Snapshot::load(&r, "HEAD", &LoadOptions::default()).unwrap();
    assert_eq!(first.blobs_read(), 2);
    let shop_blob = repo.blob_id("HEAD", "shop.yaml");
    repo.write("apps/web.yaml", &WEB.replace("replicas: 3", "replicas: 5"));
    let second = repo.commit("scale");
    // The unchanged file's blob is deleted from the object database: an incremental
    // load must not need it.
    std::fs::remove_file(repo.loose_object_path(&shop_blob)).unwrap();
    let r = open_repository(repo.path()).unwrap();
    let commit = kommit_desired::resolve_commit(&r, "HEAD").unwrap();
    let inc = Snapshot::load_commit(&r, commit, &LoadOptions::default(), Some(&first)).unwrap();
    assert_eq!(inc.blobs_read(), 1);
    assert_eq!(inc.commit.to_string(), second);
    let web = inc
        .get(&key("apps", "Deployment", Some("shop"), "web"))
        .unwrap();
    assert_eq!(web.provenance.last_commit.to_string(), second);
    let Object::Deployment(d) = &web.object else {
        panic!()
    };
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(5));
    // A full load now fails on the missing blob, naming it and its file.
    let full = Snapshot::load(&r, "HEAD", &LoadOptions::default());
    let Err(LoadError::Object { id, path, .. }) = full else {
        panic!("{full:?}")
    };
    assert_eq!(
        (id.to_string(), path.as_deref()),
        (shop_blob, Some("shop.yaml"))
    );
}

#[test]
fn incremental_load_equals_full_load() {
    let repo = valid_repo();
    let r = open_repository(repo.path()).unwrap();
    let first = Snapshot::load(&r, "HEAD", &LoadOptions::default()).unwrap();
    repo.write("apps/more/job.yaml", "apiVersion: batch/v1\nkind: Job\nmetadata: {name: once, namespace: shop}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox}]\n");
    repo.remove("shop.yaml");
    repo.write("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-config, namespace: shop}\n");
    repo.commit("move");
    let r = open_repository(repo.path()).unwrap();
    let c = kommit_desired::resolve_commit(&r, "HEAD").unwrap();
    let inc = Snapshot::load_commit(&r, c, &LoadOptions::default(), Some(&first)).unwrap();
    let full = Snapshot::load_commit(&r, c, &LoadOptions::default(), None).unwrap();
    assert_eq!(inc.objects, full.objects);
    assert_eq!(inc.blobs_read(), 2);
}

#[test]
fn empty_repository_and_missing_ref_are_clear_errors() {
    let repo = GitRepo::init();
    let e = load(&repo, "HEAD").unwrap_err();
    assert_eq!(
        e.to_string(),
        "the repository has no commits yet (HEAD points to the unborn branch main)"
    );
    let e = load(&GitRepo::init_bare(), "main").unwrap_err();
    assert!(matches!(e, LoadError::EmptyRepository { .. }), "{e}");
    let repo = valid_repo();
    let e = load(&repo, "no-such-branch").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("revision `no-such-branch` not found"),
        "{e}"
    );
    let tree = repo.git(&["rev-parse", "HEAD^{tree}"]);
    let e = load(&repo, &tree).unwrap_err();
    assert!(matches!(e, LoadError::NotACommit { .. }), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = open_repository(dir.path()).unwrap_err();
    assert!(
        e.to_string().starts_with("cannot open Git repository"),
        "{e}"
    );
}

#[test]
fn corrupted_object_is_a_clear_error() {
    let repo = valid_repo();
    let blob = repo.blob_id("HEAD", "apps/web.yaml");
    let file = repo.loose_object_path(&blob);
    let mut perms = std::fs::metadata(&file).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&file, perms).unwrap();
    std::fs::write(&file, b"this is not zlib data").unwrap();
    let e = load(&repo, "HEAD").unwrap_err();
    let LoadError::Object { id, path, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(
        (id.to_string(), path.as_deref()),
        (blob, Some("apps/web.yaml"))
    );
    assert!(e.to_string().contains("is missing or corrupt"), "{e}");
    // A missing tree.
    let tree = repo.git(&["rev-parse", "HEAD:apps"]);
    std::fs::remove_file(repo.loose_object_path(&tree)).unwrap();
    let e = load(&repo, "HEAD").unwrap_err();
    let LoadError::Object { id, path, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!((id.to_string(), path.as_deref()), (tree, Some("apps")));
}

#[test]
fn bad_files_are_errors_with_positions() {
    let repo = valid_repo();
    repo.write(
        "bad/malformed.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n",
    );
    repo.write(
        "bad/tabs.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n\tname: x\n",
    );
    repo.write_bytes("bad/binary.yaml", &[0x89, b'P', b'N', b'G', 0, 0, 1, 2]);
    repo.write_bytes(
        "bad/latin1.yaml",
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: caf\xe9}\n",
    );
    let mut big = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n");
    let line = format!("  k: {}\n", "x".repeat(1000));
    while big.len() < 50 * 1024 * 1024 {
        big.push_str(&line);
    }
    repo.write("bad/big.yaml", &big);
    std::os::unix::fs::symlink("../shop.yaml", repo.path().join("bad/link.yaml")).unwrap();
    repo.git(&["add", "-A"]);
    let head = repo.head();
    repo.git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{head},bad/module"),
    ]);
    repo.git(&["commit", "-q", "-m", "bad"]);
    let errs = errors(&repo, "HEAD");
    let expected_prefixes = [
        "bad/big.yaml:1:1: file is 50.0 MiB (52429",
        "bad/binary.yaml:1:5: binary file (it contains a NUL byte)",
        "bad/latin1.yaml:3:21: not UTF-8 text (byte 0xe9)",
        "bad/link.yaml:1:1: symlink: kommit reads manifests from Git objects and does not follow symlinks",
        "bad/malformed.yaml:3:11: invalid YAML: unclosed bracket",
        "bad/module:1:1: submodule: kommit does not load submodules",
        "bad/tabs.yaml:4:2: invalid YAML: tabs",
    ];
    assert_eq!(errs.len(), expected_prefixes.len(), "{errs:#?}");
    for (e, p) in errs.iter().zip(expected_prefixes) {
        assert!(e.starts_with(p), "{e:?} should start with {p:?}");
    }
}

#[test]
fn schema_errors_name_file_line_and_field() {
    let repo = GitRepo::init();
    repo.write(
        "app.yaml",
        "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: Web_App
  labels: {\"bad key\": ok}
spec:
  replica: 3
  replicas: three
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          imagePullPolicy: Sometimes
          ports:
            - containerPort: 70000
              name: http_port
          resources:
            limits: {memory: 1GB}
        - image: busybox
          name: side
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports:
    - port: 80
      nodePort: 80
      targetPort: 8080
---
apiVersion: v1
kind: Widget
metadata: {name: w}
---
apiVersion: extensions/v1beta1
kind: Deployment
metadata: {name: old}
---
- just
- a list
---
kind: ConfigMap
metadata: {name: c}
",
    );
    repo.commit("bad schema");
    let errs = errors(&repo, "HEAD");
    let expected = [
        "app.yaml:4:9: metadata.name: `Web_App` is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)",
        "app.yaml:5:12: metadata.labels.bad key: key `bad key` is not a qualified name (at most 63 of letters, digits, '-', '_' and '.', starting and ending with a letter or digit, with an optional DNS prefix and '/')",
        "app.yaml:7:3: spec.replica: unknown field `replica`",
        "app.yaml:8:13: spec.replicas: invalid type: string \"three\", expected an integer",
    ];
    assert_eq!(&errs[..4], &expected, "{errs:#?}");
    // Once replicas is fixed, the rest of the Deployment is checked too.
    let text = std::fs::read_to_string(repo.path().join("app.yaml")).unwrap();
    repo.write("app.yaml", &text.replace("replicas: three", "replicas: 2"));
    repo.commit("fix type");
    let errs = errors(&repo, "HEAD");
    let expected = [
        "app.yaml:4:9: metadata.name: `Web_App` is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)",
        "app.yaml:5:12: metadata.labels.bad key: key `bad key` is not a qualified name (at most 63 of letters, digits, '-', '_' and '.', starting and ending with a letter or digit, with an optional DNS prefix and '/')",
        "app.yaml:7:3: spec.replica: unknown field `replica`",
        "app.yaml:16:11: spec.template.spec.containers[0]: missing required field `image`",
        "app.yaml:17:28: spec.template.spec.containers[0].imagePullPolicy: unknown imagePullPolicy `Sometimes` (Always, IfNotPresent, Never)",
        "app.yaml:19:30: spec.template.spec.containers[0].ports[0].containerPort: port 70000 is out of range 1-65535",
        "app.yaml:20:21: spec.template.spec.containers[0].ports[0].name: `http_port` is not a valid port name (at most 15 of lower-case letters, digits and '-', with at least one letter)",
        "app.yaml:22:30: spec.template.spec.containers[0].resources.limits.memory: `1GB` is not a quantity (a number with an optional suffix: m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or an exponent like e3)",
        "app.yaml:34:17: spec.ports[0].nodePort: nodePort 80 is out of range 30000-32767",
        "app.yaml:38:7: kind: unknown kind `Widget` (apiVersion `v1`); kommit reads: v1 Namespace, v1 Pod, v1 Service, v1 ConfigMap, v1 Secret, v1 ServiceAccount, apps/v1 Deployment, apps/v1 ReplicaSet, apps/v1 DaemonSet, apps/v1 StatefulSet, batch/v1 Job, batch/v1 CronJob, rbac.authorization.k8s.io/v1 Role, rbac.authorization.k8s.io/v1 RoleBinding, rbac.authorization.k8s.io/v1 ClusterRole, rbac.authorization.k8s.io/v1 ClusterRoleBinding",
        "app.yaml:42:7: kind: unknown kind `Deployment` in `extensions/v1beta1`: kommit reads Deployment as `apiVersion: apps/v1`",
        "app.yaml:45:1: a manifest must be a mapping with apiVersion and kind, found a list",
        "app.yaml:48:1: missing required field `apiVersion`",
    ];
    assert_eq!(errs, expected, "{errs:#?}");
}

#[test]
fn missing_required_fields_are_errors() {
    let repo = GitRepo::init();
    repo.write(
        "rb.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: rb}\nsubjects:\n  - kind: User\n",
    );
    repo.commit("rb");
    let errs = errors(&repo, "HEAD");
    assert_eq!(
        errs,
        [
            "rb.yaml:1:1: missing required field `roleRef`",
            "rb.yaml:5:5: subjects[0]: missing required field `name`",
        ],
        "{errs:#?}"
    );
}

#[test]
fn cross_object_checks() {
    let repo = GitRepo::init();
    repo.write(
        "a.yaml",
        "\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {colour: blue}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: nowhere}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: apii}}
    spec:
      containers: [{name: api, image: api:1}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    spec:
      restartPolicy: Never
      volumes:
        - name: cfg
          configMap: {name: settings, items: [{key: size, path: size}]}
        - name: opt
          secret: {secretName: maybe, optional: true}
      containers:
        - name: m
          image: m:1
          volumeMounts: [{name: cfg, mountPath: /cfg}, {name: nope, mountPath: /x}]
          env:
            - name: PASSWORD
              valueFrom: {secretKeyRef: {name: db, key: password}}
            - name: COLOUR
              valueFrom: {configMapKeyRef: {name: settings, key: colour}}
---
apiVersion: v1
kind: Pod
metadata: {name: solo, labels: {app: solo}}
spec:
  containers: [{name: c, image: c:1, ports: [{containerPort: 8080, name: web}]}]
---
apiVersion: v1
kind: Service
metadata: {name: solo}
spec:
  selector: {app: solo}
  ports: [{name: a, port: 80, targetPort: web}, {name: b, port: 81, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: ghost}
spec:
  selector: {app: ghost}
  ports: [{port: 80, targetPort: http}]
",
    );
    repo.write(
        "b.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: default\n",
    );
    repo.commit("cross");
    let errs = errors(&repo, "HEAD");
    let expected = [
        "a.yaml:8:34: metadata.namespace: namespace `nowhere` is not declared in this commit (add a Namespace manifest for it)",
        "a.yaml:10:13: spec.selector: the selector does not match the labels of spec.template (template labels: app=apii)",
        "a.yaml:25:53: spec.template.spec.volumes[0].configMap.items[0].key: ConfigMap `settings` has no key `size`; add it or mark the reference `optional: true`",
        "a.yaml:31:63: spec.template.spec.containers[0].volumeMounts[1].name: no volume named `nope` in the pod",
        "a.yaml:34:48: spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.name: Secret `db` is not in this commit (namespace default); add it or mark the reference `optional: true`",
        "a.yaml:49:81: spec.ports[1].targetPort: no container selected by this Service declares a port named `http` (selected: Pod default/solo)",
        "a.yaml:56:34: spec.ports[0].targetPort: targetPort `http` names a port, but the selector (app=ghost) selects no pod template in namespace default",
        "b.yaml:4:9: metadata.name: ConfigMap default/settings is defined twice: here and at a.yaml:3:18",
    ];
    assert_eq!(errs, expected, "{errs:#?}");
}

#[test]
fn incremental_load_reports_duplicates_like_a_full_load() {
    let repo = valid_repo();
    let r = open_repository(repo.path()).unwrap();
    let first = Snapshot::load(&r, "HEAD", &LoadOptions::default()).unwrap();
    repo.write(
        "a-copy.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-config, namespace: shop}\n",
    );
    repo.commit("duplicate");
    let c = kommit_desired::resolve_commit(&r, "HEAD").unwrap();
    let errors =
        |prev: Option<&Snapshot>| match Snapshot::load_commit(&r, c, &LoadOptions::default(), prev)
        {
            Err(LoadError::Rejected(rej)) => rej
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
    let full = errors(None);
    assert_eq!(
        full,
        [
            "shop.yaml:9:9: metadata.name: ConfigMap shop/web-config is defined twice: here and at a-copy.yaml:3:18"
        ]
    );
    assert_eq!(errors(Some(&first)), full);
}

#[test]
fn service_addresses_clash_or_leave_the_range() {
    let repo = GitRepo::init();
    let svc = |name: &str, spec: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}  ports:\n  - port: 80\n"
        )
    };
    repo.write(
        "a.yaml",
        &format!(
            "{}---\n{}",
            svc("one", "  clusterIP: 198.19.0.10\n"),
            svc("np", "  type: NodePort\n")
        )
        .replace("  - port: 80\n", "  - port: 80\n    nodePort: 30080\n")
        .replacen("    nodePort: 30080\n", "", 1),
    );
    repo.write(
        "b.yaml",
        &format!(
            "{}---\n{}---\n{}---\n{}",
            svc("two", "  clusterIP: 198.19.0.10\n"),
            svc("far", "  clusterIP: 10.0.0.1\n"),
            svc("bad", "  clusterIP: not-an-ip\n"),
            svc("np2", "  type: LoadBalancer\n")
        )
        .replace("  - port: 80\n", "  - port: 80\n    nodePort: 30080\n")
        .replacen("    nodePort: 30080\n", "", 3),
    );
    repo.commit("clashes");
    let errs = errors(&repo, "HEAD");
    let expected = [
        "a.yaml:6:14: spec.clusterIP: clusterIP 198.19.0.10 is also claimed by Service default/two (b.yaml)",
        "a.yaml:18:15: spec.ports[0].nodePort: nodePort 30080/TCP is also claimed by Service default/np2 ports[0] (b.yaml)",
        "b.yaml:6:14: spec.clusterIP: clusterIP 198.19.0.10 is also claimed by Service default/one (a.yaml)",
        "b.yaml:15:14: spec.clusterIP: clusterIP 10.0.0.1 is outside the service range 198.19.0.0/16 (or is its network or broadcast address)",
        "b.yaml:24:14: spec.clusterIP: clusterIP `not-an-ip` is not an IPv4 address (or `None` for a headless Service)",
        "b.yaml:36:15: spec.ports[0].nodePort: nodePort 30080/TCP is also claimed by Service default/np ports[0] (a.yaml)",
    ];
    assert_eq!(errs, expected, "{errs:#?}");

    // Another range accepts 10.0.0.1 and refuses the 198.19 ones.
    let r = open_repository(repo.path()).unwrap();
    let options = LoadOptions {
        service_cidr: kommit_desired::ServiceCidr {
            base: "10.0.0.0".parse().unwrap(),
            prefix: 8,
        },
        ..LoadOptions::default()
    };
    let Err(LoadError::Rejected(rej)) = Snapshot::load(&r, "HEAD", &options) else {
        panic!("rejected")
    };
    let text: Vec<String> = rej.errors.iter().map(ToString::to_string).collect();
    assert!(text.iter().all(|e| !e.contains("10.0.0.1")), "{text:#?}");
    assert!(
        text.iter()
            .any(|e| e.contains("198.19.0.10 is outside the service range 10.0.0.0/8")),
        "{text:#?}"
    );
}
