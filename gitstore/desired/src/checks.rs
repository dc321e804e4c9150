//! Checks of one object beyond its types: names, labels, selectors, ports, quantities,
//! rollout settings. Cross-object checks are in `cross`.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Container, PodSpec, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::ValidationError;
use crate::format;
use crate::object::{DesiredObject, Object};
use crate::path;
use crate::yaml::{PathSeg, join};

struct Cx<'a> {
    obj: &'a DesiredObject,
    errors: Vec<ValidationError>,
}

impl Cx<'_> {
    fn err(&mut self, path: impl Into<Vec<PathSeg>>, message: impl Into<String>) {
        self.errors
            .push(self.obj.error_at(&path.into(), false, message.into()));
    }

    fn err_key(&mut self, path: impl Into<Vec<PathSeg>>, message: impl Into<String>) {
        self.errors
            .push(self.obj.error_at(&path.into(), true, message.into()));
    }

    fn check(&mut self, path: impl Into<Vec<PathSeg>>, r: Result<(), String>) {
        if let Err(m) = r {
            self.err(path, m);
        }
    }

    fn labels(&mut self, base: &[PathSeg], labels: Option<&BTreeMap<String, String>>) {
        for (k, v) in labels.into_iter().flatten() {
            let p = join(base, path![k.as_str()]);
            if let Err(m) = format::qualified_name(k) {
                self.err_key(p.clone(), m);
            }
            self.check(p, format::label_value(v));
        }
    }

    fn selector(&mut self, base: &[PathSeg], sel: &LabelSelector) {
        self.labels(&join(base, path!["matchLabels"]), sel.match_labels.as_ref());
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let p = join(base, path!["matchExpressions", i]);
            self.check(join(&p, path!["key"]), format::qualified_name(&e.key));
            let n = e.values.as_ref().map_or(0, Vec::len);
            match e.operator.as_str() {
                "In" | "NotIn" if n == 0 => self.err(
                    join(&p, path!["values"]),
                    "In and NotIn need at least one value",
                ),
                "Exists" | "DoesNotExist" if n > 0 => self.err(
                    join(&p, path!["values"]),
                    "Exists and DoesNotExist take no values",
                ),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                op => self.err(
                    join(&p, path!["operator"]),
                    format!("unknown operator `{op}` (In, NotIn, Exists, DoesNotExist)"),
                ),
            }
            for (j, v) in e.values.iter().flatten().enumerate() {
                self.check(join(&p, path!["values", j]), format::label_value(v));
            }
        }
    }
}

/// Every error of one object that needs no other object.
pub(crate) fn check_object(obj: &DesiredObject) -> Vec<ValidationError> {
    let mut cx = Cx {
        obj,
        errors: Vec::new(),
    };
    metadata(&mut cx);
    let o = &obj.object;
    if let Some(ps) = o.pod_spec() {
        let base: Vec<PathSeg> = ps.path.iter().map(|s| PathSeg::from(*s)).collect();
        pod_spec(&mut cx, &base, ps.spec, o);
    }
    if let Some(t) = o.template() {
        let tbase: Vec<PathSeg> = t.path.iter().map(|s| PathSeg::from(*s)).collect();
        let labels = t.template.metadata.as_ref().and_then(|m| m.labels.as_ref());
        cx.labels(&join(&tbase, path!["metadata", "labels"]), labels);
        let sel_path = {
            let mut p = tbase.clone();
            p.pop();
            p.push("selector".into());
            p
        };
        match t.selector {
            Some(sel) => {
                cx.selector(&sel_path, sel);
                let empty = sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                    && sel.match_expressions.as_ref().is_none_or(Vec::is_empty);
                if empty && !matches!(o, Object::Job(_) | Object::CronJob(_)) {
                    cx.err(sel_path.clone(), "the selector must not be empty: it would select every pod in the namespace");
                } else if !crate::cross::selector_matches(sel, labels) {
                    cx.err(
                        sel_path,
                        format!(
                            "the selector does not match the labels of {} (template labels: {})",
                            crate::yaml::render_path(&tbase),
                            render_labels(labels)
                        ),
                    );
                }
            }
            None if matches!(o, Object::Job(_) | Object::CronJob(_)) => {}
            None => cx.err(sel_path, "missing required field `selector`"),
        }
    }
    kind_specific(&mut cx);
    cx.errors
}

pub(crate) fn render_labels(labels: Option<&BTreeMap<String, String>>) -> String {
    match labels {
        Some(l) if !l.is_empty() => l
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        _ => "none".to_owned(),
    }
}

fn metadata(cx: &mut Cx<'_>) {
    let o = &cx.obj.object;
    let meta = o.metadata();
    if let Some(name) = meta.name.as_deref() {
        let r = match o {
            Object::Namespace(_) | Object::Service(_) => format::dns_label(name),
            Object::Role(_)
            | Object::RoleBinding(_)
            | Object::ClusterRole(_)
            | Object::ClusterRoleBinding(_) => format::path_segment(name),
            _ => format::dns_subdomain(name),
        };
        cx.check(path!["metadata", "name"], r);
    }
    if o.is_namespaced()
        && let Some(ns) = meta.namespace.as_deref()
    {
        cx.check(path!["metadata", "namespace"], format::dns_label(ns));
    }
    cx.labels(&path!["metadata", "labels"], meta.labels.as_ref());
    for k in meta.annotations.iter().flatten().map(|(k, _)| k) {
        if let Err(m) = format::qualified_name(k) {
            cx.err_key(path!["metadata", "annotations", k.as_str()], m);
        }
    }
}

fn pod_spec(cx: &mut Cx<'_>, base: &[PathSeg], spec: &PodSpec, owner: &Object) {
    if spec.containers.is_empty() {
        cx.err(
            join(base, path!["containers"]),
            "a pod needs at least one container",
        );
    }
    let volumes: HashSet<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    let mut seen_volumes = HashSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let p = join(base, path!["volumes", i, "name"]);
        cx.check(p.clone(), format::dns_label(&v.name));
        if !seen_volumes.insert(v.name.as_str()) {
            cx.err(p, format!("volume `{}` is defined twice", v.name));
        }
    }
    let mut names = HashSet::new();
    let mut port_names = HashSet::new();
    let lists = [
        ("initContainers", spec.init_containers.as_ref()),
        ("containers", Some(&spec.containers)),
    ];
    for (field, list) in lists {
        for (i, c) in list.into_iter().flatten().enumerate() {
            let p = join(base, path![field, i]);
            if !names.insert(c.name.as_str()) {
                cx.err(
                    join(&p, path!["name"]),
                    format!("container name `{}` is used twice in the pod", c.name),
                );
            }
            container(cx, &p, c, &volumes, &mut port_names);
        }
    }
    if let Some(rp) = spec.restart_policy.as_deref()
        && !matches!(rp, "Always" | "OnFailure" | "Never")
    {
        cx.err(
            join(base, path!["restartPolicy"]),
            format!("unknown restartPolicy `{rp}` (Always, OnFailure, Never)"),
        );
    }
    let rp_path = join(base, path!["restartPolicy"]);
    match owner {
        Object::Deployment(_)
        | Object::ReplicaSet(_)
        | Object::DaemonSet(_)
        | Object::StatefulSet(_) => {
            if let Some(rp) = spec.restart_policy.as_deref()
                && rp != "Always"
            {
                cx.err(
                    rp_path,
                    format!(
                        "a {} runs pods with restartPolicy Always, not {rp}",
                        owner.kind()
                    ),
                );
            }
        }
        Object::Job(_) | Object::CronJob(_) => match spec.restart_policy.as_deref() {
            Some("Never" | "OnFailure") => {}
            Some(rp) => cx.err(
                rp_path,
                format!("a Job's pods need restartPolicy Never or OnFailure, not {rp}"),
            ),
            None => cx.err(
                base.to_vec(),
                "a Job's pods need restartPolicy Never or OnFailure (it has no default)",
            ),
        },
        _ => {}
    }
    if let Some(sa) = spec.service_account_name.as_deref() {
        cx.check(
            join(base, path!["serviceAccountName"]),
            format::dns_subdomain(sa),
        );
    }
}

fn container<'a>(
    cx: &mut Cx<'_>,
    p: &[PathSeg],
    c: &'a Container,
    volumes: &HashSet<&str>,
    port_names: &mut HashSet<&'a str>,
) {
    cx.check(join(p, path!["name"]), format::dns_label(&c.name));
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        cx.err(p.to_vec(), "missing required field `image`");
    }
    if let Some(pp) = c.image_pull_policy.as_deref()
        && !matches!(pp, "Always" | "IfNotPresent" | "Never")
    {
        cx.err(
            join(p, path!["imagePullPolicy"]),
            format!("unknown imagePullPolicy `{pp}` (Always, IfNotPresent, Never)"),
        );
    }
    for (j, port) in c.ports.iter().flatten().enumerate() {
        let pp = join(p, path!["ports", j]);
        if !(1..=65535).contains(&port.container_port) {
            cx.err(
                join(&pp, path!["containerPort"]),
                format!("port {} is out of range 1-65535", port.container_port),
            );
        }
        if let Some(hp) = port.host_port
            && !(0..=65535).contains(&hp)
        {
            cx.err(
                join(&pp, path!["hostPort"]),
                format!("port {hp} is out of range 1-65535"),
            );
        }
        if let Some(name) = port.name.as_deref() {
            cx.check(join(&pp, path!["name"]), format::port_name(name));
            if !port_names.insert(name) {
                cx.err(
                    join(&pp, path!["name"]),
                    format!("port name `{name}` is used twice in the pod"),
                );
            }
        }
        protocol(cx, join(&pp, path!["protocol"]), port.protocol.as_deref());
    }
    if let Some(r) = &c.resources {
        let mut requests = BTreeMap::new();
        for (field, map) in [
            ("requests", r.requests.as_ref()),
            ("limits", r.limits.as_ref()),
        ] {
            for (name, q) in map.into_iter().flatten() {
                let qp = join(p, path!["resources", field, name.as_str()]);
                match format::quantity(&q.0) {
                    Ok(v) if v < 0.0 => cx.err(qp, format!("`{}` must not be negative", q.0)),
                    Ok(v) if field == "requests" => {
                        requests.insert(name.as_str(), v);
                    }
                    Ok(v) => {
                        if let Some(req) = requests.get(name.as_str())
                            && *req > v
                        {
                            cx.err(
                                qp,
                                format!("the limit {} is below the request for {name}", q.0),
                            );
                        }
                    }
                    Err(m) => cx.err(qp, m),
                }
            }
        }
    }
    for (j, e) in c.env.iter().flatten().enumerate() {
        let ep = join(p, path!["env", j]);
        if e.name.is_empty()
            || e.name.contains('=')
            || e.name.chars().any(|ch| !ch.is_ascii_graphic())
        {
            cx.err(
                join(&ep, path!["name"]),
                format!("`{}` is not a valid environment variable name", e.name),
            );
        }
        if e.value.is_some() && e.value_from.is_some() {
            cx.err(ep.clone(), "value and valueFrom are exclusive");
        }
        if let Some(vf) = &e.value_from {
            let n = [
                vf.config_map_key_ref.is_some(),
                vf.secret_key_ref.is_some(),
                vf.field_ref.is_some(),
                vf.resource_field_ref.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if n != 1 {
                cx.err(
                    join(&ep, path!["valueFrom"]),
                    "valueFrom needs exactly one of configMapKeyRef, secretKeyRef, fieldRef, resourceFieldRef",
                );
            }
        }
    }
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        if !volumes.contains(m.name.as_str()) {
            cx.err(
                join(p, path!["volumeMounts", j, "name"]),
                format!("no volume named `{}` in the pod", m.name),
            );
        }
    }
    for probe_name in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let probe = match probe_name {
            "livenessProbe" => c.liveness_probe.as_ref(),
            "readinessProbe" => c.readiness_probe.as_ref(),
            _ => c.startup_probe.as_ref(),
        };
        let Some(probe) = probe else { continue };
        let pp = join(p, path![probe_name]);
        let handlers = [
            probe.exec.is_some(),
            probe.http_get.is_some(),
            probe.tcp_socket.is_some(),
            probe.grpc.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if handlers != 1 {
            cx.err(
                pp.clone(),
                "a probe needs exactly one of exec, httpGet, tcpSocket, grpc",
            );
        }
        if let Some(h) = &probe.http_get {
            int_or_name_port(cx, join(&pp, path!["httpGet", "port"]), &h.port);
        }
        if let Some(t) = &probe.tcp_socket {
            int_or_name_port(cx, join(&pp, path!["tcpSocket", "port"]), &t.port);
        }
    }
}

fn protocol(cx: &mut Cx<'_>, p: impl Into<Vec<PathSeg>>, proto: Option<&str>) {
    if let Some(pr) = proto
        && !matches!(pr, "TCP" | "UDP" | "SCTP")
    {
        cx.err(p, format!("unknown protocol `{pr}` (TCP, UDP, SCTP)"));
    }
}

fn int_or_name_port(cx: &mut Cx<'_>, p: impl Into<Vec<PathSeg>>, v: &IntOrString) {
    match v {
        IntOrString::Int(i) if !(1..=65535).contains(i) => {
            cx.err(p, format!("port {i} is out of range 1-65535"))
        }
        IntOrString::Int(_) => {}
        IntOrString::String(s) => cx.check(p, format::port_name(s)),
    }
}

fn kind_specific(cx: &mut Cx<'_>) {
    let obj = cx.obj;
    match &obj.object {
        Object::Deployment(d) => {
            let Some(spec) = &d.spec else { return };
            replicas(cx, spec.replicas);
            if let Some(s) = &spec.strategy {
                let p = path!["spec", "strategy"];
                match s.type_.as_deref() {
                    None | Some("RollingUpdate") => {}
                    Some("Recreate") => {
                        if s.rolling_update.is_some() {
                            cx.err(
                                join(&p, path!["rollingUpdate"]),
                                "rollingUpdate may only be set with type RollingUpdate",
                            );
                        }
                    }
                    Some(t) => cx.err(
                        join(&p, path!["type"]),
                        format!("unknown strategy `{t}` (RollingUpdate, Recreate)"),
                    ),
                }
                if let Some(ru) = &s.rolling_update {
                    let rp = join(&p, path!["rollingUpdate"]);
                    let surge = ru.max_surge.as_ref().map(format::int_or_percent);
                    let unavail = ru.max_unavailable.as_ref().map(format::int_or_percent);
                    if let Some(Err(m)) = &surge {
                        cx.err(join(&rp, path!["maxSurge"]), m.clone());
                    }
                    if let Some(Err(m)) = &unavail {
                        cx.err(join(&rp, path!["maxUnavailable"]), m.clone());
                    }
                    let zero = |v: &Option<Result<format::IntOrPercent, String>>| {
                        matches!(
                            v,
                            Some(Ok(
                                format::IntOrPercent::Int(0) | format::IntOrPercent::Percent(0)
                            ))
                        )
                    };
                    if zero(&surge) && zero(&unavail) {
                        cx.err(rp, "maxSurge and maxUnavailable may not both be zero: the rollout could never progress");
                    }
                }
            }
        }
        Object::ReplicaSet(r) => replicas(cx, r.spec.as_ref().and_then(|s| s.replicas)),
        Object::StatefulSet(s) => {
            let Some(spec) = &s.spec else { return };
            replicas(cx, spec.replicas);
            if let Some(p) = spec.pod_management_policy.as_deref()
                && !matches!(p, "OrderedReady" | "Parallel")
            {
                cx.err(
                    path!["spec", "podManagementPolicy"],
                    format!("unknown podManagementPolicy `{p}` (OrderedReady, Parallel)"),
                );
            }
        }
        Object::DaemonSet(d) => {
            if let Some(t) = d
                .spec
                .as_ref()
                .and_then(|s| s.update_strategy.as_ref())
                .and_then(|u| u.type_.as_deref())
                && !matches!(t, "RollingUpdate" | "OnDelete")
            {
                cx.err(
                    path!["spec", "updateStrategy", "type"],
                    format!("unknown updateStrategy `{t}` (RollingUpdate, OnDelete)"),
                );
            }
        }
        Object::Job(j) => {
            if let Some(spec) = &j.spec {
                for (f, v) in [
                    ("parallelism", spec.parallelism),
                    ("completions", spec.completions),
                    ("backoffLimit", spec.backoff_limit),
                ] {
                    if let Some(v) = v
                        && v < 0
                    {
                        cx.err(path!["spec", f], format!("{v} must not be negative"));
                    }
                }
            }
        }
        Object::CronJob(c) => {
            if let Some(spec) = &c.spec {
                cx.check(
                    path!["spec", "schedule"],
                    format::cron_schedule(&spec.schedule),
                );
                if let Some(p) = spec.concurrency_policy.as_deref()
                    && !matches!(p, "Allow" | "Forbid" | "Replace")
                {
                    cx.err(
                        path!["spec", "concurrencyPolicy"],
                        format!("unknown concurrencyPolicy `{p}` (Allow, Forbid, Replace)"),
                    );
                }
            }
        }
        Object::Service(s) => {
            if let Some(spec) = &s.spec {
                service(cx, spec);
            }
        }
        Object::ConfigMap(c) => {
            let data = c.data.iter().flatten().map(|(k, _)| ("data", k));
            let bin = c
                .binary_data
                .iter()
                .flatten()
                .map(|(k, _)| ("binaryData", k));
            config_keys(cx, data.chain(bin));
        }
        Object::Secret(s) => {
            let data = s.data.iter().flatten().map(|(k, _)| ("data", k));
            let string = s
                .string_data
                .iter()
                .flatten()
                .map(|(k, _)| ("stringData", k));
            config_keys(cx, data.chain(string));
        }
        Object::RoleBinding(_) | Object::ClusterRoleBinding(_) => {
            let (role_ref, subjects, cluster) = match &obj.object {
                Object::RoleBinding(b) => (&b.role_ref, b.subjects.as_ref(), false),
                Object::ClusterRoleBinding(b) => (&b.role_ref, b.subjects.as_ref(), true),
                _ => return,
            };
            if role_ref.api_group != "rbac.authorization.k8s.io" {
                cx.err(
                    path!["roleRef", "apiGroup"],
                    format!(
                        "roleRef.apiGroup must be rbac.authorization.k8s.io, not `{}`",
                        role_ref.api_group
                    ),
                );
            }
            let kinds_ok = if cluster {
                role_ref.kind == "ClusterRole"
            } else {
                matches!(role_ref.kind.as_str(), "Role" | "ClusterRole")
            };
            if !kinds_ok {
                cx.err(
                    path!["roleRef", "kind"],
                    format!("roleRef.kind `{}` cannot be bound here", role_ref.kind),
                );
            }
            for (i, s) in subjects.into_iter().flatten().enumerate() {
                match s.kind.as_str() {
                    "ServiceAccount" => {
                        if cluster && s.namespace.as_deref().is_none_or(str::is_empty) {
                            cx.err(
                                path!["subjects", i],
                                "a ServiceAccount subject needs a namespace",
                            );
                        }
                    }
                    "User" | "Group" => {}
                    k => cx.err(
                        path!["subjects", i, "kind"],
                        format!("unknown subject kind `{k}` (ServiceAccount, User, Group)"),
                    ),
                }
            }
        }
        Object::Role(_) | Object::ClusterRole(_) => {
            let rules = match &obj.object {
                Object::Role(r) => r.rules.as_ref(),
                Object::ClusterRole(r) => r.rules.as_ref(),
                _ => None,
            };
            for (i, r) in rules.into_iter().flatten().enumerate() {
                if r.verbs.is_empty() {
                    cx.err(path!["rules", i, "verbs"], "a rule needs at least one verb");
                }
            }
        }
        Object::Namespace(_) | Object::Pod(_) | Object::ServiceAccount(_) => {}
    }
}

fn replicas(cx: &mut Cx<'_>, r: Option<i32>) {
    if let Some(r) = r
        && r < 0
    {
        cx.err(
            path!["spec", "replicas"],
            format!("{r} must not be negative"),
        );
    }
}

fn config_keys<'a>(cx: &mut Cx<'_>, keys: impl Iterator<Item = (&'static str, &'a String)>) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (field, k) in keys {
        if let Err(m) = format::config_key(k) {
            cx.err_key(path![field, k.as_str()], m);
        }
        if let Some(first) = seen.insert(k.as_str(), field) {
            cx.err_key(
                path![field, k.as_str()],
                format!("key `{k}` is also in {first}"),
            );
        }
    }
}

fn service(cx: &mut Cx<'_>, spec: &ServiceSpec) {
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !matches!(
        ty,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        cx.err(
            path!["spec", "type"],
            format!(
                "unknown Service type `{ty}` (ClusterIP, NodePort, LoadBalancer, ExternalName)"
            ),
        );
    }
    if ty == "ExternalName" {
        match spec.external_name.as_deref() {
            Some(n) => cx.check(path!["spec", "externalName"], format::dns_subdomain(n)),
            None => cx.err(
                path!["spec"],
                "an ExternalName Service needs spec.externalName",
            ),
        }
    }
    cx.labels(&path!["spec", "selector"], spec.selector.as_ref());
    let ports = spec.ports.as_deref().unwrap_or_default();
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if ports.is_empty() && ty != "ExternalName" && !headless {
        cx.err(
            path!["spec"],
            "a Service needs at least one port in spec.ports",
        );
    }
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path!["spec", "ports", i];
        if !(1..=65535).contains(&port.port) {
            cx.err(
                join(&p, path!["port"]),
                format!("port {} is out of range 1-65535", port.port),
            );
        }
        match port.name.as_deref() {
            Some(n) => {
                cx.check(join(&p, path!["name"]), format::dns_label(n));
                if !names.insert(n) {
                    cx.err(
                        join(&p, path!["name"]),
                        format!("port name `{n}` is used twice"),
                    );
                }
            }
            None if ports.len() > 1 => {
                cx.err(p.clone(), "with more than one port, each port needs a name")
            }
            None => {}
        }
        if let Some(tp) = &port.target_port {
            int_or_name_port(cx, join(&p, path!["targetPort"]), tp);
        }
        if let Some(np) = port.node_port {
            if !matches!(ty, "NodePort" | "LoadBalancer") {
                cx.err(
                    join(&p, path!["nodePort"]),
                    format!("nodePort needs type NodePort or LoadBalancer, not {ty}"),
                );
            } else if !(30000..=32767).contains(&np) {
                cx.err(
                    join(&p, path!["nodePort"]),
                    format!("nodePort {np} is out of range 30000-32767"),
                );
            }
        }
        protocol(cx, join(&p, path!["protocol"]), port.protocol.as_deref());
    }
}
