//! Fixtures and a small simulated cluster for the controller tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kommit_reconciler::memory::MemoryStore;
use kommit_reconciler::{
    Action, Config, Context, Desired, Object, Observed, meta, podutil, reconcile_all,
};
use serde::de::DeserializeOwned;

/// Base time of every test: 2023-11-14T22:13:20Z.
pub const T0: i64 = 1_700_000_000;

/// `T0 + secs`.
pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(T0 + secs).unwrap()
}

/// A context at `T0 + secs`, seeded.
pub fn ctx(secs: i64) -> Context {
    Context::seeded(t(secs), secs as u64 + 1)
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Every document of a YAML fixture file.
pub fn fixture_all<T: DeserializeOwned>(name: &str) -> Vec<T> {
    let text = std::fs::read_to_string(fixture_path(name)).unwrap();
    yaml_all(&text)
}

/// The single document of a YAML fixture file.
pub fn fixture<T: DeserializeOwned>(name: &str) -> T {
    let mut all = fixture_all(name);
    assert_eq!(all.len(), 1, "{name} has one document");
    all.remove(0)
}

/// Every document of inline YAML.
pub fn yaml_all<T: DeserializeOwned>(text: &str) -> Vec<T> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| T::deserialize(d).unwrap())
        .collect()
}

/// One document of inline YAML.
pub fn yaml<T: DeserializeOwned>(text: &str) -> T {
    serde_yaml_ng::from_str(text).unwrap()
}

/// The web Deployment fixture with `image`.
pub fn web(image: &str) -> Deployment {
    let mut d: Deployment = fixture("deployment-web.yaml");
    set_image(&mut d, image);
    d
}

/// Changes the first container's image.
pub fn set_image(d: &mut Deployment, image: &str) {
    d.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some(image.into());
}

/// The Deployment's replicas.
pub fn set_replicas(d: &mut Deployment, n: i32) {
    d.spec.as_mut().unwrap().replicas = Some(n);
}

/// Image of a pod's first container.
pub fn pod_image(p: &Pod) -> &str {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .as_deref()
        .unwrap()
}

/// Image of a ReplicaSet's template.
pub fn rs_image(rs: &ReplicaSet) -> &str {
    rs.spec
        .as_ref()
        .unwrap()
        .template
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .as_deref()
        .unwrap()
}

/// spec.replicas of a ReplicaSet.
pub fn rs_spec(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().unwrap().replicas.unwrap()
}

/// Objects created by actions, of one kind.
pub fn created<'a>(actions: &'a [Action], kind: &str) -> Vec<&'a Object> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Create(o) if o.kind() == kind => Some(o),
            _ => None,
        })
        .collect()
}

/// Objects updated by actions, of one kind.
pub fn updated<'a>(actions: &'a [Action], kind: &str) -> Vec<&'a Object> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Update(o) if o.kind() == kind => Some(o),
            _ => None,
        })
        .collect()
}

/// Names deleted by actions, of one kind.
pub fn deleted(actions: &[Action], kind: &str) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete { key, .. } if key.kind == kind => Some(key.name.clone()),
            _ => None,
        })
        .collect()
}

/// (reason, message) of every event created.
pub fn events(actions: &[Action]) -> Vec<(String, String)> {
    created(actions, "Event")
        .into_iter()
        .map(|o| match o {
            Object::Event(Event {
                reason, message, ..
            }) => (reason.clone().unwrap(), message.clone().unwrap()),
            _ => unreachable!(),
        })
        .collect()
}

/// A ready pod condition set at `since`.
pub fn make_ready(pod: &mut Pod, since: Timestamp) {
    let name = pod.spec.as_ref().unwrap().containers[0].name.clone();
    let image = pod_image(pod).to_string();
    let st = pod.status.get_or_insert_with(Default::default);
    st.phase = Some("Running".into());
    let conds = st.conditions.get_or_insert_with(Vec::new);
    conds.retain(|c| c.type_ != "Ready");
    conds.push(PodCondition {
        type_: "Ready".into(),
        status: "True".into(),
        last_transition_time: Some(Time(since)),
        ..Default::default()
    });
    st.container_statuses = Some(vec![ContainerStatus {
        name,
        ready: true,
        restart_count: 0,
        image,
        image_id: String::new(),
        ..Default::default()
    }]);
}

/// A node's lease renewed at `at`.
pub fn lease(node: &str, at: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node.into()),
            namespace: Some("kube-node-lease".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.into()),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime(at)),
            ..Default::default()
        }),
    }
}

/// A simulated cluster: the controllers over a [`MemoryStore`], plus a kubelet that makes
/// pods bound to a live node Running and Ready one step after they were bound, renews
/// the leases of live nodes, and finishes deletions of pods marked for deletion.
pub struct Sim {
    pub store: MemoryStore,
    pub desired: Desired,
    pub now: i64,
    pub config: Config,
    /// Nodes whose kubelet runs (renews its lease, starts pods).
    pub live: Vec<String>,
    /// Pods that never become ready (names), e.g. a failing readiness probe.
    pub never_ready: fn(&Pod) -> bool,
    pub seed: u64,
    pub all_events: Vec<(String, String)>,
}

impl Sim {
    pub fn new(nodes: Vec<Node>) -> Sim {
        let mut store = MemoryStore::new();
        let mut live = Vec::new();
        for mut n in nodes {
            n.metadata.creation_timestamp = Some(Time(t(0)));
            live.push(meta::name(&n.metadata).to_string());
            store.put(n.into()).unwrap();
        }
        let mut sim = Sim {
            store,
            desired: Desired::default(),
            now: 0,
            config: Config::default(),
            live,
            never_ready: |_| false,
            seed: 1,
            all_events: Vec::new(),
        };
        sim.kubelet();
        sim
    }

    pub fn observed(&self) -> Observed {
        self.store.observed()
    }

    /// One pass of every controller at the current time, actions applied.
    pub fn reconcile(&mut self) -> Vec<Action> {
        self.seed += 1;
        let ctx = Context::seeded(t(self.now), self.seed);
        let pass = reconcile_all(&ctx, &self.desired, &self.store.observed(), &self.config);
        assert!(pass.errors.is_empty(), "errors: {:?}", pass.errors);
        let _conflicts = self.store.apply_all(&pass.outcome.actions);
        self.all_events.extend(events(&pass.outcome.actions));
        pass.outcome.actions
    }

    /// The kubelets of live nodes: heartbeat, start bound pods, finish deletions.
    pub fn kubelet(&mut self) {
        let now = t(self.now);
        for n in self.live.clone() {
            self.store.put(lease(&n, now).into()).unwrap();
        }
        let obs = self.store.observed();
        for pod in obs.pods {
            let Some(node) = podutil::node_name(&pod).map(str::to_string) else {
                continue;
            };
            if !self.live.contains(&node) {
                continue;
            }
            if podutil::is_terminating(&pod) {
                let key = Object::from(pod.clone()).key().unwrap();
                self.store
                    .apply(&Action::Delete {
                        key,
                        mod_revision: None,
                    })
                    .unwrap();
                continue;
            }
            if podutil::phase(&pod) == "Pending" && !(self.never_ready)(&pod) {
                let mut p = pod.clone();
                make_ready(&mut p, now);
                self.store.put(p.into()).unwrap();
            }
        }
    }

    /// Advances the clock by `secs`, runs the kubelets and one controller pass.
    pub fn step(&mut self, secs: i64) -> Vec<Action> {
        self.now += secs;
        self.kubelet();
        self.reconcile()
    }

    /// Active pods of the Deployment's ReplicaSets (by label `app`).
    pub fn pods_of(&self, app: &str) -> Vec<Pod> {
        self.observed()
            .pods
            .into_iter()
            .filter(podutil::is_active)
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app"))
                    .map(String::as_str)
                    == Some(app)
            })
            .collect()
    }

    pub fn deployment_status(&self, name: &str) -> k8s_openapi::api::apps::v1::DeploymentStatus {
        self.observed()
            .deployment_status("default", name)
            .unwrap()
            .status
            .clone()
            .unwrap()
    }

    pub fn replica_sets(&self) -> Vec<ReplicaSet> {
        self.observed().replica_sets
    }
}
