//! Container probes (liveness, readiness, startup) as the kubelet runs them.
//!
//! This module is the pure part: [`ProbeSpec`] is a pod's probe with Kubernetes' defaults
//! applied and named ports resolved, [`ProbeState`] counts consecutive results against
//! `successThreshold` / `failureThreshold` and says when the next probe is due, and
//! [`ContainerProbes`] ties a container's three probes together (the startup probe holds
//! the others until it succeeds). Time is [`tokio::time::Instant`], so tests drive it with
//! `tokio::time::pause`. [`run`] performs one probe (exec through the runtime, TCP, HTTP or HTTPS
//! GET, `grpc.health.v1` check); the worker runs one task per running container that loops "wait until due, probe,
//! record" and wakes the pod's sync when a verdict changes.
//!
//! Results follow the kubelet: before its first verdict a readiness probe says "not
//! ready", a liveness probe "alive", a startup probe "not started". A verdict changes only
//! after `successThreshold` consecutive successes or `failureThreshold` consecutive
//! failures. A failed liveness or startup verdict is final for that container instance:
//! the worker kills it and the restart gets fresh probes.

pub mod run;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::time::Instant;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Restarts the container when it fails.
    Liveness,
    /// Gates the container's (and the pod's) readiness.
    Readiness,
    /// Holds the other probes until the container has started.
    Startup,
}

impl ProbeKind {
    /// `Liveness`, `Readiness`, `Startup` (as in kubelet's event messages).
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Runs a command in the container; exit code 0 is success.
    Exec {
        /// argv.
        command: Vec<String>,
    },
    /// Opens a TCP connection.
    Tcp {
        /// Host to connect to (the pod IP when `None`).
        host: Option<String>,
        /// Port.
        port: u16,
    },
    /// The standard gRPC health check (`grpc.health.v1.Health/Check`) on the pod IP;
    /// `SERVING` is success.
    Grpc {
        /// Port.
        port: u16,
        /// The service name asked about (empty: the server as a whole).
        service: String,
    },
    /// HTTP GET; a status from 200 to 399 is success.
    Http {
        /// `HTTP` or `HTTPS`.
        scheme: String,
        /// Host to connect to (the pod IP when `None`).
        host: Option<String>,
        /// Path (with query).
        path: String,
        /// Port.
        port: u16,
        /// Extra request headers.
        headers: Vec<(String, String)>,
    },
}

/// A probe with Kubernetes' defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// What it does.
    pub action: Action,
    /// `initialDelaySeconds` (0).
    pub initial_delay: Duration,
    /// `periodSeconds` (10).
    pub period: Duration,
    /// `timeoutSeconds` (1).
    pub timeout: Duration,
    /// `successThreshold` (1; always 1 for liveness and startup).
    pub success_threshold: u32,
    /// `failureThreshold` (3).
    pub failure_threshold: u32,
}

/// Why a probe cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProbeError(pub String);

fn secs(v: Option<i32>, default: u64, min: u64) -> Duration {
    Duration::from_secs(v.map_or(default, |s| s.max(0) as u64).max(min))
}

fn count(v: Option<i32>, default: u32) -> u32 {
    v.map_or(default, |n| n.max(1) as u32)
}

/// A port given by number or by the name of one of the container's ports.
fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, ProbeError> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| ProbeError(format!("port {n} is out of range"))),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| {
                    ProbeError(format!("container {} has no port named \"{name}\"", c.name))
                })
        }
    }
}

impl ProbeSpec {
    /// The probe `p` of container `c` (`kind` decides whether `successThreshold` counts).
    pub fn from_k8s(p: &Probe, c: &Container, kind: ProbeKind) -> Result<Self, ProbeError> {
        let action = if let Some(e) = &p.exec {
            let command = e.command.clone().unwrap_or_default();
            if command.is_empty() {
                return Err(ProbeError("exec probe without a command".into()));
            }
            Action::Exec { command }
        } else if let Some(t) = &p.tcp_socket {
            Action::Tcp {
                host: t.host.clone().filter(|h| !h.is_empty()),
                port: resolve_port(&t.port, c)?,
            }
        } else if let Some(h) = &p.http_get {
            let mut path = h.path.clone().unwrap_or_default();
            if !path.starts_with('/') {
                path.insert(0, '/');
            }
            Action::Http {
                scheme: h.scheme.clone().unwrap_or_else(|| "HTTP".into()),
                host: h.host.clone().filter(|h| !h.is_empty()),
                path,
                port: resolve_port(&h.port, c)?,
                headers: h
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            }
        } else if let Some(g) = &p.grpc {
            Action::Grpc {
                port: resolve_port(&IntOrString::Int(g.port), c)?,
                service: g.service.clone().unwrap_or_default(),
            }
        } else {
            return Err(ProbeError(
                "a probe needs exec, tcpSocket, httpGet or grpc".into(),
            ));
        };
        let success_threshold = match kind {
            ProbeKind::Readiness => count(p.success_threshold, 1),
            _ => 1,
        };
        Ok(ProbeSpec {
            action,
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold,
            failure_threshold: count(p.failure_threshold, 3),
        })
    }
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Success,
    /// Failed, with why (`HTTP probe failed with statuscode: 503`).
    Failure(String),
}

/// Threshold and schedule state of one probe of one container instance.
#[derive(Debug, Clone)]
pub struct ProbeState {
    kind: ProbeKind,
    spec: ProbeSpec,
    next_at: Instant,
    /// The current verdict (`None`: a startup probe that has not decided yet).
    verdict: Option<bool>,
    /// The last result and how many times in a row it came.
    last: Option<bool>,
    run: u32,
}

impl ProbeState {
    /// A probe of a container that started at `started`.
    pub fn new(kind: ProbeKind, spec: ProbeSpec, started: Instant) -> Self {
        ProbeState {
            kind,
            next_at: started + spec.initial_delay,
            verdict: match kind {
                ProbeKind::Liveness => Some(true),
                ProbeKind::Readiness => Some(false),
                ProbeKind::Startup => None,
            },
            spec,
            last: None,
            run: 0,
        }
    }

    /// Which probe.
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// Its spec.
    pub fn spec(&self) -> &ProbeSpec {
        &self.spec
    }

    /// When the next probe is due.
    pub fn due(&self) -> Instant {
        self.next_at
    }

    /// The current verdict: passing (ready, alive, started) or not.
    pub fn passing(&self) -> bool {
        self.verdict == Some(true)
    }

    /// How many times in a row the last result came.
    pub fn run_length(&self) -> u32 {
        self.run
    }

    /// Records a probe that started at `at`; returns the new verdict when it changed.
    pub fn record(&mut self, ok: bool, at: Instant) -> Option<bool> {
        self.next_at = at + self.spec.period;
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = if ok {
            self.spec.success_threshold
        } else {
            self.spec.failure_threshold
        };
        if self.run < threshold || self.verdict == Some(ok) {
            return None;
        }
        self.verdict = Some(ok);
        Some(ok)
    }
}

/// What changed after a probe result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The startup probe passed: liveness and readiness probes begin.
    Started,
    /// Readiness changed.
    Ready(bool),
    /// The liveness or startup probe failed for good: the container must be killed.
    Kill {
        /// Which probe failed.
        kind: ProbeKind,
        /// The last failure.
        message: String,
    },
}

/// The probes of one container instance.
#[derive(Debug, Clone)]
pub struct ContainerProbes {
    startup: Option<ProbeState>,
    liveness: Option<ProbeState>,
    readiness: Option<ProbeState>,
    started: bool,
    killed: bool,
}

impl ContainerProbes {
    /// The probes of `c` for an instance that started at `started`; errors name the probe.
    pub fn new(c: &Container, started: Instant) -> Result<Self, ProbeError> {
        let make = |p: &Option<Probe>, kind| -> Result<Option<ProbeState>, ProbeError> {
            p.as_ref()
                .map(|p| {
                    ProbeSpec::from_k8s(p, c, kind)
                        .map(|s| ProbeState::new(kind, s, started))
                        .map_err(|e| ProbeError(format!("{} probe: {e}", kind.title())))
                })
                .transpose()
        };
        let startup = make(&c.startup_probe, ProbeKind::Startup)?;
        Ok(ContainerProbes {
            started: startup.is_none(),
            startup,
            liveness: make(&c.liveness_probe, ProbeKind::Liveness)?,
            readiness: make(&c.readiness_probe, ProbeKind::Readiness)?,
            killed: false,
        })
    }

    /// Carries over what an earlier agent reported for this same instance (started,
    /// ready), so that restarting the agent does not make running containers unready
    /// until their next probe; later results count as usual.
    pub fn resume(&mut self, started: bool, ready: bool) {
        if started && !self.started {
            self.started = true;
            if let Some(s) = &mut self.startup {
                s.verdict = Some(true);
            }
        }
        if ready
            && self.started
            && let Some(r) = &mut self.readiness
        {
            r.verdict = Some(true);
        }
    }

    /// Whether `c` has any probe.
    pub fn any(c: &Container) -> bool {
        c.startup_probe.is_some() || c.liveness_probe.is_some() || c.readiness_probe.is_some()
    }

    /// Whether the container counts as started (no startup probe, or it passed).
    pub fn started(&self) -> bool {
        self.started
    }

    /// Whether the container is ready: started, and its readiness probe (if any) passing.
    pub fn ready(&self) -> bool {
        self.started && !self.killed && self.readiness.as_ref().is_none_or(|r| r.passing())
    }

    /// Whether a liveness or startup failure condemned this instance.
    pub fn killed(&self) -> bool {
        self.killed
    }

    /// The probe to run next and when; `None` when nothing is left to probe.
    pub fn next(&self) -> Option<(ProbeKind, Instant)> {
        if self.killed {
            return None;
        }
        if !self.started {
            return self.startup.as_ref().map(|s| (s.kind, s.due()));
        }
        [&self.liveness, &self.readiness]
            .into_iter()
            .flatten()
            .map(|s| (s.kind, s.due()))
            .min_by_key(|(_, at)| *at)
    }

    /// The spec of one probe.
    pub fn spec(&self, kind: ProbeKind) -> Option<&ProbeSpec> {
        self.state(kind).map(|s| &s.spec)
    }

    /// The state of one probe.
    pub fn state(&self, kind: ProbeKind) -> Option<&ProbeState> {
        match kind {
            ProbeKind::Startup => self.startup.as_ref(),
            ProbeKind::Liveness => self.liveness.as_ref(),
            ProbeKind::Readiness => self.readiness.as_ref(),
        }
    }

    /// Records the outcome of probe `kind` started at `at`.
    pub fn record(&mut self, kind: ProbeKind, outcome: &Outcome, at: Instant) -> Option<Change> {
        let ok = *outcome == Outcome::Success;
        let state = match kind {
            ProbeKind::Startup => self.startup.as_mut(),
            ProbeKind::Liveness => self.liveness.as_mut(),
            ProbeKind::Readiness => self.readiness.as_mut(),
        }?;
        let changed = state.record(ok, at)?;
        let message = match outcome {
            Outcome::Failure(m) => m.clone(),
            Outcome::Success => String::new(),
        };
        match (kind, changed) {
            (ProbeKind::Startup, true) => {
                self.started = true;
                // Liveness and readiness begin now, after their own initial delays.
                for s in [&mut self.liveness, &mut self.readiness]
                    .into_iter()
                    .flatten()
                {
                    s.next_at = at + s.spec.initial_delay;
                }
                Some(Change::Started)
            }
            (ProbeKind::Readiness, ready) => Some(Change::Ready(ready)),
            (_, false) => {
                self.killed = true;
                Some(Change::Kill { kind, message })
            }
            (ProbeKind::Liveness, true) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, HTTPGetAction, TCPSocketAction};

    fn http_probe(port: IntOrString) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/ready".into()),
                port,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container() -> Container {
        Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_follow_kubernetes() {
        let c = container();
        let s = ProbeSpec::from_k8s(
            &http_probe(IntOrString::String("http".into())),
            &c,
            ProbeKind::Readiness,
        )
        .unwrap();
        assert_eq!(s.initial_delay, Duration::ZERO);
        assert_eq!(s.period, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!(s.success_threshold, 1);
        assert_eq!(s.failure_threshold, 3);
        match s.action {
            Action::Http {
                port, path, scheme, ..
            } => {
                assert_eq!(port, 8080, "the named port resolves");
                assert_eq!(path, "/ready");
                assert_eq!(scheme, "HTTP");
            }
            other => panic!("not http: {other:?}"),
        }
        let bad = ProbeSpec::from_k8s(
            &http_probe(IntOrString::String("admin".into())),
            &c,
            ProbeKind::Readiness,
        );
        assert!(bad.unwrap_err().0.contains("no port named \"admin\""));
        let mut live = http_probe(IntOrString::Int(8080));
        live.success_threshold = Some(3);
        let s = ProbeSpec::from_k8s(&live, &c, ProbeKind::Liveness).unwrap();
        assert_eq!(s.success_threshold, 1, "liveness always uses 1");
        let tcp = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(70000),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(ProbeSpec::from_k8s(&tcp, &c, ProbeKind::Readiness).is_err());
    }

    fn spec(period: u64, delay: u64, success: u32, failure: u32) -> ProbeSpec {
        ProbeSpec {
            action: Action::Exec {
                command: vec!["true".into()],
            },
            initial_delay: Duration::from_secs(delay),
            period: Duration::from_secs(period),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    /// Drives `state` with `results` one period apart, returning the verdict after each.
    async fn drive(state: &mut ProbeState, results: &[bool]) -> Vec<bool> {
        let mut out = Vec::new();
        for ok in results {
            tokio::time::sleep_until(state.due()).await;
            state.record(*ok, Instant::now());
            out.push(state.passing());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_needs_consecutive_successes_and_failures() {
        let start = Instant::now();
        let mut r = ProbeState::new(ProbeKind::Readiness, spec(2, 5, 2, 3), start);
        assert!(!r.passing(), "not ready before the first probe");
        assert_eq!(r.due() - start, Duration::from_secs(5), "initial delay");
        let v = drive(
            &mut r,
            &[
                true, false, true, true, false, false, true, false, false, false,
            ],
        )
        .await;
        assert_eq!(
            v,
            [
                false, false, false, true, true, true, true, true, true, false
            ]
        );
        // Ten probes: 5 s delay then 2 s apart.
        assert_eq!(Instant::now() - start, Duration::from_secs(5 + 9 * 2));
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_starts_alive_and_fails_after_the_threshold() {
        let start = Instant::now();
        let mut l = ProbeState::new(ProbeKind::Liveness, spec(10, 0, 1, 3), start);
        assert!(l.passing());
        assert_eq!(l.due(), start, "no initial delay: probe at once");
        let v = drive(&mut l, &[false, false, true, false, false, false]).await;
        assert_eq!(v, [true, true, true, true, true, false]);
        assert_eq!(Instant::now() - start, Duration::from_secs(50));
    }

    fn probed(startup: bool, liveness: bool, readiness: bool) -> Container {
        let exec = |cmd: &str| Probe {
            exec: Some(ExecAction {
                command: Some(vec![cmd.into()]),
            }),
            period_seconds: Some(1),
            failure_threshold: Some(2),
            ..Default::default()
        };
        Container {
            name: "c".into(),
            startup_probe: startup.then(|| exec("startup")),
            liveness_probe: liveness.then(|| Probe {
                initial_delay_seconds: Some(3),
                ..exec("liveness")
            }),
            readiness_probe: readiness.then(|| exec("readiness")),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn startup_holds_the_other_probes() {
        let start = Instant::now();
        let mut p = ContainerProbes::new(&probed(true, true, true), start).unwrap();
        assert!(!p.started() && !p.ready());
        // Only the startup probe runs while the container has not started.
        for _ in 0..3 {
            let (kind, at) = p.next().unwrap();
            assert_eq!(kind, ProbeKind::Startup);
            tokio::time::sleep_until(at).await;
            assert_eq!(
                p.record(kind, &Outcome::Failure("no".into()), Instant::now())
                    .filter(|c| !matches!(c, Change::Kill { .. })),
                None
            );
            if p.killed() {
                break;
            }
        }
        assert!(p.killed(), "two startup failures kill the container");
        assert_eq!(p.next(), None, "a condemned instance is not probed");

        let start = Instant::now();
        let mut p = ContainerProbes::new(&probed(true, true, true), start).unwrap();
        let (kind, at) = p.next().unwrap();
        tokio::time::sleep_until(at).await;
        assert_eq!(
            p.record(kind, &Outcome::Success, Instant::now()),
            Some(Change::Started)
        );
        assert!(p.started() && !p.ready(), "started, not yet ready");
        // Readiness now (no delay); liveness 3 s after the start.
        let (kind, at) = p.next().unwrap();
        assert_eq!((kind, at), (ProbeKind::Readiness, Instant::now()));
        assert_eq!(
            p.record(kind, &Outcome::Success, at),
            Some(Change::Ready(true))
        );
        assert!(p.ready());
        let (kind, at) = p.next().unwrap();
        assert_eq!(kind, ProbeKind::Readiness);
        assert_eq!(at - Instant::now(), Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(2)).await;
        p.record(ProbeKind::Readiness, &Outcome::Success, Instant::now());
        let (kind, at) = p.next().unwrap();
        assert_eq!(kind, ProbeKind::Liveness);
        assert_eq!(at - start, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_failure_kills_and_readiness_follows_its_probe() {
        let start = Instant::now();
        let mut p = ContainerProbes::new(&probed(false, true, true), start).unwrap();
        assert!(p.started(), "no startup probe: started at once");
        assert!(!p.ready(), "a readiness probe has not passed yet");
        let mut changes = Vec::new();
        let mut ready_seen = Vec::new();
        // Readiness passes; liveness fails from the start.
        while let Some((kind, at)) = p.next() {
            tokio::time::sleep_until(at).await;
            let outcome = match kind {
                ProbeKind::Liveness => Outcome::Failure("exit 1".into()),
                _ => Outcome::Success,
            };
            if let Some(c) = p.record(kind, &outcome, Instant::now()) {
                changes.push(c);
            }
            ready_seen.push(p.ready());
            assert!(Instant::now() - start < Duration::from_secs(60));
        }
        assert_eq!(
            changes,
            [
                Change::Ready(true),
                Change::Kill {
                    kind: ProbeKind::Liveness,
                    message: "exit 1".into()
                }
            ]
        );
        // Liveness first probes at 3 s, fails at 3 and 4 s: killed at 4 s.
        assert_eq!(Instant::now() - start, Duration::from_secs(4));
        assert!(!p.ready(), "a killed container is not ready");
        assert_eq!(ready_seen.first(), Some(&true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_agent_resumes_the_reported_verdicts() {
        let mut p = ContainerProbes::new(&probed(true, true, true), Instant::now()).unwrap();
        p.resume(true, true);
        assert!(p.started() && p.ready());
        // The next readiness failure counts from there (failureThreshold 2).
        let mut kinds = Vec::new();
        while p.ready() {
            let (kind, at) = p.next().unwrap();
            tokio::time::sleep_until(at).await;
            kinds.push(kind);
            let outcome = match kind {
                ProbeKind::Readiness => Outcome::Failure("503".into()),
                _ => Outcome::Success,
            };
            p.record(kind, &outcome, Instant::now());
        }
        assert_eq!(kinds, [ProbeKind::Readiness, ProbeKind::Readiness]);
        // Nothing reported ready: a readiness probe must pass first.
        let mut p = ContainerProbes::new(&probed(false, false, true), Instant::now()).unwrap();
        p.resume(true, false);
        assert!(p.started() && !p.ready());
    }

    #[test]
    fn no_probes_means_started_and_ready() {
        let p = ContainerProbes::new(&probed(false, false, false), Instant::now()).unwrap();
        assert!(p.started() && p.ready());
        assert_eq!(p.next(), None);
    }
}
