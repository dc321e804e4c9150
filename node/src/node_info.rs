//! The Node object an agent registers, its status, and its Lease (the heartbeat).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;

/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// What the host offers, read once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// CPUs this process may use.
    pub cpus: u64,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Host name.
    pub hostname: String,
    /// First non-loopback IPv4 address of a physical-looking interface (127.0.0.1 if none).
    pub internal_ip: String,
    /// `PRETTY_NAME` of /etc/os-release.
    pub os_image: String,
    /// Kernel release.
    pub kernel_version: String,
    /// /etc/machine-id.
    pub machine_id: String,
    /// Kernel boot id.
    pub boot_id: String,
    /// Kubernetes architecture name (`amd64`, `arm64`, ...).
    pub architecture: String,
}

impl HostFacts {
    /// Reads the host (never fails: unknown facts are empty).
    pub fn read() -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        let uname = nix::sys::utsname::uname().ok();
        HostFacts {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u64)
                .unwrap_or(1),
            memory_bytes: memory_kib * 1024,
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            internal_ip: internal_ip()
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "127.0.0.1".into()),
            os_image,
            kernel_version: uname
                .as_ref()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            architecture: match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            }
            .to_string(),
        }
    }
}

fn internal_ip() -> Option<IpAddr> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    let virtual_prefixes = [
        "lo", "docker", "veth", "br-", "virbr", "cni", "flannel", "kube",
    ];
    addrs
        .filter(|a| {
            !virtual_prefixes
                .iter()
                .any(|p| a.interface_name.starts_with(p))
        })
        .filter_map(|a| {
            a.address
                .and_then(|s| s.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip())))
        })
        .find(|ip| !ip.is_loopback())
}

/// The version string nodes report as `kubeletVersion`.
pub fn kubelet_version() -> String {
    format!("kommit/{}", env!("CARGO_PKG_VERSION"))
}

/// The Node status: capacity and allocatable from the host, addresses, system info, and
/// the Ready condition (`runtime_error` makes it NotReady with that message).
pub fn node_status(
    name: &str,
    facts: &HostFacts,
    runtime_version: &str,
    runtime_error: Option<&str>,
    previous: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeStatus {
    let resources: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity(facts.cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", facts.memory_bytes / 1024)),
        ),
        ("pods".to_string(), Quantity("110".into())),
    ]
    .into();
    let ready = runtime_error.is_none();
    let cond = |type_: &str, status: bool, reason: &str, message: &str| {
        let status = if status { "True" } else { "False" }.to_string();
        let transition = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        NodeCondition {
            type_: type_.into(),
            status,
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(transition),
        }
    };
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: facts.internal_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.to_string(),
            },
        ]),
        conditions: Some(vec![
            cond(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            cond(
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            cond(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            if ready {
                cond(
                    "Ready",
                    true,
                    "KubeletReady",
                    "kubelet is posting ready status",
                )
            } else {
                cond(
                    "Ready",
                    false,
                    "KubeletNotReady",
                    runtime_error.unwrap_or_default(),
                )
            },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: facts.architecture.clone(),
            boot_id: facts.boot_id.clone(),
            container_runtime_version: runtime_version.to_string(),
            kernel_version: facts.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: kubelet_version(),
            machine_id: facts.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: facts.os_image.clone(),
            system_uuid: facts.machine_id.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Node object an agent registers.
pub fn node_object(
    name: &str,
    labels: &BTreeMap<String, String>,
    status: NodeStatus,
    arch: &str,
) -> Node {
    let mut l: BTreeMap<String, String> = [
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch.to_string()),
    ]
    .into();
    l.extend(labels.clone());
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(l),
            ..Default::default()
        },
        spec: Some(Default::default()),
        status: Some(status),
    }
}

/// The node's Lease in `kube-node-lease`, renewed at `now`.
pub fn node_lease(
    node: &str,
    node_uid: Option<&str>,
    duration_seconds: i32,
    now: Timestamp,
) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: node_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.to_string(),
                    uid: uid.to_string(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_string()),
            lease_duration_seconds: Some(duration_seconds),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_reports_host_capacity_and_version() {
        let facts = HostFacts::read();
        assert!(facts.cpus >= 1);
        assert!(facts.memory_bytes > 0);
        let now = Timestamp::now();
        let st = node_status("n1", &facts, "docker://x", None, None, now);
        let cap = st.capacity.as_ref().unwrap();
        assert_eq!(cap["cpu"].0, facts.cpus.to_string());
        assert_eq!(
            st.node_info.as_ref().unwrap().kubelet_version,
            kubelet_version()
        );
        let ready = st
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        // Not ready keeps the transition time only while the status stays the same.
        let later = now + std::time::Duration::from_secs(5);
        let st2 = node_status(
            "n1",
            &facts,
            "docker://x",
            Some("runtime down"),
            Some(&st),
            later,
        );
        let ready2 = st2
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready2.status, "False");
        assert_eq!(ready2.last_transition_time, Some(Time(later)));
        let mp = st2
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "MemoryPressure")
            .unwrap();
        assert_eq!(mp.last_transition_time, Some(Time(now)));
        let lease = node_lease("n1", Some("uid-1"), 40, now);
        assert_eq!(lease.metadata.namespace.as_deref(), Some(LEASE_NAMESPACE));
        assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("n1"));
    }
}
