//! Pod volumes: the files of `configMap`, `secret`, `downwardAPI` and `projected` volumes,
//! `emptyDir` directories shared by a pod's containers, `hostPath`, and the mounts each
//! container gets from its `volumeMounts`.
//!
//! Every pod has a directory `<root>/pods/<uid>/volumes/<plugin>/<volume name>`, named as
//! the kubelet names them (`kubernetes.io~configmap`, `kubernetes.io~secret`,
//! `kubernetes.io~downward-api`, `kubernetes.io~projected`, `kubernetes.io~empty-dir`).
//! Files are written with [Kubernetes' atomic scheme](atomic) on every sync of the pod, so
//! when a commit changes a ConfigMap or Secret the mounted files change in place (within a
//! resync, 10 s by default) and the containers keep running, as in Kubernetes. A `subPath`
//! mount of such a volume does not see updates (as in Kubernetes): it is bound to the file
//! of the moment on Docker.
//!
//! Decisions where kommit differs from the kubelet:
//!
//! * `emptyDir` with `medium: Memory` is a plain directory like any `emptyDir` (no tmpfs:
//!   that needs root and a mount per pod); `sizeLimit` is not enforced. It lives as long as
//!   the pod is on the node, across container restarts.
//! * Secret files are plain files under the node's data directory (the kubelet puts them
//!   on a tmpfs).
//! * `hostPath` checks its `type` as Kubernetes does (`DirectoryOrCreate` and
//!   `FileOrCreate` create what is missing; `Directory`, `File`, `Socket`, `CharDevice`,
//!   `BlockDevice` must exist and be of that kind).
//! * `projected` supports `configMap`, `secret` and `downwardAPI` sources;
//!   `serviceAccountToken` and `clusterTrustBundle` are refused (kommit issues no tokens).
//! * `subPathExpr`, persistent volume claims and the other volume kinds are refused with a
//!   clear `FailedMount` message.
//!
//! How a container finds the files depends on the runtime: Docker bind-mounts each mount
//! at its `mountPath` (read-only where asked, and always for configMap, secret,
//! downwardAPI and projected volumes, as Kubernetes does); the process runtime has no
//! mount namespace, see [`crate::runtime::process`].

pub mod atomic;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};

use crate::runtime::Mount;
use crate::spec::EnvContext;
use atomic::{FileContent, Payload, validate_path, write_atomic};

/// Why a pod's volumes cannot be set up (`FailedMount`; the pod waits in
/// `ContainerCreating` and the agent retries).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume \"{volume}\": {message}")]
pub struct VolumeError {
    /// The volume.
    pub volume: String,
    /// What is wrong.
    pub message: String,
}

/// Kubernetes' default file mode for configMap, secret, downwardAPI and projected volumes.
pub const DEFAULT_MODE: u32 = 0o644;

/// The mounts of each container of a pod (by container name).
pub type PodMounts = HashMap<String, Vec<Mount>>;

/// `<root>/pods/<uid>`: everything the node keeps for one pod.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

/// Removes a pod's directory (its volumes' files and emptyDirs), once its containers are
/// gone. A missing directory is fine.
pub fn remove_pod_dir(root: &Path, uid: &str) {
    if uid.is_empty() || uid.contains('/') || uid.starts_with('.') {
        return;
    }
    let dir = pod_dir(root, uid);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => tracing::debug!(dir = %dir.display(), "removed the pod's volumes"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", dir.display()),
    }
}

/// The uids that have a directory under `<root>/pods`.
pub fn pod_dirs(root: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(root.join("pods")) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect()
}

/// Names of the ConfigMaps and Secrets a pod's volumes refer to: `(config_maps, secrets)`.
pub fn referenced_objects(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut cms = Vec::new();
    let mut secrets = Vec::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(c) = &v.config_map {
            cms.push(c.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.push(s);
        }
        for src in v
            .projected
            .as_ref()
            .and_then(|p| p.sources.as_ref())
            .into_iter()
            .flatten()
        {
            if let Some(c) = &src.config_map {
                cms.push(c.name.clone());
            }
            if let Some(s) = &src.secret {
                secrets.push(s.name.clone());
            }
        }
    }
    (cms, secrets)
}

fn mode_of(m: Option<i32>, default: u32) -> u32 {
    m.map_or(default, |m| (m as u32) & 0o7777)
}

/// Sets up every volume of `pod` under `root` (files written or updated atomically,
/// directories made, hostPath types checked) and returns each container's mounts.
/// ConfigMaps and Secrets come from `ctx` (those the control plane knows).
pub fn prepare(root: &Path, pod: &Pod, ctx: &EnvContext) -> Result<PodMounts, VolumeError> {
    let Some(spec) = &pod.spec else {
        return Ok(PodMounts::new());
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if uid.is_empty() || uid.contains('/') || uid.starts_with('.') {
        return Err(VolumeError {
            volume: String::new(),
            message: format!("the pod's uid {uid:?} cannot name a directory"),
        });
    }
    // Secrets live here: only the node's user may look inside (containers see their
    // mounts whatever the parents' modes).
    let pods = root.join("pods");
    let has_volumes = spec.volumes.as_ref().is_some_and(|v| !v.is_empty());
    if has_volumes && !pods.exists() {
        std::fs::create_dir_all(&pods)
            .and_then(|()| std::fs::set_permissions(&pods, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| VolumeError {
                volume: String::new(),
                message: format!("cannot create {}: {e}", pods.display()),
            })?;
    }
    let volumes_dir = pod_dir(root, &uid).join("volumes");
    // Volume name → (host path, always read-only).
    let mut prepared: BTreeMap<&str, (PathBuf, bool)> = BTreeMap::new();
    for v in spec.volumes.iter().flatten() {
        let err = |message: String| VolumeError {
            volume: v.name.clone(),
            message,
        };
        if v.name.is_empty() || v.name.contains('/') || v.name.starts_with('.') {
            return Err(err("invalid volume name".into()));
        }
        let r = prepare_volume(&volumes_dir, pod, v, ctx).map_err(err)?;
        prepared.insert(v.name.as_str(), r);
    }
    let mut out = PodMounts::new();
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        out.insert(c.name.clone(), container_mounts(c, &prepared)?);
    }
    Ok(out)
}

fn container_mounts(
    c: &Container,
    prepared: &BTreeMap<&str, (PathBuf, bool)>,
) -> Result<Vec<Mount>, VolumeError> {
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let err = |message: String| VolumeError {
            volume: m.name.clone(),
            message: format!("container {}: {message}", c.name),
        };
        let Some((host, always_ro)) = prepared.get(m.name.as_str()) else {
            return Err(err(format!("no volume named {:?} in the pod", m.name)));
        };
        if m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(err("subPathExpr is not supported".into()));
        }
        if !m.mount_path.starts_with('/') {
            return Err(err(format!(
                "mountPath {:?} must be an absolute path",
                m.mount_path
            )));
        }
        let mut source = host.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            validate_path(sub).map_err(|_| {
                err(format!(
                    "subPath {sub:?} must be a relative path without `..`"
                ))
            })?;
            source = host.join(sub);
            if source.symlink_metadata().is_err() {
                // As the kubelet does: a missing subPath is made as a directory.
                std::fs::create_dir_all(&source)
                    .map_err(|e| err(format!("cannot create subPath {sub:?}: {e}")))?;
            }
        }
        mounts.push(Mount {
            host_path: source,
            container_path: m.mount_path.clone(),
            read_only: *always_ro || m.read_only == Some(true),
        });
    }
    Ok(mounts)
}

/// Sets up one volume; returns its host path and whether it is always read-only.
fn prepare_volume(
    volumes_dir: &Path,
    pod: &Pod,
    v: &Volume,
    ctx: &EnvContext,
) -> Result<(PathBuf, bool), String> {
    let dir = |plugin: &str| volumes_dir.join(plugin).join(&v.name);
    let write = |plugin: &str, payload: Payload| -> Result<(PathBuf, bool), String> {
        let d = dir(plugin);
        match write_atomic(&d, &payload) {
            Ok(true) => {
                tracing::info!(volume = v.name, dir = %d.display(), files = payload.len(), "volume files written")
            }
            Ok(false) => {}
            Err(e) => return Err(e.to_string()),
        }
        Ok((d, true))
    };
    if let Some(c) = &v.config_map {
        let default = mode_of(c.default_mode, DEFAULT_MODE);
        let mut payload = Payload::new();
        config_map_files(
            ctx.config_maps.get(&c.name),
            &c.name,
            c.items.as_deref(),
            c.optional == Some(true),
            default,
            &mut payload,
        )?;
        return write("kubernetes.io~configmap", payload);
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let default = mode_of(s.default_mode, DEFAULT_MODE);
        let mut payload = Payload::new();
        secret_files(
            ctx.secrets.get(&name),
            &name,
            s.items.as_deref(),
            s.optional == Some(true),
            default,
            &mut payload,
        )?;
        return write("kubernetes.io~secret", payload);
    }
    if let Some(d) = &v.downward_api {
        let default = mode_of(d.default_mode, DEFAULT_MODE);
        let mut payload = Payload::new();
        downward_files(pod, d.items.as_deref(), default, ctx, &mut payload)?;
        return write("kubernetes.io~downward-api", payload);
    }
    if let Some(p) = &v.projected {
        let default = mode_of(p.default_mode, DEFAULT_MODE);
        let mut payload = Payload::new();
        for (i, src) in p.sources.iter().flatten().enumerate() {
            if let Some(c) = &src.config_map {
                config_map_files(
                    ctx.config_maps.get(&c.name),
                    &c.name,
                    c.items.as_deref(),
                    c.optional == Some(true),
                    default,
                    &mut payload,
                )?;
            } else if let Some(s) = &src.secret {
                secret_files(
                    ctx.secrets.get(&s.name),
                    &s.name,
                    s.items.as_deref(),
                    s.optional == Some(true),
                    default,
                    &mut payload,
                )?;
            } else if let Some(d) = &src.downward_api {
                downward_files(pod, d.items.as_deref(), default, ctx, &mut payload)?;
            } else if src.service_account_token.is_some() {
                return Err(format!(
                    "projected source {i}: serviceAccountToken is not supported (kommit issues no service account tokens)"
                ));
            } else {
                return Err(format!(
                    "projected source {i}: only configMap, secret and downwardAPI are supported"
                ));
            }
        }
        return write("kubernetes.io~projected", payload);
    }
    if v.empty_dir.is_some() {
        let d = dir("kubernetes.io~empty-dir");
        std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        return Ok((d, false));
    }
    if let Some(h) = &v.host_path {
        let p = PathBuf::from(&h.path);
        check_host_path(&p, h.type_.as_deref().unwrap_or(""))?;
        return Ok((p, false));
    }
    Err("this volume kind is not supported by kommit (supported: configMap, secret, downwardAPI, projected, emptyDir, hostPath)".into())
}

fn add_file(payload: &mut Payload, path: &str, data: Vec<u8>, mode: u32) -> Result<(), String> {
    validate_path(path).map_err(|e| e.to_string())?;
    payload.insert(path.to_string(), FileContent { data, mode });
    Ok(())
}

/// Keys to files: all keys with their names, or only `items` (a missing key is an error
/// unless the source is optional).
fn keyed_files(
    what: &str,
    name: &str,
    values: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default: u32,
    payload: &mut Payload,
) -> Result<(), String> {
    let Some(values) = values else {
        if optional {
            return Ok(());
        }
        return Err(format!("{what} \"{name}\" not found"));
    };
    match items {
        None => {
            for (k, v) in values {
                add_file(payload, &k, v, default)?;
            }
        }
        Some(items) => {
            for it in items {
                match values.get(&it.key) {
                    Some(v) => add_file(payload, &it.path, v.clone(), mode_of(it.mode, default))?,
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "configuration error: key \"{}\" not found in {what} \"{name}\"",
                            it.key
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn config_map_files(
    cm: Option<&ConfigMap>,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default: u32,
    payload: &mut Payload,
) -> Result<(), String> {
    let values = cm.map(|cm| {
        let mut m: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in cm.data.iter().flatten() {
            m.insert(k.clone(), v.as_bytes().to_vec());
        }
        for (k, v) in cm.binary_data.iter().flatten() {
            m.insert(k.clone(), v.0.clone());
        }
        m
    });
    keyed_files("configmap", name, values, items, optional, default, payload)
}

fn secret_files(
    s: Option<&Secret>,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default: u32,
    payload: &mut Payload,
) -> Result<(), String> {
    let values = s.map(|s| {
        let mut m: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in s.data.iter().flatten() {
            m.insert(k.clone(), v.0.clone());
        }
        for (k, v) in s.string_data.iter().flatten() {
            m.insert(k.clone(), v.as_bytes().to_vec());
        }
        m
    });
    keyed_files("secret", name, values, items, optional, default, payload)
}

/// `metadata.labels` / `metadata.annotations` as the kubelet writes them: sorted
/// `key="value"` lines.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn downward_files(
    pod: &Pod,
    items: Option<&[DownwardAPIVolumeFile]>,
    default: u32,
    ctx: &EnvContext,
    payload: &mut Payload,
) -> Result<(), String> {
    for it in items.into_iter().flatten() {
        let mode = mode_of(it.mode, default);
        let value = if let Some(f) = &it.field_ref {
            match f.field_path.as_str() {
                "metadata.labels" => format_map(pod.metadata.labels.as_ref()),
                "metadata.annotations" => format_map(pod.metadata.annotations.as_ref()),
                path => crate::spec::field_value(pod, path, ctx)
                    .map_err(|e| format!("item {:?}: {e}", it.path))?,
            }
        } else if let Some(r) = &it.resource_field_ref {
            let cname = r.container_name.as_deref().unwrap_or_default();
            let c = pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .find(|c| c.name == cname)
                .ok_or_else(|| {
                    format!(
                        "item {:?}: resourceFieldRef names no container of the pod ({cname:?})",
                        it.path
                    )
                })?;
            crate::spec::resource_value(c, r, ctx)
                .map_err(|e| format!("item {:?}: {e}", it.path))?
        } else {
            return Err(format!(
                "item {:?}: needs a fieldRef or a resourceFieldRef",
                it.path
            ));
        };
        add_file(payload, &it.path, value.into_bytes(), mode)?;
    }
    Ok(())
}

/// Kubernetes' `hostPath.type` checks.
fn check_host_path(p: &Path, kind: &str) -> Result<(), String> {
    if !p.is_absolute() {
        return Err(format!(
            "hostPath {:?} must be an absolute path",
            p.display()
        ));
    }
    let meta = std::fs::metadata(p);
    let show = p.display();
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(format!(
                "hostPath type check failed: {show} is not a directory"
            )),
            Err(_) => {
                std::fs::create_dir_all(p).map_err(|e| format!("cannot create {show}: {e}"))?;
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
                Ok(())
            }
        },
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(format!(
                "hostPath type check failed: {show} is not a directory"
            )),
            Err(_) => Err(format!(
                "hostPath type check failed: {show} is not a directory"
            )),
        },
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(format!("hostPath type check failed: {show} is not a file")),
            Err(_) => {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(p)
                    .map_err(|e| format!("cannot create {show}: {e}"))?;
                Ok(())
            }
        },
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            _ => Err(format!("hostPath type check failed: {show} is not a file")),
        },
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => Err(format!(
                "hostPath type check failed: {show} is not a socket file"
            )),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => Err(format!(
                "hostPath type check failed: {show} is not a character device"
            )),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => Err(format!(
                "hostPath type check failed: {show} is not a block device"
            )),
        },
        other => Err(format!("unknown hostPath type {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "kommit-volumes-{name}-{}-{}",
            std::process::id(),
            k8s_openapi::jiff::Timestamp::now().as_nanosecond()
        ));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn pod(volumes: serde_json::Value, mounts: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                         "labels": {"app": "web", "tier": "front"}},
            "spec": {
                "containers": [{"name": "main", "image": "x:1", "volumeMounts": mounts,
                                "resources": {"limits": {"memory": "64Mi"}}}],
                "volumes": volumes,
            }
        }))
        .unwrap()
    }

    fn cm(name: &str, data: serde_json::Value) -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": data}))
            .unwrap()
    }

    fn ctx_with(cms: Vec<ConfigMap>, secrets: Vec<Secret>) -> EnvContext {
        EnvContext {
            config_maps: cms
                .into_iter()
                .map(|c| (c.metadata.name.clone().unwrap(), c))
                .collect(),
            secrets: secrets
                .into_iter()
                .map(|s| (s.metadata.name.clone().unwrap(), s))
                .collect(),
            node_memory_bytes: 1 << 30,
            node_cpu_millis: 2000,
            ..Default::default()
        }
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn config_map_files_update_atomically_through_the_data_link() {
        let root = tmp("cm");
        let p = pod(
            serde_json::json!([{"name": "web", "configMap": {"name": "site"}}]),
            serde_json::json!([{"name": "web", "mountPath": "/etc/web"}]),
        );
        let ctx = ctx_with(
            vec![cm(
                "site",
                serde_json::json!({"index": "v1", "old": "gone soon"}),
            )],
            vec![],
        );
        let mounts = prepare(&root.0, &p, &ctx).unwrap();
        let m = &mounts["main"][0];
        assert_eq!(m.container_path, "/etc/web");
        assert!(m.read_only, "configMap volumes are read-only");
        let dir = root.0.join("pods/u-1/volumes/kubernetes.io~configmap/web");
        assert_eq!(m.host_path, dir);
        assert_eq!(
            mode(&root.0.join("pods")),
            0o700,
            "only the node's user looks in"
        );
        assert_eq!(read(&dir.join("index")), "v1");
        assert_eq!(mode(&dir.join("index")), 0o644);
        assert_eq!(
            std::fs::read_link(dir.join("index")).unwrap(),
            Path::new("..data/index")
        );
        let first = std::fs::read_link(dir.join("..data")).unwrap();
        assert!(first.to_string_lossy().starts_with("..2"), "{first:?}");

        // The same data again: nothing is rewritten.
        prepare(&root.0, &p, &ctx).unwrap();
        assert_eq!(std::fs::read_link(dir.join("..data")).unwrap(), first);

        // A change: a new timestamped directory, the old one and the dropped key gone.
        let ctx = ctx_with(
            vec![cm("site", serde_json::json!({"index": "v2", "new": "n"}))],
            vec![],
        );
        prepare(&root.0, &p, &ctx).unwrap();
        let second = std::fs::read_link(dir.join("..data")).unwrap();
        assert_ne!(second, first);
        assert_eq!(read(&dir.join("index")), "v2");
        assert_eq!(read(&dir.join("new")), "n");
        assert!(
            dir.join("old").symlink_metadata().is_err(),
            "dropped key unlinked"
        );
        assert!(!dir.join(&first).exists(), "old files removed");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                second.to_string_lossy().into_owned(),
                "..data".into(),
                "index".into(),
                "new".into()
            ]
        );

        remove_pod_dir(&root.0, "u-1");
        assert!(!root.0.join("pods/u-1").exists());
    }

    #[test]
    fn items_and_modes() {
        let root = tmp("items");
        let p = pod(
            serde_json::json!([
                {"name": "web", "configMap": {"name": "site", "defaultMode": 0o600,
                  "items": [{"key": "index", "path": "html/index.html"},
                            {"key": "run", "path": "bin/run.sh", "mode": 0o755}]}},
                {"name": "creds", "secret": {"secretName": "db", "defaultMode": 0o400}},
            ]),
            serde_json::json!([
                {"name": "web", "mountPath": "/srv"},
                {"name": "creds", "mountPath": "/creds"},
                {"name": "web", "mountPath": "/page.html", "subPath": "html/index.html"},
            ]),
        );
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db"}, "data": {"password": "czNjcmV0"}
        }))
        .unwrap();
        let ctx = ctx_with(
            vec![cm(
                "site",
                serde_json::json!({"index": "<h1>hi</h1>", "run": "#!/bin/sh", "unused": "x"}),
            )],
            vec![secret],
        );
        let mounts = prepare(&root.0, &p, &ctx).unwrap();
        let web = root.0.join("pods/u-1/volumes/kubernetes.io~configmap/web");
        assert_eq!(read(&web.join("html/index.html")), "<h1>hi</h1>");
        assert_eq!(mode(&web.join("html/index.html")), 0o600);
        assert_eq!(mode(&web.join("bin/run.sh")), 0o755);
        assert!(!web.join("unused").exists(), "only the listed items");
        let creds = root.0.join("pods/u-1/volumes/kubernetes.io~secret/creds");
        assert_eq!(read(&creds.join("password")), "s3cret");
        assert_eq!(mode(&creds.join("password")), 0o400);
        let sub = &mounts["main"][2];
        assert_eq!(sub.host_path, web.join("html/index.html"));
        assert_eq!(sub.container_path, "/page.html");
    }

    #[test]
    fn optional_sources_may_be_missing_others_may_not() {
        let root = tmp("optional");
        let vols = |optional: bool| {
            serde_json::json!([
                {"name": "a", "configMap": {"name": "absent", "optional": optional}},
                {"name": "b", "secret": {"secretName": "absent", "optional": true}},
                {"name": "c", "configMap": {"name": "site", "optional": optional,
                  "items": [{"key": "missing", "path": "m"}, {"key": "here", "path": "h"}]}},
            ])
        };
        let ctx = ctx_with(vec![cm("site", serde_json::json!({"here": "1"}))], vec![]);
        let ok = pod(
            vols(true),
            serde_json::json!([{"name": "a", "mountPath": "/a"}]),
        );
        prepare(&root.0, &ok, &ctx).unwrap();
        let a = root.0.join("pods/u-1/volumes/kubernetes.io~configmap/a");
        assert!(a.join("..data").exists(), "an empty volume");
        let c = root.0.join("pods/u-1/volumes/kubernetes.io~configmap/c");
        assert_eq!(read(&c.join("h")), "1");
        assert!(!c.join("m").exists());

        let bad = pod(vols(false), serde_json::json!([]));
        let e = prepare(&root.0, &bad, &ctx).unwrap_err();
        assert_eq!(e.volume, "a");
        assert_eq!(
            e.to_string(),
            "MountVolume.SetUp failed for volume \"a\": configmap \"absent\" not found"
        );
        let ctx2 = ctx_with(
            vec![
                cm("site", serde_json::json!({"here": "1"})),
                cm("absent", serde_json::json!({})),
            ],
            vec![],
        );
        let e = prepare(&root.0, &bad, &ctx2).unwrap_err();
        assert_eq!(e.volume, "c");
        assert!(e.message.contains("key \"missing\" not found"), "{e}");
    }

    #[test]
    fn downward_api_projected_empty_dir_and_host_path() {
        let root = tmp("misc");
        let host = root.0.join("host");
        let p = pod(
            serde_json::json!([
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "mem", "resourceFieldRef": {"containerName": "main",
                      "resource": "limits.memory", "divisor": "1Mi"}}]}},
                {"name": "all", "projected": {"sources": [
                    {"configMap": {"name": "site"}},
                    {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
                {"name": "scratch", "emptyDir": {"medium": "Memory"}},
                {"name": "h", "hostPath": {"path": host.to_string_lossy(), "type": "DirectoryOrCreate"}},
            ]),
            serde_json::json!([
                {"name": "scratch", "mountPath": "/tmp/s"},
                {"name": "h", "mountPath": "/host", "readOnly": true},
            ]),
        );
        let ctx = ctx_with(vec![cm("site", serde_json::json!({"k": "v"}))], vec![]);
        let mounts = prepare(&root.0, &p, &ctx).unwrap();
        let vols = root.0.join("pods/u-1/volumes");
        let info = vols.join("kubernetes.io~downward-api/info");
        assert_eq!(read(&info.join("name")), "web-1");
        assert_eq!(read(&info.join("labels")), "app=\"web\"\ntier=\"front\"");
        assert_eq!(read(&info.join("mem")), "64");
        let all = vols.join("kubernetes.io~projected/all");
        assert_eq!(read(&all.join("k")), "v");
        assert_eq!(read(&all.join("ns")), "shop");
        let m = &mounts["main"];
        assert_eq!(m[0].host_path, vols.join("kubernetes.io~empty-dir/scratch"));
        assert!(!m[0].read_only);
        assert!(m[0].host_path.is_dir());
        assert_eq!(m[1].host_path, host);
        assert!(m[1].read_only);
        assert!(host.is_dir(), "DirectoryOrCreate made it");

        for (kind, want) in [
            ("Directory", None),
            ("File", Some("is not a file")),
            ("Socket", Some("is not a socket file")),
            ("Bogus", Some("unknown hostPath type")),
        ] {
            let p = pod(
                serde_json::json!([{"name": "h", "hostPath": {"path": host.to_string_lossy(), "type": kind}}]),
                serde_json::json!([]),
            );
            match (prepare(&root.0, &p, &ctx), want) {
                (Ok(_), None) => {}
                (Err(e), Some(w)) => assert!(e.message.contains(w), "{kind}: {e}"),
                (r, w) => panic!("{kind}: {r:?}, wanted {w:?}"),
            }
        }
        let file = root.0.join("made.txt");
        let p = pod(
            serde_json::json!([{"name": "f", "hostPath": {"path": file.to_string_lossy(), "type": "FileOrCreate"}}]),
            serde_json::json!([]),
        );
        prepare(&root.0, &p, &ctx).unwrap();
        assert!(file.is_file());
    }

    #[test]
    fn bad_mounts_and_unsupported_volumes_are_refused() {
        let root = tmp("bad");
        let ctx = ctx_with(vec![], vec![]);
        let cases = [
            (
                serde_json::json!([{"name": "s", "emptyDir": {}}]),
                serde_json::json!([{"name": "s", "mountPath": "/x", "subPath": "../../etc"}]),
                "subPath",
            ),
            (
                serde_json::json!([{"name": "s", "emptyDir": {}}]),
                serde_json::json!([{"name": "s", "mountPath": "relative"}]),
                "absolute",
            ),
            (
                serde_json::json!([{"name": "s", "persistentVolumeClaim": {"claimName": "c"}}]),
                serde_json::json!([]),
                "not supported",
            ),
            (
                serde_json::json!([{"name": "s", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token"}}]}}]),
                serde_json::json!([]),
                "serviceAccountToken",
            ),
        ];
        for (vols, mounts, want) in cases {
            let e = prepare(&root.0, &pod(vols, mounts), &ctx).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }
}
