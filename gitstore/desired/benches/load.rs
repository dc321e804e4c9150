//! Load benchmark: a repository of 10,000 manifests (mixed kinds) in 200 files, made with
//! the git CLI. Prints the time of a full load + validation and of an incremental load
//! after a commit that changes one file. Targets: under 1 s and under 20 ms.
//!
//! Run: `cargo bench -p kommit-desired --bench load`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use kommit_desired::{LoadOptions, Snapshot, open_repository, resolve_commit};
use support::GitRepo;

const FILES: usize = 200;
const GROUPS: usize = 10; // 5 objects per group, 50 per file

fn file(i: usize, image_tag: &str) -> String {
    let ns = format!("ns-{i}");
    let mut out = String::new();
    for g in 0..GROUPS {
        let app = format!("app-{i}-{g}");
        if g == 0 {
            out.push_str(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n"
            ));
        } else if g % 2 == 0 {
            out.push_str(&format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {app}\n  namespace: {ns}\n---\n"
            ));
        } else {
            out.push_str(&format!(
                "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {app}-once\n  namespace: {ns}\nspec:\n  backoffLimit: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: once\n          image: busybox:1.36\n          command: [sh, -c, \"echo {app}\"]\n---\n"
            ));
        }
        out.push_str(&format!(
            "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {app}-config
  namespace: {ns}
  labels: {{app: {app}}}
data:
  MODE: production
  GREETING: hello from {app}
---
apiVersion: v1
kind: Secret
metadata:
  name: {app}-secret
  namespace: {ns}
type: Opaque
stringData:
  password: not-a-real-password-{g}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}
  namespace: {ns}
  labels: {{app: {app}, tier: web}}
spec:
  replicas: 3
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  selector:
    matchLabels: {{app: {app}}}
  template:
    metadata:
      labels: {{app: {app}, tier: web}}
    spec:
      containers:
        - name: web
          image: registry.local/{app}:{image_tag}
          ports:
            - {{name: http, containerPort: 8080}}
          envFrom:
            - configMapRef: {{name: {app}-config}}
          env:
            - name: PASSWORD
              valueFrom:
                secretKeyRef: {{name: {app}-secret, key: password}}
          resources:
            requests: {{cpu: 100m, memory: 64Mi}}
            limits: {{cpu: 500m, memory: 128Mi}}
          readinessProbe:
            httpGet: {{path: /healthz, port: http}}
            periodSeconds: 5
---
apiVersion: v1
kind: Service
metadata:
  name: {app}
  namespace: {ns}
spec:
  selector: {{app: {app}}}
  ports:
    - {{name: http, port: 80, targetPort: http}}
---
"
        ));
    }
    out
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Vec<Duration>, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        last = Some(f());
        times.push(start.elapsed());
    }
    times.sort();
    (times, last.expect("at least one run"))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn report(what: &str, times: &[Duration], target: Duration) {
    let median = times[times.len() / 2];
    println!(
        "{what:<44} min {:>9}  median {:>9}  max {:>9}  (target < {}: {})",
        ms(times[0]),
        ms(median),
        ms(times[times.len() - 1]),
        ms(target),
        if median < target { "met" } else { "MISSED" }
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing special: run
    // a small version then, so the bench is checked without taking long.
    let quick = !std::env::args().any(|a| a == "--bench");
    let files = if quick { 4 } else { FILES };
    let repo = GitRepo::init();
    let gen_start = Instant::now();
    for i in 0..files {
        repo.write(
            &format!("manifests/team-{:02}/app-{i:03}.yaml", i % 20),
            &file(i, "1.0"),
        );
    }
    repo.commit("10,000 manifests");
    println!(
        "generated {} manifests in {files} files with git in {}",
        files * GROUPS * 5,
        ms(gen_start.elapsed())
    );
    // Where the time of one file goes: YAML to positioned tree, tree to JSON.
    let text = file(1, "1.0");
    let (t, docs) = time(if quick { 1 } else { 20 }, || {
        kommit_desired::yaml::parse_documents(&text).unwrap()
    });
    let (t2, _) = time(if quick { 1 } else { 20 }, || {
        docs.iter()
            .map(|d| d.to_json().unwrap())
            .collect::<Vec<_>>()
    });
    println!(
        "one file of 50 manifests: YAML parse {} , to JSON {}",
        ms(t[t.len() / 2]),
        ms(t2[t2.len() / 2])
    );
    let options = LoadOptions::default();
    let runs = if quick { 1 } else { 7 };

    for packed in [false, true] {
        if packed {
            repo.git(&["gc", "-q"]);
        }
        let label = if packed { "packed" } else { "loose objects" };
        let (times, first) = time(runs, || {
            let r = open_repository(repo.path()).unwrap();
            Snapshot::load(&r, "HEAD", &options).expect("the generated commit is valid")
        });
        assert_eq!(first.objects.len(), files * GROUPS * 5);
        report(
            &format!("full load + validation ({label})"),
            &times,
            Duration::from_secs(1),
        );
        println!("    last run: {:?}", first.stats());

        // One file changes in a new commit.
        let n = if packed { 2 } else { 1 };
        repo.write(
            "manifests/team-00/app-000.yaml",
            &file(0, &format!("2.{n}")),
        );
        repo.commit("one file");
        let r = open_repository(repo.path()).unwrap();
        let head = resolve_commit(&r, "HEAD").unwrap();
        let (times, inc) = time(runs * 3, || {
            Snapshot::load_commit(&r, head, &options, Some(&first)).expect("valid")
        });
        assert_eq!(inc.blobs_read(), 1);
        assert_eq!(inc.objects.len(), first.objects.len());
        report(
            &format!("incremental load, one file changed ({label})"),
            &times,
            Duration::from_millis(20),
        );
        println!("    last run: {:?}", inc.stats());
    }
}
