//! One sentence per changed object: what the cluster will do about it.

use k8s_openapi::api::core::v1::PodSpec;

use super::Action;
use crate::format::{IntOrPercent, int_or_percent};
use crate::object::{DesiredObject, Object};
use crate::snapshot::Snapshot;

fn pods(n: i32) -> String {
    if n == 1 {
        "1 pod".to_owned()
    } else {
        format!("{n} pods")
    }
}

fn template_json(o: &Object) -> Option<serde_json::Value> {
    o.template()
        .and_then(|t| serde_json::to_value(t.template).ok())
        .or_else(|| match o {
            Object::Pod(p) => serde_json::to_value(&p.spec).ok(),
            _ => None,
        })
}

fn replicas(o: &Object) -> i32 {
    match o {
        Object::Deployment(d) => d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        Object::ReplicaSet(r) => r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        Object::StatefulSet(s) => s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        _ => 1,
    }
}

pub(super) fn summary(
    action: Action,
    before: Option<&DesiredObject>,
    after: Option<&DesiredObject>,
    head: &Snapshot,
) -> String {
    match (action, before, after) {
        (Action::Added, _, Some(a)) => added(&a.object),
        (Action::Removed, Some(b), _) => removed(&b.object),
        (Action::Changed, Some(b), Some(a)) => changed(&b.object, &a.object, a, head),
        _ => String::new(),
    }
}

fn added(o: &Object) -> String {
    match o {
        Object::Deployment(_) | Object::ReplicaSet(_) => format!("{} started", pods(replicas(o))),
        Object::StatefulSet(_) => format!("{} started in order, one at a time", pods(replicas(o))),
        Object::DaemonSet(_) => "one pod started on every node".to_owned(),
        Object::Job(j) => {
            let n = j.spec.as_ref().and_then(|s| s.completions).unwrap_or(1);
            format!(
                "runs until {} complete{}",
                pods(n),
                if n == 1 { "s" } else { "" }
            )
        }
        Object::CronJob(c) => format!(
            "runs on schedule `{}`",
            c.spec
                .as_ref()
                .map(|s| s.schedule.as_str())
                .unwrap_or_default()
        ),
        Object::Pod(_) => "1 pod started".to_owned(),
        Object::Service(s) => match s.spec.as_ref().and_then(|s| s.selector.as_ref()) {
            Some(sel) if !sel.is_empty() => format!(
                "new virtual IP; endpoints are the ready pods with {}",
                crate::checks::render_labels(Some(sel))
            ),
            _ => "new virtual IP without selector (no endpoints are managed)".to_owned(),
        },
        Object::Namespace(_) => "namespace created".to_owned(),
        _ => "created".to_owned(),
    }
}

fn removed(o: &Object) -> String {
    match o {
        Object::Deployment(_) | Object::ReplicaSet(_) | Object::StatefulSet(_) => {
            format!("{} stopped and deleted", pods(replicas(o)))
        }
        Object::DaemonSet(_) => "its pod on every node stopped and deleted".to_owned(),
        Object::Job(_) | Object::CronJob(_) => "deleted with its pods".to_owned(),
        Object::Pod(_) => "1 pod stopped and deleted".to_owned(),
        Object::Service(_) => "deleted: its virtual IP and endpoints are removed".to_owned(),
        Object::Namespace(_) => "deleted with every object in it".to_owned(),
        _ => "deleted".to_owned(),
    }
}

fn rolling(
    old_n: i32,
    new_n: i32,
    surge: Option<IntOrPercent>,
    unavail: Option<IntOrPercent>,
) -> String {
    let s = surge
        .unwrap_or(IntOrPercent::Percent(25))
        .resolve(new_n, true);
    let u = unavail
        .unwrap_or(IntOrPercent::Percent(25))
        .resolve(new_n, false);
    let scale = if old_n == new_n {
        String::new()
    } else {
        format!(" (scaled from {old_n})")
    };
    format!(
        "{}{scale} replaced, rolling with maxSurge {s} and maxUnavailable {u}",
        pods(new_n)
    )
}

fn changed(b: &Object, a: &Object, after: &DesiredObject, head: &Snapshot) -> String {
    let template_changed = template_json(b) != template_json(a);
    let (old_n, new_n) = (replicas(b), replicas(a));
    let scaled = || {
        if old_n == new_n {
            "no pods replaced".to_owned()
        } else {
            format!("scaled from {old_n} to {new_n}; no pods replaced")
        }
    };
    match a {
        Object::Deployment(d) if template_changed => {
            let strategy = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
            if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
                format!("{} replaced: all {old_n} stopped, then {new_n} started (Recreate)", pods(new_n))
            } else {
                let ru = strategy.and_then(|s| s.rolling_update.as_ref());
                let surge = ru.and_then(|r| r.max_surge.as_ref()).and_then(|v| int_or_percent(v).ok());
                let unavail = ru.and_then(|r| r.max_unavailable.as_ref()).and_then(|v| int_or_percent(v).ok());
                rolling(old_n, new_n, surge, unavail)
            }
        }
        Object::ReplicaSet(_) if template_changed => {
            "template changed: running pods are kept (a ReplicaSet does not replace pods); new pods use the new template".to_owned()
        }
        Object::StatefulSet(s) if template_changed => {
            let strategy = s.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
            if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
                "template changed: pods are replaced only when deleted (OnDelete)".to_owned()
            } else {
                format!("{} replaced one at a time, highest ordinal first", pods(new_n))
            }
        }
        Object::DaemonSet(d) if template_changed => {
            let strategy = d.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
            if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
                "template changed: pods are replaced only when deleted (OnDelete)".to_owned()
            } else {
                let u = strategy
                    .and_then(|s| s.rolling_update.as_ref())
                    .and_then(|r| r.max_unavailable.as_ref())
                    .and_then(|v| int_or_percent(v).ok())
                    .map_or("1".to_owned(), |v| match v {
                        IntOrPercent::Int(i) => i.to_string(),
                        IntOrPercent::Percent(p) => format!("{p}%"),
                    });
                format!("the pod on every node replaced, maxUnavailable {u} node(s) at a time")
            }
        }
        Object::Deployment(_) | Object::ReplicaSet(_) | Object::StatefulSet(_) | Object::DaemonSet(_) => scaled(),
        Object::Job(_) => "Job replaced: the old one is deleted and the new one runs (a Job's spec cannot be updated)".to_owned(),
        Object::CronJob(c) => format!(
            "next runs on schedule `{}` use the new spec; running Jobs are not touched",
            c.spec.as_ref().map(|s| s.schedule.as_str()).unwrap_or_default()
        ),
        Object::Pod(_) => "pod replaced: deleted, then started again (a Pod cannot be updated in place)".to_owned(),
        Object::Service(s) => {
            let Object::Service(old) = b else { return String::new() };
            let sel = |x: &k8s_openapi::api::core::v1::Service| x.spec.as_ref().and_then(|s| s.selector.clone());
            let ports = |x: &k8s_openapi::api::core::v1::Service| {
                x.spec.as_ref().and_then(|s| serde_json::to_value(&s.ports).ok())
            };
            let mut parts = Vec::new();
            if sel(old) != sel(s) {
                parts.push(format!(
                    "endpoints re-selected: {} instead of {}",
                    crate::checks::render_labels(sel(s).as_ref()),
                    crate::checks::render_labels(sel(old).as_ref())
                ));
            } else {
                parts.push("endpoints unchanged".to_owned());
            }
            if ports(old) != ports(s) {
                parts.push("ports reprogrammed".to_owned());
            }
            parts.join("; ")
        }
        Object::ConfigMap(_) | Object::Secret(_) => {
            let users = users_of(after, head);
            if users.is_empty() {
                "no pod template uses it".to_owned()
            } else {
                format!(
                    "used by {}: its pods are not restarted (environment values change when a pod restarts; mounted files are refreshed in place)",
                    users.join(", ")
                )
            }
        }
        _ => "updated".to_owned(),
    }
}

/// Pod-making objects of the head that reference this ConfigMap or Secret.
fn users_of(target: &DesiredObject, head: &Snapshot) -> Vec<String> {
    let is_secret = matches!(target.object, Object::Secret(_));
    let name = &*target.key.name;
    head.objects
        .values()
        .filter(|o| o.key.namespace == target.key.namespace)
        .filter(|o| {
            o.object
                .pod_spec()
                .is_some_and(|ps| references(ps.spec, name, is_secret))
        })
        .map(|o| o.key.to_string())
        .collect()
}

fn references(spec: &PodSpec, name: &str, secret: bool) -> bool {
    let vols = spec.volumes.iter().flatten().any(|v| {
        if secret {
            v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(name)
                || v.projected.as_ref().is_some_and(|p| {
                    p.sources
                        .iter()
                        .flatten()
                        .any(|s| s.secret.as_ref().is_some_and(|s| s.name == name))
                })
        } else {
            v.config_map.as_ref().is_some_and(|c| c.name == name)
                || v.projected.as_ref().is_some_and(|p| {
                    p.sources
                        .iter()
                        .flatten()
                        .any(|s| s.config_map.as_ref().is_some_and(|c| c.name == name))
                })
        }
    });
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let envs = containers.clone().any(|c| {
        c.env
            .iter()
            .flatten()
            .filter_map(|e| e.value_from.as_ref())
            .any(|vf| {
                if secret {
                    vf.secret_key_ref.as_ref().is_some_and(|r| r.name == name)
                } else {
                    vf.config_map_key_ref
                        .as_ref()
                        .is_some_and(|r| r.name == name)
                }
            })
    });
    let env_from = containers.clone().any(|c| {
        c.env_from.iter().flatten().any(|e| {
            if secret {
                e.secret_ref.as_ref().is_some_and(|r| r.name == name)
            } else {
                e.config_map_ref.as_ref().is_some_and(|r| r.name == name)
            }
        })
    });
    vols || envs || env_from
}
