//! Agent scenarios run the same way on every runtime.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;
use kommit_node::runtime::{LogOptions, Runtime};
use kommit_node::{MemoryControlPlane, container_logs};

/// What a scenario needs from the runtime under test.
pub trait Harness {
    fn node(&self) -> &str;
    fn runtime(&self) -> Arc<dyn Runtime>;
    /// Removes a container behind the agent's back (`docker rm -f`).
    fn remove_behind_back(&self, id: &str);
    /// Ids of every runtime object (sandboxes and containers) of a pod, seen from outside.
    fn objects_of(&self, uid: &str) -> Vec<String>;
    /// A port the test's HTTP server may listen on.
    fn free_port(&self) -> u16;
    /// A working directory that exists where containers run.
    fn workdir(&self) -> String;
    /// How containers run wget.
    fn wget(&self) -> &str;
}

pub const IMAGE: &str = "kommit.dev/demo:test";
const LIMIT: Duration = Duration::from_secs(60);

async fn log_of(rt: &dyn Runtime, uid: &str, container: &str) -> String {
    String::from_utf8_lossy(
        &container_logs(rt, uid, container, false, LogOptions::default())
            .await
            .unwrap_or_default(),
    )
    .into_owned()
}

/// A two-container pod: the client reaches the server on localhost (one network
/// namespace); env, `$(VAR)` expansion, args and workingDir are honoured; deleting the pod
/// removes its containers.
pub async fn two_containers_share_network_and_get_env_args_workdir(h: &impl Harness) {
    let control = MemoryControlPlane::new();
    let agent = start_agent(h.node(), h.runtime(), &control);
    let port = h.free_port();
    let wd = h.workdir();
    let p = pod(
        h.node(),
        "duo",
        json!({
            "containers": [
                {"name": "server", "image": IMAGE, "args": ["http", "--port", port.to_string()],
                 "env": [{"name": "PAYLOAD", "value": "from-env"}],
                 "ports": [{"containerPort": port}]},
                {"name": "client", "image": IMAGE, "command": ["sh", "-c"],
                 "args": [format!("until {} -qO- http://localhost:{port}/; do sleep 0.2; done; exec sleep 3600", h.wget())]},
                {"name": "envy", "image": IMAGE, "workingDir": wd,
                 "env": [{"name": "GREETING", "value": "hello"},
                         {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                         {"name": "BOTH", "value": "$(GREETING) $(MY_POD)"}],
                 "command": ["sh", "-c"],
                 "args": ["echo \"$(BOTH) in $(pwd)\"; exec sleep 3600"]}
            ]
        }),
    );
    let id = uid(&p);
    control.put_pod(p);
    let st = wait_status(&control, &id, LIMIT, "all three containers running", |s| {
        phase(s) == "Running" && running(s, "server") && running(s, "client") && running(s, "envy")
    })
    .await;
    assert!(st.pod_ip.is_some(), "the pod has an IP");
    assert!(st.host_ip.is_some());
    assert!(st.start_time.is_some());
    let ready = st
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    let rt = h.runtime();
    let client_log = wait_for(LIMIT, "the client's answer from the server", || {
        let rt = rt.clone();
        let id = id.clone();
        async move {
            Some(log_of(rt.as_ref(), &id, "client").await)
                .filter(|l| l.contains("payload: from-env"))
        }
    })
    .await;
    assert!(
        client_log.contains("pod: duo"),
        "the server answers with its pod name: {client_log}"
    );
    let envy = wait_for(LIMIT, "the env container's line", || {
        let rt = rt.clone();
        let id = id.clone();
        async move { Some(log_of(rt.as_ref(), &id, "envy").await).filter(|l| !l.is_empty()) }
    })
    .await;
    assert_eq!(envy, format!("hello duo in {wd}\n"));
    assert_eq!(
        h.objects_of(&id).len(),
        4,
        "one sandbox and three containers"
    );

    control.delete_pod(&id);
    wait_for(
        LIMIT,
        "the deleted pod's containers to be removed",
        || async { h.objects_of(&id).is_empty().then_some(()) },
    )
    .await;
    agent.stop().await;
}

/// A container removed behind the agent's back is noticed and started again.
pub async fn removed_container_is_restarted(h: &impl Harness) {
    let control = MemoryControlPlane::new();
    let agent = start_agent(h.node(), h.runtime(), &control);
    let p = pod(
        h.node(),
        "victim",
        json!({"containers": [{"name": "main", "image": IMAGE, "args": ["sleep"]}]}),
    );
    let id = uid(&p);
    control.put_pod(p);
    let st = wait_status(&control, &id, LIMIT, "running", |s| running(s, "main")).await;
    let first = container_id(&st, "main");
    assert_eq!(restarts(&st, "main"), 0);
    h.remove_behind_back(&first);
    let st = wait_status(&control, &id, LIMIT, "a replacement running", |s| {
        running(s, "main") && container_id(s, "main") != first
    })
    .await;
    assert_eq!(restarts(&st, "main"), 1);
    let last = cstatus(&st, "main")
        .unwrap()
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!(last.reason.as_deref(), Some("ContainerStatusUnknown"));
    assert_eq!(
        h.objects_of(&id).len(),
        2,
        "one sandbox and one container: no duplicate"
    );
    control.delete_pod(&id);
    wait_for(LIMIT, "removal", || async {
        h.objects_of(&id).is_empty().then_some(())
    })
    .await;
    agent.stop().await;
}

/// Exit codes, reasons and phases under each restartPolicy; back-off after a crash.
pub async fn restart_policies_and_exit_codes(h: &impl Harness) {
    let control = MemoryControlPlane::new();
    let agent = start_agent(h.node(), h.runtime(), &control);
    let mk = |name: &str, policy: &str, code: i32| {
        pod(
            h.node(),
            name,
            json!({"restartPolicy": policy,
                   "containers": [{"name": "main", "image": IMAGE, "args": ["exit", "--code", code.to_string()]}]}),
        )
    };
    let never_fail = mk("never-fail", "Never", 3);
    let onfail_ok = mk("onfailure-ok", "OnFailure", 0);
    let onfail_crash = mk("onfailure-crash", "OnFailure", 1);
    let always_ok = mk("always-ok", "Always", 0);
    let ids: Vec<String> = [&never_fail, &onfail_ok, &onfail_crash, &always_ok]
        .iter()
        .map(|p| uid(p))
        .collect();
    for p in [never_fail, onfail_ok, onfail_crash, always_ok] {
        control.put_pod(p);
    }
    let st = wait_status(&control, &ids[0], LIMIT, "Never pod Failed", |s| {
        phase(s) == "Failed"
    })
    .await;
    let t = terminated(&st, "main").expect("terminated state");
    assert_eq!(t.exit_code, 3);
    assert_eq!(t.reason.as_deref(), Some("Error"));
    assert!(t.started_at.is_some() && t.finished_at.is_some());
    assert_eq!(restarts(&st, "main"), 0);
    assert!(st.pod_ip.is_none(), "a finished pod has no IP");

    let st = wait_status(
        &control,
        &ids[1],
        LIMIT,
        "OnFailure exit 0 Succeeded",
        |s| phase(s) == "Succeeded",
    )
    .await;
    let t = terminated(&st, "main").unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    assert_eq!(restarts(&st, "main"), 0);

    // Crashes: restarted at once the first time, then CrashLoopBackOff (10 s).
    let st = wait_status(
        &control,
        &ids[2],
        LIMIT,
        "OnFailure crash in back-off",
        |s| waiting_reason(s, "main").as_deref() == Some("CrashLoopBackOff"),
    )
    .await;
    assert_eq!(phase(&st), "Running");
    assert!(restarts(&st, "main") >= 1);
    let msg = cstatus(&st, "main")
        .unwrap()
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(
        msg.starts_with("back-off 10s restarting failed container=main"),
        "{msg}"
    );
    let last = cstatus(&st, "main")
        .unwrap()
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!(last.exit_code, 1);

    let st = wait_status(
        &control,
        &ids[3],
        LIMIT,
        "Always restarts after exit 0",
        |s| restarts(s, "main") >= 1,
    )
    .await;
    assert_eq!(phase(&st), "Running");
    let events = control.events();
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("BackOff")),
        "BackOff events recorded"
    );
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Started"))
    );
    for id in &ids {
        control.delete_pod(id);
    }
    for id in &ids {
        wait_for(LIMIT, "removal", || async {
            h.objects_of(id).is_empty().then_some(())
        })
        .await;
    }
    agent.stop().await;
}

/// A new agent for the same node adopts the running containers (no duplicates, no
/// restarts) and removes those of pods no longer bound.
pub async fn adoption_after_agent_restart(h: &impl Harness) {
    let control = MemoryControlPlane::new();
    let agent = start_agent(h.node(), h.runtime(), &control);
    let keep = pod(
        h.node(),
        "keep",
        json!({"containers": [{"name": "main", "image": IMAGE, "args": ["sleep"]}]}),
    );
    let drop = pod(
        h.node(),
        "drop",
        json!({"containers": [{"name": "main", "image": IMAGE, "args": ["sleep"]}]}),
    );
    let (keep_id, drop_id) = (uid(&keep), uid(&drop));
    control.put_pod(keep.clone());
    control.put_pod(drop);
    let st = wait_status(&control, &keep_id, LIMIT, "keep running", |s| {
        running(s, "main")
    })
    .await;
    wait_status(&control, &drop_id, LIMIT, "drop running", |s| {
        running(s, "main")
    })
    .await;
    let before = container_id(&st, "main");
    let objects_before = h.objects_of(&keep_id);
    agent.stop().await;

    // While no agent runs, "drop" is unbound. A new agent and a new control plane.
    let control = MemoryControlPlane::new();
    control.put_pod(keep);
    let agent = start_agent(h.node(), h.runtime(), &control);
    let st = wait_status(&control, &keep_id, LIMIT, "keep reported running", |s| {
        running(s, "main")
    })
    .await;
    assert_eq!(
        container_id(&st, "main"),
        before,
        "the same container, adopted"
    );
    assert_eq!(restarts(&st, "main"), 0);
    wait_for(LIMIT, "the unbound pod's containers to go", || async {
        h.objects_of(&drop_id).is_empty().then_some(())
    })
    .await;
    // Give the agent a few relists: still exactly the same objects.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut a = h.objects_of(&keep_id);
    let mut b = objects_before;
    a.sort();
    b.sort();
    assert_eq!(a, b, "no duplicates");
    control.delete_pod(&keep_id);
    wait_for(LIMIT, "removal", || async {
        h.objects_of(&keep_id).is_empty().then_some(())
    })
    .await;
    agent.stop().await;
}

/// A changed container spec replaces the running container; a pod marked for deletion is
/// stopped with its grace period and reported finished before it goes away.
pub async fn spec_change_and_graceful_deletion(h: &impl Harness) {
    let control = MemoryControlPlane::new();
    let agent = start_agent(h.node(), h.runtime(), &control);
    let mut p = pod(
        h.node(),
        "changing",
        json!({"containers": [{"name": "main", "image": IMAGE, "args": ["sleep"],
                               "env": [{"name": "VERSION", "value": "1"}]}]}),
    );
    let id = uid(&p);
    control.put_pod(p.clone());
    let st = wait_status(&control, &id, LIMIT, "running", |s| running(s, "main")).await;
    let first = container_id(&st, "main");

    p.spec.as_mut().unwrap().containers[0].env.as_mut().unwrap()[0].value = Some("2".into());
    control.put_pod(p.clone());
    let st = wait_status(&control, &id, LIMIT, "the replacement running", |s| {
        running(s, "main") && container_id(s, "main") != first
    })
    .await;
    assert_eq!(restarts(&st, "main"), 1);

    // Deletion: the demo workload exits 0 on SIGTERM, well before the 30 s grace ends.
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    ));
    p.metadata.deletion_grace_period_seconds = Some(30);
    let t = std::time::Instant::now();
    control.put_pod(p);
    let st = wait_status(&control, &id, LIMIT, "a finished phase", |s| {
        matches!(phase(s), "Succeeded" | "Failed")
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "stopped by SIGTERM, not after the grace period"
    );
    let term = terminated(&st, "main").expect("terminated");
    assert!(matches!(term.exit_code, 0 | 143), "{term:?}");
    control.delete_pod(&id);
    wait_for(LIMIT, "removal", || async {
        h.objects_of(&id).is_empty().then_some(())
    })
    .await;
    agent.stop().await;
}

/// Probes on a real runtime: an HTTP readiness probe holds the container unready until the
/// server says ready, an exec liveness probe that passes changes nothing, a startup probe
/// holds the readiness probe, an HTTP liveness probe that starts failing restarts its
/// container (event `Killing`, `restartCount`, `lastState`), and deleting the pod runs
/// the preStop httpGet hook (sent from the node to the test's listener) before SIGTERM.
pub async fn probes_and_pre_stop(h: &impl Harness) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // The preStop hook's target: a listener of the test, counting calls with the header.
    let hooks = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_port = listener.local_addr().unwrap().port();
    let seen = hooks.clone();
    let app = axum::Router::new().route(
        "/drain",
        axum::routing::get(move |hd: axum::http::HeaderMap| async move {
            if hd.get("x-from").is_some_and(|v| v == "prestop") {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            "drained"
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let control = MemoryControlPlane::new();
    let agent = start_agent(h.node(), h.runtime(), &control);
    let web = h.free_port();
    // Both containers share the pod's network: the second one needs another port.
    let flaky = match h.free_port() {
        p if p != web => p,
        _ => web + 1,
    };
    let flaky_grpc = match h.free_port() {
        p if p != web && p != flaky => p,
        _ => web.max(flaky) + 1,
    };
    let mut p = pod(
        h.node(),
        "probed",
        json!({
            "terminationGracePeriodSeconds": 10,
            "containers": [
                {"name": "web", "image": IMAGE,
                 "args": ["http", "--port", web.to_string(), "--ready-after", "5"],
                 "ports": [{"name": "http", "containerPort": web}],
                 "startupProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"},
                                    "periodSeconds": 1},
                 "livenessProbe": {"exec": {"command": ["sh", "-c", "exit 0"]},
                                   "periodSeconds": 1},
                 "lifecycle": {"preStop": {"httpGet": {
                     "host": "127.0.0.1", "port": hook_port, "path": "/drain",
                     "httpHeaders": [{"name": "X-From", "value": "prestop"}]}}}},
                // Its liveness asks the standard gRPC health service (NOT_SERVING after 2 s).
                {"name": "flaky", "image": IMAGE,
                 "args": ["flip-health", "--port", flaky.to_string(), "--after", "2",
                          "--grpc-port", flaky_grpc.to_string()],
                 "livenessProbe": {"grpc": {"port": flaky_grpc},
                                   "periodSeconds": 1, "failureThreshold": 2}},
            ]
        }),
    );
    let id = uid(&p);
    control.put_pod(p.clone());
    let ready = |s: &PodStatus, name: &str| cstatus(s, name).is_some_and(|c| c.ready);
    let cond = |s: &PodStatus, t: &str| {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .map(|c| c.status.clone())
            .unwrap_or_default()
    };
    // Running but not ready while /ready answers 503.
    let st = wait_status(&control, &id, LIMIT, "web running", |s| running(s, "web")).await;
    assert!(!ready(&st, "web"), "ready before its probe passed: {st:?}");
    assert_eq!(cond(&st, "Ready"), "False");
    // Ready once it answers 200.
    let st = wait_status(&control, &id, LIMIT, "web ready", |s| ready(s, "web")).await;
    assert_eq!(
        cstatus(&st, "web").unwrap().started,
        Some(true),
        "the startup probe passed"
    );
    // flaky's /healthz fails after 2 s: two failures kill it and it restarts.
    let st = wait_status(&control, &id, LIMIT, "flaky restarted", |s| {
        restarts(s, "flaky") >= 1 && running(s, "flaky")
    })
    .await;
    let last = cstatus(&st, "flaky")
        .and_then(|c| c.last_state.clone())
        .and_then(|l| l.terminated);
    assert!(
        last.is_some(),
        "lastState names the killed instance: {st:?}"
    );
    assert_eq!(restarts(&st, "web"), 0, "the passing exec liveness probe");
    let events: Vec<String> = control
        .events()
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.clone().unwrap_or_default(),
                e.message.clone().unwrap_or_default()
            )
        })
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e == "Killing: Container flaky failed liveness probe, will be restarted"),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e.starts_with(
            "Unhealthy: Liveness probe failed: service unhealthy (responded with \"NOT_SERVING\")"
        )),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e.starts_with(
            "Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 503"
        )),
        "{events:#?}"
    );

    // Deletion runs web's preStop hook, then stops it well before the grace ends.
    assert_eq!(hooks.load(Ordering::SeqCst), 0);
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    ));
    control.put_pod(p);
    wait_status(&control, &id, LIMIT, "a finished phase", |s| {
        matches!(phase(s), "Succeeded" | "Failed")
    })
    .await;
    assert_eq!(hooks.load(Ordering::SeqCst), 1, "the preStop hook ran once");
    control.delete_pod(&id);
    wait_for(LIMIT, "removal", || async {
        h.objects_of(&id).is_empty().then_some(())
    })
    .await;
    agent.stop().await;
}

/// Deleting a pod whose container ignores SIGTERM: its preStop exec hook runs in the
/// container first (the container sees the hook's file), then SIGTERM, then SIGKILL once
/// the grace period has passed (exit code 137).
pub async fn pre_stop_exec_then_sigkill_after_grace(h: &impl Harness) {
    let control = MemoryControlPlane::new();
    let agent = start_agent(h.node(), h.runtime(), &control);
    let marker = format!("prestop-{}", unique("m"));
    let mut p = pod(
        h.node(),
        "stubborn",
        json!({
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "main", "image": IMAGE, "workingDir": h.workdir(),
                "command": ["sh", "-c"],
                "args": [format!(
                    "trap '' TERM; echo started; while true; do \
                     if [ -f {marker} ]; then echo saw-prestop; rm -f {marker}; fi; \
                     sleep 0.1; done")],
                "lifecycle": {"preStop": {"exec": {"command": [
                    "sh", "-c", format!("touch {marker}; sleep 0.5")]}}},
            }]
        }),
    );
    let id = uid(&p);
    control.put_pod(p.clone());
    wait_status(&control, &id, LIMIT, "running", |s| running(s, "main")).await;
    wait_for(LIMIT, "the container's first output", || async {
        log_of(&*h.runtime(), &id, "main")
            .await
            .contains("started")
            .then_some(())
    })
    .await;
    assert!(
        !log_of(&*h.runtime(), &id, "main")
            .await
            .contains("saw-prestop")
    );
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    ));
    control.put_pod(p);
    let st = wait_status(&control, &id, LIMIT, "a finished phase", |s| {
        matches!(phase(s), "Succeeded" | "Failed")
    })
    .await;
    let term = terminated(&st, "main").expect("terminated");
    assert_eq!(term.exit_code, 137, "SIGTERM ignored: SIGKILL: {term:?}");
    let log = log_of(&*h.runtime(), &id, "main").await;
    assert!(
        log.contains("saw-prestop"),
        "the hook ran while the container ran: {log}"
    );
    control.delete_pod(&id);
    wait_for(LIMIT, "removal", || async {
        h.objects_of(&id).is_empty().then_some(())
    })
    .await;
    agent.stop().await;
}
