//! From a validated Git snapshot to the reconciler's [`Desired`] (plain k8s-openapi objects).
//!
//! A ConfigMap or Secret changed by a commit updates the files of the pods that mount it,
//! in place, without restarting them (as Kubernetes does). A Deployment or DaemonSet
//! annotated `kommit.dev/restart-on-config-change: "true"` is rolled instead: its pod
//! template gets the annotation `kommit.dev/config-checksum`, a hash of the ConfigMaps and
//! Secrets the template refers to (env, envFrom, volumes), so a commit changing one of them
//! changes the template and starts a rollout. The annotation is added only to what the
//! controllers see; the object in Git (and read through the API) is unchanged.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodTemplateSpec, Secret};
use kommit_desired::{Object, Snapshot};
use kommit_reconciler::Desired;
use sha2::{Digest, Sha256};

/// The annotation that asks for a rollout when referenced ConfigMaps or Secrets change.
pub const RESTART_ON_CONFIG_CHANGE: &str = "kommit.dev/restart-on-config-change";
/// The pod template annotation holding the hash of the referenced ConfigMaps and Secrets.
pub const CONFIG_CHECKSUM: &str = "kommit.dev/config-checksum";

/// The objects the controllers act on; other kinds (RBAC, ServiceAccounts, ...) are
/// served by the API but make nothing run.
pub fn from_snapshot(snapshot: &Snapshot) -> Desired {
    let mut d = Desired {
        revision: Some(snapshot.commit.to_string()),
        ..Desired::default()
    };
    for o in snapshot.objects.values() {
        match &o.object {
            Object::Deployment(x) => d.deployments.push(x.clone()),
            Object::ReplicaSet(x) => d.replica_sets.push(x.clone()),
            Object::DaemonSet(x) => d.daemon_sets.push(x.clone()),
            Object::Job(x) => d.jobs.push(x.clone()),
            Object::CronJob(x) => d.cron_jobs.push(x.clone()),
            Object::Pod(x) => d.pods.push(x.clone()),
            Object::Namespace(x) => d.namespaces.push(x.clone()),
            Object::Service(x) => d.services.push(x.clone()),
            Object::ConfigMap(x) => d.config_maps.push(x.clone()),
            Object::Secret(x) => d.secrets.push(x.clone()),
            _ => {}
        }
    }
    add_config_checksums(&mut d);
    d
}

fn wants_restart(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations
        .and_then(|a| a.get(RESTART_ON_CONFIG_CHANGE))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Adds [`CONFIG_CHECKSUM`] to the pod templates of annotated Deployments and DaemonSets.
fn add_config_checksums(d: &mut Desired) {
    let cms: BTreeMap<(String, String), ConfigMap> = d
        .config_maps
        .iter()
        .map(|c| {
            (
                key(c.metadata.namespace.as_deref(), &c.metadata.name),
                c.clone(),
            )
        })
        .collect();
    let secrets: BTreeMap<(String, String), Secret> = d
        .secrets
        .iter()
        .map(|s| {
            (
                key(s.metadata.namespace.as_deref(), &s.metadata.name),
                s.clone(),
            )
        })
        .collect();
    let stamp = |ns: Option<&str>, t: &mut PodTemplateSpec| {
        let sum = checksum(ns.unwrap_or("default"), t, &cms, &secrets);
        t.metadata
            .get_or_insert_with(Default::default)
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(CONFIG_CHECKSUM.to_string(), sum);
    };
    for dep in &mut d.deployments {
        if wants_restart(dep.metadata.annotations.as_ref())
            && let Some(spec) = &mut dep.spec
        {
            stamp(dep.metadata.namespace.as_deref(), &mut spec.template);
        }
    }
    for ds in &mut d.daemon_sets {
        if wants_restart(ds.metadata.annotations.as_ref())
            && let Some(spec) = &mut ds.spec
        {
            stamp(ds.metadata.namespace.as_deref(), &mut spec.template);
        }
    }
}

fn key(ns: Option<&str>, name: &Option<String>) -> (String, String) {
    (
        ns.unwrap_or("default").to_string(),
        name.clone().unwrap_or_default(),
    )
}

/// SHA-256 over the data of every ConfigMap and Secret the template refers to (absent ones
/// count as absent, so creating one later changes the hash too).
fn checksum(
    ns: &str,
    t: &PodTemplateSpec,
    cms: &BTreeMap<(String, String), ConfigMap>,
    secrets: &BTreeMap<(String, String), Secret>,
) -> String {
    let pod = Pod {
        spec: t.spec.clone(),
        ..Pod::default()
    };
    let (cm_names, secret_names) = kommit_node::spec::referenced_objects(&pod);
    let mut h = Sha256::new();
    for name in cm_names {
        h.update(b"configmap\0");
        h.update(name.as_bytes());
        match cms.get(&(ns.to_string(), name)) {
            Some(c) => {
                for (k, v) in c.data.iter().flatten() {
                    h.update(format!("\0d{}\0{}:", k, v.len()).as_bytes());
                    h.update(v.as_bytes());
                }
                for (k, v) in c.binary_data.iter().flatten() {
                    h.update(format!("\0b{}\0{}:", k, v.0.len()).as_bytes());
                    h.update(&v.0);
                }
            }
            None => h.update(b"\0absent"),
        }
        h.update(b"\n");
    }
    for name in secret_names {
        h.update(b"secret\0");
        h.update(name.as_bytes());
        match secrets.get(&(ns.to_string(), name)) {
            Some(s) => {
                for (k, v) in s.data.iter().flatten() {
                    h.update(format!("\0d{}\0{}:", k, v.0.len()).as_bytes());
                    h.update(&v.0);
                }
                for (k, v) in s.string_data.iter().flatten() {
                    h.update(format!("\0s{}\0{}:", k, v.len()).as_bytes());
                    h.update(v.as_bytes());
                }
            }
            None => h.update(b"\0absent"),
        }
        h.update(b"\n");
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;

    fn deployment(annotated: bool) -> Deployment {
        let mut d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "x:1",
                    "envFrom": [{"secretRef": {"name": "creds"}}]}],
                  "volumes": [{"name": "v", "configMap": {"name": "site"}}]}}}
        }))
        .unwrap();
        if annotated {
            d.metadata.annotations = Some(BTreeMap::from([(
                RESTART_ON_CONFIG_CHANGE.to_string(),
                "true".to_string(),
            )]));
        }
        d
    }

    fn cm(ns: &str, value: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "site", "namespace": ns}, "data": {"index": value}
        }))
        .unwrap()
    }

    fn sum_of(d: &Desired) -> Option<String> {
        d.deployments[0]
            .spec
            .as_ref()?
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(CONFIG_CHECKSUM)
            .cloned()
    }

    fn desired(annotated: bool, cms: Vec<ConfigMap>) -> Desired {
        let mut d = Desired {
            deployments: vec![deployment(annotated)],
            config_maps: cms,
            ..Desired::default()
        };
        add_config_checksums(&mut d);
        d
    }

    #[test]
    fn annotated_templates_change_with_their_config_maps_only() {
        assert_eq!(sum_of(&desired(false, vec![cm("shop", "v1")])), None);
        let a = sum_of(&desired(true, vec![cm("shop", "v1")])).unwrap();
        let same = sum_of(&desired(true, vec![cm("shop", "v1"), cm("other", "x")])).unwrap();
        let b = sum_of(&desired(true, vec![cm("shop", "v2")])).unwrap();
        let absent = sum_of(&desired(true, vec![])).unwrap();
        assert_eq!(a, same, "another namespace's ConfigMap does not count");
        assert_ne!(a, b);
        assert_ne!(a, absent);
        assert_eq!(a.len(), 32);
    }
}
