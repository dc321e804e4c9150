//! Pod status as a kubelet computes it: phase, conditions, container statuses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as K8sContainerStatus, HostIP, Pod, PodCondition, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::runtime::{ContainerState, ContainerStatus, RuntimeKind};

/// What the worker knows of one container of the spec, for its status.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContainerView {
    /// Newest instance (or a synthetic one for a container removed behind our back).
    pub latest: Option<ContainerStatus>,
    /// The instance before it (for `lastState`).
    pub previous: Option<ContainerStatus>,
    /// Waiting reason and message set by this sync (image errors, back-off, config errors).
    pub waiting: Option<(String, String)>,
    /// Restart count.
    pub restart_count: i32,
    /// Readiness (from probes; running without a readiness probe is ready).
    pub ready: bool,
    /// Started (running, and its startup probe passed if it has one).
    pub started: bool,
}

pub(crate) fn terminated(c: &ContainerStatus, scheme: &str) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: c.exit_code.unwrap_or(
            if c.reason.as_deref() == Some("ContainerStatusUnknown") {
                137
            } else {
                0
            },
        ),
        reason: c.reason.clone(),
        message: c.message.clone(),
        started_at: c.started_at.map(Time),
        finished_at: c.finished_at.map(Time),
        container_id: (!c.id.is_empty()).then(|| format!("{scheme}://{}", c.id)),
        signal: None,
    }
}

fn k8s_container_status(
    name: &str,
    image: &str,
    v: &ContainerView,
    scheme: &str,
) -> K8sContainerStatus {
    let state = if let Some((reason, message)) = &v.waiting {
        K8sState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: Some(message.clone()),
            }),
            ..Default::default()
        }
    } else {
        match &v.latest {
            Some(c) if c.state == ContainerState::Running => K8sState {
                running: Some(ContainerStateRunning {
                    started_at: c.started_at.map(Time),
                }),
                ..Default::default()
            },
            Some(c) if c.state == ContainerState::Exited => K8sState {
                terminated: Some(terminated(c, scheme)),
                ..Default::default()
            },
            _ => K8sState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".into()),
                    message: None,
                }),
                ..Default::default()
            },
        }
    };
    // lastState: the instance before the one `state` describes.
    let last = if v.waiting.is_some() {
        v.latest
            .as_ref()
            .filter(|c| c.state == ContainerState::Exited)
    } else {
        v.previous
            .as_ref()
            .filter(|c| c.state == ContainerState::Exited)
    };
    let running = state.running.is_some();
    K8sContainerStatus {
        name: name.to_string(),
        image: image.to_string(),
        image_id: v
            .latest
            .as_ref()
            .map(|c| c.image_id.clone())
            .unwrap_or_default(),
        container_id: v
            .latest
            .as_ref()
            .filter(|c| !c.id.is_empty())
            .map(|c| format!("{scheme}://{}", c.id)),
        ready: running && v.ready,
        started: Some(running && v.started),
        restart_count: v.restart_count,
        state: Some(state),
        last_state: Some(match last {
            Some(c) => K8sState {
                terminated: Some(terminated(c, scheme)),
                ..Default::default()
            },
            None => K8sState::default(),
        }),
        ..Default::default()
    }
}

/// Counts used by the phase rule.
fn phase(
    statuses: &[K8sContainerStatus],
    restart_policy: &str,
    initializing: bool,
    init_failed: bool,
) -> &'static str {
    if init_failed {
        return "Failed";
    }
    if initializing {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = st.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if st.waiting.is_some() {
            if s.last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .is_some()
            {
                stopped += 1;
            } else {
                waiting += 1;
            }
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if restart_policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if restart_policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

/// Everything the status needs besides the container views.
pub(crate) struct StatusInput<'a> {
    pub pod: &'a Pod,
    pub kind: RuntimeKind,
    pub restart_policy: &'a str,
    pub init: Vec<(String, String, ContainerView)>,
    pub containers: Vec<(String, String, ContainerView)>,
    /// Init containers are still running or waiting.
    pub initializing: bool,
    /// An init container failed for good (restartPolicy Never).
    pub init_failed: bool,
    pub pod_ip: Option<String>,
    pub host_ip: &'a str,
    pub start_time: Option<Timestamp>,
    pub previous: Option<&'a PodStatus>,
    pub now: Timestamp,
    /// Overrides the computed phase (a pod being deleted ends Succeeded or Failed).
    pub force_terminal: bool,
}

/// The pod's status.
pub(crate) fn pod_status(input: StatusInput<'_>) -> PodStatus {
    let scheme = input.kind.scheme();
    let init_statuses: Vec<_> = input
        .init
        .iter()
        .map(|(n, img, v)| k8s_container_status(n, img, v, scheme))
        .collect();
    let statuses: Vec<_> = input
        .containers
        .iter()
        .map(|(n, img, v)| k8s_container_status(n, img, v, scheme))
        .collect();
    let mut phase = phase(
        &statuses,
        input.restart_policy,
        input.initializing,
        input.init_failed,
    );
    if input.force_terminal && matches!(phase, "Running" | "Pending") {
        let all_ok = statuses.iter().all(|s| {
            s.state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0)
        });
        phase = if all_ok && !statuses.is_empty() {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let not_ready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let not_ready_msg = format!("containers with unready status: [{}]", not_ready.join(" "));
    let prev_conds: BTreeMap<String, PodCondition> = input
        .previous
        .and_then(|p| p.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_.clone(), c))
        .collect();
    let cond = |type_: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" }.to_string();
        let transition = prev_conds
            .get(type_)
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(input.now));
        PodCondition {
            type_: type_.into(),
            status,
            reason: if ok { None } else { reason.map(String::from) },
            message: if ok { None } else { message },
            last_transition_time: Some(transition),
            last_probe_time: None,
            observed_generation: None,
        }
    };
    let initialized = !input.initializing && !input.init_failed;
    let uninit: Vec<&str> = init_statuses
        .iter()
        .filter(|s| {
            s.state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_none_or(|t| t.exit_code != 0)
        })
        .map(|s| s.name.as_str())
        .collect();
    let ready_reason = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let conditions = vec![
        cond(
            "Initialized",
            initialized || terminal && input.init.is_empty(),
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                uninit.join(" ")
            )),
        ),
        cond(
            "Ready",
            all_ready && !terminal,
            Some(ready_reason),
            Some(not_ready_msg.clone()),
        ),
        cond(
            "ContainersReady",
            all_ready && !terminal,
            Some(ready_reason),
            Some(not_ready_msg),
        ),
        cond("PodScheduled", true, None, None),
    ];
    let pod_ip = if terminal { None } else { input.pod_ip.clone() };
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        host_ip: Some(input.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: input.host_ip.to_string(),
        }]),
        pod_ip: pod_ip.clone(),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
        start_time: input.start_time.map(Time),
        qos_class: Some(qos_class(input.pod).into()),
        ..Default::default()
    }
}

/// Kubernetes' QoS class of a pod.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let mut any = false;
    let mut guaranteed = true;
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        if !limits.is_empty() || !requests.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            match (limits.get(res), requests.get(res)) {
                (Some(l), Some(q)) if l == q => {}
                (Some(_), None) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::PodRef;
    use std::time::Duration;

    fn inst(state: ContainerState, attempt: u32, exit: Option<i32>) -> ContainerStatus {
        ContainerStatus {
            id: format!("id{attempt}"),
            pod: PodRef {
                namespace: "d".into(),
                name: "p".into(),
                uid: "u".into(),
            },
            name: "c".into(),
            attempt,
            image: "i".into(),
            image_id: "docker://sha".into(),
            state,
            created_at: None,
            started_at: Some(Timestamp::UNIX_EPOCH),
            finished_at: exit.map(|_| Timestamp::UNIX_EPOCH + Duration::from_secs(1)),
            exit_code: exit,
            reason: exit.map(|c| {
                if c == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                }
            }),
            message: None,
            spec_hash: "h".into(),
            termination_grace: Duration::from_secs(1),
        }
    }

    fn status(views: Vec<ContainerView>, policy: &str) -> PodStatus {
        let pod = Pod::default();
        pod_status(StatusInput {
            pod: &pod,
            kind: RuntimeKind::Docker,
            restart_policy: policy,
            init: vec![],
            containers: views
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("c{i}"), "img".into(), v))
                .collect(),
            initializing: false,
            init_failed: false,
            pod_ip: Some("10.0.0.2".into()),
            host_ip: "192.0.2.1",
            start_time: None,
            previous: None,
            now: Timestamp::UNIX_EPOCH,
            force_terminal: false,
        })
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let running = ContainerView {
            latest: Some(inst(ContainerState::Running, 0, None)),
            ready: true,
            ..Default::default()
        };
        let ok = ContainerView {
            latest: Some(inst(ContainerState::Exited, 0, Some(0))),
            ..Default::default()
        };
        let failed = ContainerView {
            latest: Some(inst(ContainerState::Exited, 0, Some(1))),
            ..Default::default()
        };
        let creating = ContainerView::default();
        let crashloop = ContainerView {
            latest: Some(inst(ContainerState::Exited, 2, Some(1))),
            waiting: Some(("CrashLoopBackOff".into(), "back-off".into())),
            restart_count: 2,
            ..Default::default()
        };
        assert_eq!(
            status(vec![creating.clone()], "Always").phase.as_deref(),
            Some("Pending")
        );
        assert_eq!(
            status(vec![running.clone()], "Always").phase.as_deref(),
            Some("Running")
        );
        assert_eq!(
            status(vec![ok.clone()], "Never").phase.as_deref(),
            Some("Succeeded")
        );
        assert_eq!(
            status(vec![failed.clone()], "Never").phase.as_deref(),
            Some("Failed")
        );
        assert_eq!(
            status(vec![failed.clone()], "OnFailure").phase.as_deref(),
            Some("Running")
        );
        assert_eq!(
            status(vec![ok.clone(), failed.clone()], "Never")
                .phase
                .as_deref(),
            Some("Failed")
        );
        assert_eq!(
            status(vec![running.clone(), ok.clone()], "Never")
                .phase
                .as_deref(),
            Some("Running")
        );
        let s = status(vec![crashloop], "Always");
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let cs = &s.container_statuses.unwrap()[0];
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        assert_eq!(
            cs.last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            1
        );
        assert_eq!(cs.restart_count, 2);
        let s = status(vec![running], "Always");
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        let s = status(vec![ok], "Never");
        assert_eq!(s.pod_ip, None, "a finished pod has no IP");
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.reason.as_deref(), Some("PodCompleted"));
    }
}
