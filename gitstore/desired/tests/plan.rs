//! Plans between two commits of a real repository, checked against golden files.
//! Run with `KOMMIT_BLESS=1` to rewrite the golden files after an intended change.
#![allow(clippy::unwrap_used)]

#[path = "../../../tests/support/mod.rs"]
mod support;

use kommit_desired::{LoadError, LoadOptions, Plan, Snapshot, open_repository, plan};
use support::GitRepo;

const BASE: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 3
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: shop/web:1.0
          ports: [{name: http, containerPort: 8080}]
          envFrom: [{configMapRef: {name: web-config}}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: worker
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: worker}
  template:
    metadata:
      labels: {app: worker}
    spec:
      containers:
        - name: worker
          image: shop/worker:1.0
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
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: shop
data:
  GREETING: hello
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: legacy
  namespace: shop
data:
  OLD: \"yes\"
";

/// The head: web's image changes (rolling update), worker scales, the Service only gets
/// a label (its fields are also reordered: no change from that), web-config changes,
/// legacy goes, a CronJob comes.
const HEAD_MAIN: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 3
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: shop/web:1.1
          ports: [{name: http, containerPort: 8080}]
          envFrom: [{configMapRef: {name: web-config}}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: worker
  namespace: shop
spec:
  replicas: 4
  selector:
    matchLabels: {app: worker}
  template:
    metadata:
      labels: {app: worker}
    spec:
      containers:
        - name: worker
          image: shop/worker:1.0
---
kind: Service
apiVersion: v1
metadata:
  namespace: shop
  name: web
  labels: {tier: front}
spec:
  ports:
    - targetPort: http
      port: 80
  selector: {app: web}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: shop
data:
  GREETING: bonjour
";

const CRON: &str = "\
apiVersion: batch/v1
kind: CronJob
metadata:
  name: report
  namespace: shop
spec:
  schedule: \"0 6 * * *\"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
            - name: report
              image: shop/report:1.0
";

fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("KOMMIT_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with KOMMIT_BLESS=1 to create it)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{name} differs from the golden file (KOMMIT_BLESS=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

fn repo_with_two_commits() -> (GitRepo, String, String) {
    let repo = GitRepo::init();
    repo.write("shop.yaml", BASE);
    let base = repo.commit("base");
    repo.write("shop.yaml", HEAD_MAIN);
    repo.write("jobs/report.yaml", CRON);
    let head = repo.commit("head");
    (repo, base, head)
}

fn load(repo: &GitRepo, rev: &str) -> Snapshot {
    let r = open_repository(repo.path()).unwrap();
    Snapshot::load(&r, rev, &LoadOptions::default()).unwrap()
}

#[test]
fn plan_between_two_commits_matches_golden_files() {
    let (repo, base, head) = repo_with_two_commits();
    let old = load(&repo, &base);
    let new = load(&repo, &head);
    let p = plan(Some(&old), &new);
    assert!(p.is_valid());
    // The Service gained a label; reordering its fields alone would be no change.
    let changed: Vec<String> = p
        .changes
        .iter()
        .map(|c| format!("{} {}", c.action.as_str(), c.key))
        .collect();
    assert_eq!(
        changed,
        [
            "changed ConfigMap shop/legacy".replace("changed", "removed"),
            "changed ConfigMap shop/web-config".to_owned(),
            "changed Service shop/web".to_owned(),
            "changed Deployment shop/web".to_owned(),
            "changed Deployment shop/worker".to_owned(),
            "added CronJob shop/report".to_owned(),
        ]
    );
    assert_eq!(p.unchanged, 1);
    golden("plan.txt", &p.render_text(false));
    golden("plan.md", &p.render_markdown());
    golden("plan.json", &p.render_json());
    let coloured = p.render_text(true);
    assert!(coloured.contains("\x1b[32m+"), "added lines are green");
    // The JSON is valid JSON with the documented top-level fields.
    let v: serde_json::Value = serde_json::from_str(&p.render_json()).unwrap();
    assert_eq!(v["schema"], "kommit.plan/v1");
    assert_eq!(v["summary"]["changed"], 4);
}

#[test]
fn reordering_fields_alone_is_no_change() {
    let repo = GitRepo::init();
    repo.write("svc.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  selector: {app: a}\n  ports: [{port: 80, name: web}]\n");
    let a = repo.commit("a");
    repo.write("svc.yaml", "kind: Service\napiVersion: v1\nspec:\n  ports: [{name: web, port: 80}]\n  selector: {app: a}\nmetadata: {name: s}\n");
    let b = repo.commit("b");
    let p = plan(Some(&load(&repo, &a)), &load(&repo, &b));
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    assert_eq!(p.unchanged, 1);
    assert!(p.render_text(false).contains("Rollout: nothing to do"));
}

#[test]
fn plan_of_a_rejected_commit_lists_its_errors() {
    let (repo, base, _) = repo_with_two_commits();
    repo.write(
        "jobs/report.yaml",
        &CRON.replace("restartPolicy: OnFailure", "restartPolicy: Always"),
    );
    let bad = repo.commit("bad");
    let r = open_repository(repo.path()).unwrap();
    let Err(LoadError::Rejected(rej)) = Snapshot::load(&r, &bad, &LoadOptions::default()) else {
        panic!("must be rejected")
    };
    let base = kommit_desired::resolve_commit(&r, &base).unwrap();
    let p = Plan::rejected(Some(base), &rej);
    golden("rejected.txt", &p.render_text(false));
    golden("rejected.md", &p.render_markdown());
    golden("rejected.json", &p.render_json());
}

#[test]
fn plan_from_nothing_adds_everything() {
    let (repo, base, _) = repo_with_two_commits();
    let p = plan(None, &load(&repo, &base));
    assert_eq!(p.count(kommit_desired::Action::Added), 6);
    golden("from-nothing.txt", &p.render_text(false));
}
