//! The `Table` form (meta.k8s.io/v1) kubectl asks for, with the columns Kubernetes'
//! printers show for each kind (priority 1 columns appear with `-o wide`).

use std::sync::LazyLock;

use serde::Serialize;
use serde_json::{Map, Value, json};

/// `Accept` asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
    })
}

/// What each row carries in `object` (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    /// No object.
    None,
    /// PartialObjectMetadata (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl Include {
    /// From the `includeObject` query parameter.
    pub fn parse(s: Option<&str>) -> Result<Include, String> {
        match s {
            None | Some("") | Some("Metadata") => Ok(Include::Metadata),
            Some("None") => Ok(Include::None),
            Some("Object") => Ok(Include::Object),
            Some(other) => Err(format!(
                "includeObject: unsupported value {other:?}: must be None, Metadata or Object"
            )),
        }
    }
}

type Col = (&'static str, &'static str, u8, &'static str);

const NAME: Col = (
    "Name",
    "string",
    0,
    "Name must be unique within a namespace.",
);
const AGE: Col = (
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

fn columns(kind: &str) -> Vec<Col> {
    match kind {
        "Pod" => vec![
            NAME,
            (
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            (
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            (
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            AGE,
            ("IP", "string", 1, "IP address allocated to the pod."),
            (
                "Node",
                "string",
                1,
                "Name of the Node this pod is scheduled to run on.",
            ),
            (
                "Nominated Node",
                "string",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node.",
            ),
            (
                "Readiness Gates",
                "string",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        "Deployment" => vec![
            NAME,
            ("Ready", "string", 0, "Number of the pod with ready state"),
            (
                "Up-to-date",
                "string",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            (
                "Available",
                "string",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            AGE,
            (
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            (
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            ("Selector", "string", 1, "Label selector for pods."),
        ],
        "ReplicaSet" => vec![
            NAME,
            ("Desired", "integer", 0, "Number of desired pods."),
            ("Current", "integer", 0, "Number of actual pods observed."),
            ("Ready", "integer", 0, "The number of ready pods."),
            AGE,
            (
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            (
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            ("Selector", "string", 1, "Label selector for pods."),
        ],
        "DaemonSet" => vec![
            NAME,
            (
                "Desired",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod.",
            ),
            (
                "Current",
                "integer",
                0,
                "The number of nodes running at least one daemon pod.",
            ),
            (
                "Ready",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod and have one or more ready.",
            ),
            (
                "Up-to-date",
                "integer",
                0,
                "The total number of nodes that are running updated daemon pod.",
            ),
            (
                "Available",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod and have one or more available.",
            ),
            (
                "Node Selector",
                "string",
                0,
                "NodeSelector is a selector which must be true for the pod to fit on a node.",
            ),
            AGE,
        ],
        "Node" => vec![
            NAME,
            ("Status", "string", 0, "The status of the node"),
            ("Roles", "string", 0, "The roles of the node"),
            AGE,
            (
                "Version",
                "string",
                0,
                "Kubelet Version reported by the node.",
            ),
            (
                "Internal-IP",
                "string",
                1,
                "List of addresses reachable to the node.",
            ),
            (
                "External-IP",
                "string",
                1,
                "List of addresses reachable to the node.",
            ),
            (
                "OS-Image",
                "string",
                1,
                "OS Image reported by the node from /etc/os-release.",
            ),
            (
                "Kernel-Version",
                "string",
                1,
                "Kernel Version reported by the node.",
            ),
            (
                "Container-Runtime",
                "string",
                1,
                "Container Runtime Version reported by the node.",
            ),
        ],
        "Service" => vec![
            NAME,
            ("Type", "string", 0, "The type of the service."),
            ("Cluster-IP", "string", 0, "The cluster IP of the service."),
            (
                "External-IP",
                "string",
                0,
                "The external IP of the service.",
            ),
            ("Port(s)", "string", 0, "The ports of the service."),
            AGE,
            ("Selector", "string", 1, "Label selector for pods."),
        ],
        "Namespace" => vec![
            NAME,
            ("Status", "string", 0, "The status of the namespace"),
            AGE,
        ],
        "ConfigMap" => vec![NAME, ("Data", "string", 0, "Number of data entries."), AGE],
        "Secret" => vec![
            NAME,
            ("Type", "string", 0, "The type of the secret."),
            ("Data", "string", 0, "Number of data entries."),
            AGE,
        ],
        "Event" => vec![
            ("Last Seen", "string", 0, "Time of the last occurrence."),
            ("Type", "string", 0, "Type of this event (Normal, Warning)."),
            ("Reason", "string", 0, "Why the action was taken."),
            ("Object", "string", 0, "The object this event is about."),
            (
                "Subobject",
                "string",
                1,
                "The part of the object this event is about.",
            ),
            ("Source", "string", 1, "The component reporting this event."),
            (
                "Message",
                "string",
                0,
                "A human-readable description of the status of this operation.",
            ),
            ("First Seen", "string", 1, "Time of the first occurrence."),
            (
                "Count",
                "string",
                1,
                "The number of times this event has occurred.",
            ),
            ("Name", "string", 1, "Name of the event."),
        ],
        "Endpoints" => vec![
            NAME,
            ("Endpoints", "string", 0, "Endpoints of the service."),
            AGE,
        ],
        "Lease" => vec![
            NAME,
            ("Holder", "string", 0, "The holder of the lease."),
            AGE,
        ],
        "Commit" => vec![
            ("Commit", "string", 0, "The commit id (the record's name)."),
            (
                "State",
                "string",
                0,
                "Progressing, Converged, Failed, Superseded or Rejected.",
            ),
            (
                "Message",
                "string",
                0,
                "The first line of the commit message.",
            ),
            AGE,
            ("Author", "string", 1, "Who wrote the commit."),
            (
                "Reason",
                "string",
                1,
                "Why the rollout ended as it did (Failed, Superseded, Rejected).",
            ),
            (
                "Duration",
                "string",
                1,
                "From detection to the end of the rollout (or now).",
            ),
        ],
        _ => vec![NAME, AGE],
    }
}

/// The column definitions of a kind's Table.
pub fn column_definitions(kind: &str) -> Vec<Value> {
    columns(kind)
        .into_iter()
        .map(|(name, ty, priority, description)| {
            json!({
                "name": name,
                "type": ty,
                "format": if name == "Name" || (kind == "Commit" && name == "Commit") { "name" } else { "" },
                "description": description,
                "priority": priority,
            })
        })
        .collect()
}

/// Kubernetes' human duration (`5s`, `3m12s`, `2d4h`, `3y`).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age_of(ts: Option<&Value>, now: jiff::Timestamp) -> String {
    ts.and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| human_duration(now.as_second() - t.as_second()))
        .unwrap_or_else(|| "<unknown>".into())
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn arr<'a>(v: &'a Value, p: &str) -> &'a [Value] {
    v.pointer(p)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(Value::Object(m)) = sel.get("matchLabels") {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    } else if let Value::Object(m) = sel
        && sel.get("matchExpressions").is_none()
    {
        for (k, v) in m {
            if let Some(v) = v.as_str() {
                parts.push(format!("{k}={v}"));
            }
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let vals: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let key = s(e, "/key");
        match s(e, "/operator") {
            "In" => parts.push(format!("{key} in ({})", vals.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", vals.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    or_none(parts.join(","))
}

fn containers_images(v: &Value, p: &str) -> (String, String) {
    let cs = arr(v, p);
    (
        cs.iter()
            .map(|c| s(c, "/name"))
            .collect::<Vec<_>>()
            .join(","),
        cs.iter()
            .map(|c| s(c, "/image"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn pod_cells(v: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let total = arr(v, "/spec/containers").len();
    let statuses = arr(v, "/status/containerStatuses");
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let mut restarts = 0i64;
    let mut last_restart: Option<jiff::Timestamp> = None;
    let mut reason = {
        let r = s(v, "/status/reason");
        if r.is_empty() {
            s(v, "/status/phase").to_string()
        } else {
            r.to_string()
        }
    };
    // Init containers first, as kubectl does.
    let init = arr(v, "/status/initContainerStatuses");
    let mut initializing = false;
    for (i, c) in init.iter().enumerate() {
        restarts += n(c, "/restartCount");
        if s(c, "/state/terminated/reason") == "Completed"
            || n(c, "/state/terminated/exitCode") == 0 && c.pointer("/state/terminated").is_some()
        {
            continue;
        }
        initializing = true;
        let w = s(c, "/state/waiting/reason");
        reason = if c.pointer("/state/terminated").is_some() {
            let r = s(c, "/state/terminated/reason");
            if r.is_empty() {
                format!("Init:ExitCode:{}", n(c, "/state/terminated/exitCode"))
            } else {
                format!("Init:{r}")
            }
        } else if !w.is_empty() && w != "PodInitializing" {
            format!("Init:{w}")
        } else {
            format!("Init:{i}/{}", arr(v, "/spec/initContainers").len())
        };
        break;
    }
    if !initializing {
        restarts = 0;
        let mut has_running = false;
        for c in statuses.iter().rev() {
            restarts += n(c, "/restartCount");
            if let Some(t) = c
                .pointer("/lastState/terminated/finishedAt")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                && last_restart.is_none_or(|l| t > l)
            {
                last_restart = Some(t);
            }
            let w = s(c, "/state/waiting/reason");
            let t = c.pointer("/state/terminated");
            if !w.is_empty() {
                reason = w.to_string();
            } else if let Some(t) = t {
                let r = s(t, "/reason");
                reason = if !r.is_empty() {
                    r.to_string()
                } else if n(t, "/signal") != 0 {
                    format!("Signal:{}", n(t, "/signal"))
                } else {
                    format!("ExitCode:{}", n(t, "/exitCode"))
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && c.pointer("/state/running").is_some()
            {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if v.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if s(v, "/status/reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    let restarts_cell = match last_restart {
        Some(t) if restarts > 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now.as_second() - t.as_second())
        ),
        _ => restarts.to_string(),
    };
    let gates = arr(v, "/spec/readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conds = arr(v, "/status/conditions");
        let true_count = gates
            .iter()
            .filter(|g| {
                conds
                    .iter()
                    .any(|c| s(c, "/type") == s(g, "/conditionType") && s(c, "/status") == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    vec![
        json!(s(v, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age_of(v.pointer("/metadata/creationTimestamp"), now)),
        json!(or_none(s(v, "/status/podIP").to_string())),
        json!(or_none(s(v, "/spec/nodeName").to_string())),
        json!(or_none(s(v, "/status/nominatedNodeName").to_string())),
        json!(gates_cell),
    ]
}

fn node_cells(v: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let ready = arr(v, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == "Ready")
        .map(|c| match s(c, "/status") {
            "True" => "Ready",
            _ => "NotReady",
        })
        .unwrap_or("Unknown");
    let mut status = ready.to_string();
    if v.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = Vec::new();
    if let Some(Value::Object(labels)) = v.pointer("/metadata/labels") {
        for k in labels.keys() {
            if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                roles.push(r.to_string());
            } else if k == "kubernetes.io/role" {
                roles.push(labels[k].as_str().unwrap_or("").to_string());
            }
        }
    }
    let addr = |t: &str| {
        or_none(
            arr(v, "/status/addresses")
                .iter()
                .find(|a| s(a, "/type") == t)
                .map(|a| s(a, "/address").to_string())
                .unwrap_or_default(),
        )
    };
    vec![
        json!(s(v, "/metadata/name")),
        json!(status),
        json!(or_none(roles.join(","))),
        json!(age_of(v.pointer("/metadata/creationTimestamp"), now)),
        json!(s(v, "/status/nodeInfo/kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(or_none(s(v, "/status/nodeInfo/osImage").to_string())),
        json!(or_none(s(v, "/status/nodeInfo/kernelVersion").to_string())),
        json!(or_none(
            s(v, "/status/nodeInfo/containerRuntimeVersion").to_string()
        )),
    ]
}

fn service_cells(v: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let ty = {
        let t = s(v, "/spec/type");
        if t.is_empty() { "ClusterIP" } else { t }
    };
    let mut cluster_ip = s(v, "/spec/clusterIP").to_string();
    if cluster_ip.is_empty() {
        cluster_ip = "<none>".into();
    }
    let mut external: Vec<String> = arr(v, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    for i in arr(v, "/status/loadBalancer/ingress") {
        let ip = s(i, "/ip");
        external.push(if ip.is_empty() { s(i, "/hostname") } else { ip }.to_string());
    }
    let external = match ty {
        "ExternalName" => s(v, "/spec/externalName").to_string(),
        "LoadBalancer" if external.is_empty() => "<pending>".into(),
        _ => or_none(external.join(",")),
    };
    let ports: Vec<String> = arr(v, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = {
                let x = s(p, "/protocol");
                if x.is_empty() { "TCP" } else { x }
            };
            let np = n(p, "/nodePort");
            if np > 0 {
                format!("{}:{np}/{proto}", n(p, "/port"))
            } else {
                format!("{}/{proto}", n(p, "/port"))
            }
        })
        .collect();
    vec![
        json!(s(v, "/metadata/name")),
        json!(ty),
        json!(cluster_ip),
        json!(external),
        json!(or_none(ports.join(","))),
        json!(age_of(v.pointer("/metadata/creationTimestamp"), now)),
        json!(selector_string(v.pointer("/spec/selector"))),
    ]
}

fn event_cells(v: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let last = v
        .get("lastTimestamp")
        .filter(|x| !x.is_null())
        .or_else(|| v.get("eventTime"))
        .or_else(|| v.pointer("/metadata/creationTimestamp"));
    let first = v
        .get("firstTimestamp")
        .filter(|x| !x.is_null())
        .or_else(|| v.get("eventTime"));
    let object = format!(
        "{}/{}",
        s(v, "/involvedObject/kind").to_ascii_lowercase(),
        s(v, "/involvedObject/name")
    );
    let source = {
        let c = s(v, "/source/component");
        let h = s(v, "/source/host");
        match (c.is_empty(), h.is_empty()) {
            (true, _) => s(v, "/reportingComponent").to_string(),
            (false, true) => c.to_string(),
            (false, false) => format!("{c}, {h}"),
        }
    };
    vec![
        json!(age_of(last, now)),
        json!(s(v, "/type")),
        json!(s(v, "/reason")),
        json!(object),
        json!(s(v, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(v, "/message").trim()),
        json!(age_of(first, now)),
        json!(n(v, "/count").max(1).to_string()),
        json!(s(v, "/metadata/name")),
    ]
}

fn count_keys(v: &Value, fields: &[&str]) -> usize {
    fields
        .iter()
        .map(|f| v.get(*f).and_then(Value::as_object).map_or(0, |m| m.len()))
        .sum()
}

/// The cells of one object's row.
pub fn cells(kind: &str, v: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = json!(s(v, "/metadata/name"));
    let age = json!(age_of(v.pointer("/metadata/creationTimestamp"), now));
    match kind {
        "Pod" => pod_cells(v, now),
        "Node" => node_cells(v, now),
        "Service" => service_cells(v, now),
        "Event" => event_cells(v, now),
        "Deployment" => {
            let (c, i) = containers_images(v, "/spec/template/spec/containers");
            let desired = v
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            vec![
                name,
                json!(format!("{}/{desired}", n(v, "/status/readyReplicas"))),
                json!(n(v, "/status/updatedReplicas")),
                json!(n(v, "/status/availableReplicas")),
                age,
                json!(c),
                json!(i),
                json!(selector_string(v.pointer("/spec/selector"))),
            ]
        }
        "ReplicaSet" => {
            let (c, i) = containers_images(v, "/spec/template/spec/containers");
            let desired = v
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            vec![
                name,
                json!(desired),
                json!(n(v, "/status/replicas")),
                json!(n(v, "/status/readyReplicas")),
                age,
                json!(c),
                json!(i),
                json!(selector_string(v.pointer("/spec/selector"))),
            ]
        }
        "DaemonSet" => {
            let sel: Vec<String> = v
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                json!(n(v, "/status/desiredNumberScheduled")),
                json!(n(v, "/status/currentNumberScheduled")),
                json!(n(v, "/status/numberReady")),
                json!(n(v, "/status/updatedNumberScheduled")),
                json!(n(v, "/status/numberAvailable")),
                json!(or_none(sel.join(","))),
                age,
            ]
        }
        "Namespace" => {
            let phase = s(v, "/status/phase");
            vec![
                name,
                json!(if phase.is_empty() { "Active" } else { phase }),
                age,
            ]
        }
        "ConfigMap" => vec![name, json!(count_keys(v, &["data", "binaryData"])), age],
        "Secret" => {
            let ty = s(v, "/type");
            vec![
                name,
                json!(if ty.is_empty() { "Opaque" } else { ty }),
                json!(count_keys(v, &["data", "stringData"])),
                age,
            ]
        }
        "Endpoints" => {
            let mut eps = Vec::new();
            for sub in arr(v, "/subsets") {
                for a in arr(sub, "/addresses") {
                    for p in arr(sub, "/ports") {
                        eps.push(format!("{}:{}", s(a, "/ip"), n(p, "/port")));
                    }
                    if arr(sub, "/ports").is_empty() {
                        eps.push(s(a, "/ip").to_string());
                    }
                }
            }
            vec![name, json!(or_none(eps.join(","))), age]
        }
        "Lease" => vec![
            name,
            json!(or_none(s(v, "/spec/holderIdentity").to_string())),
            age,
        ],
        "Commit" => commit_cells(v, now, name, age),
        _ => vec![name, age],
    }
}

/// A commit record's row: the first line of its message cut at 60 characters.
fn commit_cells(v: &Value, now: jiff::Timestamp, name: Value, age: Value) -> Vec<Value> {
    let subject = s(v, "/spec/message").lines().next().unwrap_or("");
    let message = if subject.chars().count() > 60 {
        format!("{}...", subject.chars().take(57).collect::<String>())
    } else {
        subject.to_string()
    };
    let time = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    let duration = match time("/status/startTime") {
        Some(start) => {
            let end = time("/status/endTime").unwrap_or(now);
            human_duration(end.as_second() - start.as_second())
        }
        None => "<unknown>".into(),
    };
    vec![
        name,
        json!(s(v, "/status/state")),
        json!(message),
        age,
        json!(s(v, "/spec/author")),
        json!(or_none(s(v, "/status/reason").to_string())),
        json!(duration),
    ]
}

/// PartialObjectMetadata of an object (what a row's `object` holds by default).
/// What a row carries of its object (`includeObject`).
#[derive(Serialize)]
#[serde(untagged)]
enum RowObject<'a> {
    Partial(Partial<'a>),
    Full(&'a Value),
}

/// `PartialObjectMetadata`: the object's metadata only. Fields in the order a `Value`
/// object writes its keys (sorted), like every struct here.
#[derive(Serialize)]
struct Partial<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    metadata: &'a Value,
}

/// One row, borrowing its object.
#[derive(Serialize)]
pub struct Row<'a> {
    cells: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<RowObject<'a>>,
}

static NO_METADATA: LazyLock<Value> = LazyLock::new(|| Value::Object(Map::new()));

/// One row.
pub fn row<'a>(kind: &str, v: &'a Value, include: Include, now: jiff::Timestamp) -> Row<'a> {
    let object = match include {
        Include::None => None,
        Include::Metadata => Some(RowObject::Partial(Partial {
            api_version: "meta.k8s.io/v1",
            kind: "PartialObjectMetadata",
            metadata: v.get("metadata").unwrap_or(&NO_METADATA),
        })),
        Include::Object => Some(RowObject::Full(v)),
    };
    Row {
        cells: cells(kind, v, now),
        object,
    }
}

/// A Table as served: it borrows the objects it lists, so writing it copies none.
#[derive(Serialize)]
pub struct Table<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    #[serde(rename = "columnDefinitions")]
    column_definitions: Vec<Value>,
    kind: &'static str,
    metadata: Value,
    rows: Vec<Row<'a>>,
}

/// A Table of objects of one kind.
pub fn table<'a>(
    kind: &str,
    objects: impl IntoIterator<Item = &'a Value>,
    include: Include,
    list_meta: Value,
    now: jiff::Timestamp,
) -> Table<'a> {
    Table {
        api_version: "meta.k8s.io/v1",
        column_definitions: column_definitions(kind),
        kind: "Table",
        metadata: list_meta,
        rows: objects
            .into_iter()
            .map(|v| row(kind, v, include, now))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        for (secs, want) in [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (20 * 3600, "20h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
        ] {
            assert_eq!(human_duration(secs), want);
        }
    }
}
