//! Images: pull policy, image errors as pods report them, and the node's own demo image.
//!
//! ## The demo image (`kommit.dev/demo:<any tag>`)
//!
//! No image registry is reachable on kommit's own machines, yet the examples and tests need
//! images. The node therefore provides one itself, in the spirit of Kubernetes' `agnhost`
//! test image: `kommit.dev/demo` is made from the node's own binary
//! ([`DemoProgram`], normally `std::env::current_exe()`), the shared libraries it needs
//! (found with `ldd` and copied in at their paths) and, when the host has it,
//! Debian's `busybox-static` (`/bin/busybox` with a link per applet: `sh`, `sleep`,
//! `wget`, `cat`, ...). The root filesystem is imported into Docker as a tar stream
//! (`docker import`, nothing is pulled), with `ENTRYPOINT ["/kommit", "demo"]`, so a pod's
//! `args: ["http"]` picks a [demo workload](crate::demo), as with agnhost.
//!
//! Every tag of `kommit.dev/demo` is served by the node: a pod asking for
//! `kommit.dev/demo:v2` gets the same image under that tag, which lets examples roll out a
//! "new version" by changing the tag. The image carries a label with the SHA-256 of its
//! contents and is imported again only when that changed (a new binary). Because the node
//! is the registry of these images, every pull policy (`Always` included) is satisfied
//! locally.
//!
//! The process runtime runs the same workloads by starting the node's binary with
//! `demo <args>` directly; other images' commands run from the host there.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::runtime::RuntimeError;

/// Repository of the node's demo image.
pub const DEMO_REPOSITORY: &str = "kommit.dev/demo";

/// The tag the node builds the demo image under before tagging it as pods ask.
pub const DEMO_BASE_TAG: &str = "kommit-base";

/// Where the demo image keeps the node's binary.
pub const DEMO_BINARY_PATH: &str = "/kommit";

/// Kubernetes' `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull every time the container starts.
    Always,
    /// Pull only when the image is missing.
    IfNotPresent,
    /// Never pull; a missing image is `ErrImageNeverPull`.
    Never,
}

impl PullPolicy {
    /// The policy a container gets: its own, else Kubernetes' default (`Always` for a
    /// `:latest` or untagged image, `IfNotPresent` otherwise). Unknown values fall back to
    /// the default.
    pub fn for_container(policy: Option<&str>, image: &str) -> Self {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            _ => {
                let parsed = ImageName::parse(image);
                if parsed.digest.is_none() && parsed.tag.as_deref().is_none_or(|t| t == "latest") {
                    PullPolicy::Always
                } else {
                    PullPolicy::IfNotPresent
                }
            }
        }
    }
}

/// An image reference split into repository, tag and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// Everything before the tag (`kommit.dev/demo`, `busybox`, `host:5000/a/b`).
    pub repository: String,
    /// The tag, if written.
    pub tag: Option<String>,
    /// The digest (`sha256:...`), if written.
    pub digest: Option<String>,
}

impl ImageName {
    /// Splits `image` (no validation beyond what the split needs).
    pub fn parse(image: &str) -> Self {
        let (rest, digest) = match image.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None => (image, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        match rest[last_slash..].rfind(':') {
            Some(colon) => {
                let at = last_slash + colon;
                ImageName {
                    repository: rest[..at].to_string(),
                    tag: Some(rest[at + 1..].to_string()),
                    digest,
                }
            }
            None => ImageName {
                repository: rest.to_string(),
                tag: None,
                digest,
            },
        }
    }

    /// Whether this names the node's demo image.
    pub fn is_demo(&self) -> bool {
        self.repository == DEMO_REPOSITORY
    }

    /// The tag, `latest` when none is written.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }
}

/// Whether `image` is served by the node itself (see the module docs).
pub fn is_demo_image(image: &str) -> bool {
    ImageName::parse(image).is_demo()
}

/// Why an image is not available, with the waiting reason a pod shows for it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// Missing and the policy forbids pulling.
    #[error("Container image \"{image}\" is not present with pull policy of Never")]
    NeverPull {
        /// The image.
        image: String,
    },
    /// The pull failed (the daemon's message) or did not finish in time.
    #[error("Failed to pull image \"{image}\": {message}")]
    Pull {
        /// The image.
        image: String,
        /// The daemon's message.
        message: String,
    },
    /// The reference cannot be parsed.
    #[error("Failed to apply default image tag \"{image}\": invalid reference format")]
    InvalidName {
        /// The image.
        image: String,
    },
    /// The node could not make its demo image.
    #[error("Failed to build the node's demo image \"{image}\": {message}")]
    Build {
        /// The image.
        image: String,
        /// What failed.
        message: String,
    },
    /// The runtime failed.
    #[error("{0}")]
    Runtime(String),
}

impl ImageError {
    /// The container waiting reason Kubernetes uses for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::NeverPull { .. } => "ErrImageNeverPull",
            ImageError::InvalidName { .. } => "InvalidImageName",
            ImageError::Pull { .. } | ImageError::Build { .. } | ImageError::Runtime(_) => {
                "ErrImagePull"
            }
        }
    }

    /// Whether later attempts back off (`ImagePullBackOff`), as pull failures do.
    pub fn backs_off(&self) -> bool {
        matches!(
            self,
            ImageError::Pull { .. } | ImageError::Build { .. } | ImageError::Runtime(_)
        )
    }
}

impl From<RuntimeError> for ImageError {
    fn from(e: RuntimeError) -> Self {
        ImageError::Runtime(e.to_string())
    }
}

/// Rejects references Docker would refuse, so the pod says `InvalidImageName`.
pub fn validate_image_name(image: &str) -> Result<(), ImageError> {
    let bad = image.is_empty()
        || image
            .chars()
            .any(|c| c.is_whitespace() || c.is_ascii_uppercase() && !image.contains('@'))
        || image.starts_with(['/', ':', '@', '.', '-'])
        || image.ends_with([':', '/', '@']);
    if bad {
        return Err(ImageError::InvalidName {
            image: image.to_string(),
        });
    }
    Ok(())
}

/// How to run the demo workloads: a program and the arguments that select them
/// (`kommit demo` → path of `kommit`, `["demo"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoProgram {
    /// The executable on the host.
    pub path: PathBuf,
    /// Arguments before the workload name.
    pub args: Vec<String>,
}

impl DemoProgram {
    /// This process's own executable with `args` (for the `kommit` binary: `["demo"]`).
    pub fn current(args: &[&str]) -> std::io::Result<Self> {
        Ok(DemoProgram {
            path: std::env::current_exe()?,
            args: args.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The demo image's ENTRYPOINT: the binary at [`DEMO_BINARY_PATH`] with the selecting args.
    pub fn image_entrypoint(&self) -> Vec<String> {
        std::iter::once(DEMO_BINARY_PATH.to_string())
            .chain(self.args.iter().cloned())
            .collect()
    }

    /// The same entrypoint on the host (for the process runtime).
    pub fn host_entrypoint(&self) -> Vec<String> {
        std::iter::once(self.path.to_string_lossy().into_owned())
            .chain(self.args.iter().cloned())
            .collect()
    }
}

/// One file of the demo root filesystem.
#[derive(Debug, Clone)]
enum Entry {
    /// A file copied from the host (`source`) to `path` in the image.
    File {
        path: String,
        source: PathBuf,
        mode: u32,
    },
    /// A file with given contents.
    Text {
        path: String,
        contents: String,
        mode: u32,
    },
    /// A symbolic link.
    Link { path: String, target: String },
    /// A directory.
    Dir { path: String, mode: u32 },
}

/// The contents of the demo image, listed and hashed but not yet packed.
#[derive(Debug, Clone)]
pub struct DemoRootfs {
    entries: Vec<Entry>,
    /// SHA-256 over every path and content, hex.
    pub content_hash: String,
    /// Whether busybox (a shell and tools) is inside.
    pub has_busybox: bool,
    /// The ENTRYPOINT.
    pub entrypoint: Vec<String>,
}

/// Where Debian's busybox-static installs busybox.
pub const BUSYBOX_PATH: &str = "/bin/busybox";

impl DemoRootfs {
    /// Lists the files of the demo image for `program` (blocking: reads and hashes them).
    /// `busybox` is added when that file exists.
    pub fn collect(program: &DemoProgram, busybox: &Path) -> Result<Self, String> {
        let mut entries = vec![
            Entry::Dir { path: "tmp".into(), mode: 0o1777 },
            Entry::Dir { path: "root".into(), mode: 0o700 },
            Entry::Dir { path: "etc".into(), mode: 0o755 },
            Entry::Dir { path: "bin".into(), mode: 0o755 },
            Entry::Text {
                path: "etc/passwd".into(),
                contents: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                    .into(),
                mode: 0o644,
            },
            Entry::Text { path: "etc/group".into(), contents: "root:x:0:\nnogroup:x:65534:\n".into(), mode: 0o644 },
            Entry::Text { path: "etc/nsswitch.conf".into(), contents: "hosts: files dns\n".into(), mode: 0o644 },
            Entry::File { path: DEMO_BINARY_PATH.trim_start_matches('/').into(), source: program.path.clone(), mode: 0o755 },
        ];
        for lib in shared_libraries(&program.path)? {
            let path = lib.to_string_lossy().trim_start_matches('/').to_string();
            entries.push(Entry::File {
                path,
                source: lib,
                mode: 0o755,
            });
        }
        let has_busybox = busybox.is_file();
        if has_busybox {
            entries.push(Entry::File {
                path: "bin/busybox".into(),
                source: busybox.to_path_buf(),
                mode: 0o755,
            });
            for applet in busybox_applets(busybox)? {
                if applet == "bin/busybox" {
                    continue;
                }
                entries.push(Entry::Link {
                    path: applet,
                    target: "/bin/busybox".into(),
                });
            }
        } else {
            tracing::warn!(
                busybox = %busybox.display(),
                "busybox not found: the demo image will have no shell (install Debian's busybox-static)"
            );
        }
        entries.sort_by(|a, b| entry_path(a).cmp(entry_path(b)));
        entries.dedup_by(|a, b| entry_path(a) == entry_path(b));
        let entrypoint = program.image_entrypoint();
        let mut hasher = Sha256::new();
        hasher.update(format!("entrypoint={entrypoint:?}\n"));
        for e in &entries {
            match e {
                Entry::File { path, source, mode } => {
                    hasher.update(format!("file {path} {mode:o}\n"));
                    let mut f = std::fs::File::open(source)
                        .map_err(|e| format!("{}: {e}", source.display()))?;
                    std::io::copy(&mut f, &mut hasher)
                        .map_err(|e| format!("{}: {e}", source.display()))?;
                }
                Entry::Text {
                    path,
                    contents,
                    mode,
                } => hasher.update(format!("text {path} {mode:o}\n{contents}")),
                Entry::Link { path, target } => hasher.update(format!("link {path} {target}\n")),
                Entry::Dir { path, mode } => hasher.update(format!("dir {path} {mode:o}\n")),
            }
        }
        let content_hash = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(DemoRootfs {
            entries,
            content_hash,
            has_busybox,
            entrypoint,
        })
    }

    /// Packs the root filesystem as a tar archive (blocking).
    pub fn to_tar(&self) -> Result<Vec<u8>, String> {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(true);
        // Parent directories first, so every path has one.
        let mut dirs: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for e in &self.entries {
            let p = Path::new(entry_path(e));
            for anc in p.ancestors().skip(1) {
                let s = anc.to_string_lossy();
                if !s.is_empty() {
                    dirs.insert(s.into_owned());
                }
            }
        }
        let explicit: std::collections::BTreeMap<&str, u32> = self
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Dir { path, mode } => Some((path.as_str(), *mode)),
                _ => None,
            })
            .collect();
        for d in &dirs {
            let mode = explicit.get(d.as_str()).copied().unwrap_or(0o755);
            append_dir(&mut b, d, mode)?;
        }
        for e in &self.entries {
            match e {
                Entry::Dir { path, mode } => {
                    if !dirs.contains(path) {
                        append_dir(&mut b, path, *mode)?;
                    }
                }
                Entry::File { path, source, mode } => {
                    let data =
                        std::fs::read(source).map_err(|e| format!("{}: {e}", source.display()))?;
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    h.set_mode(*mode);
                    h.set_mtime(0);
                    b.append_data(&mut h, path, data.as_slice())
                        .map_err(|e| format!("tar {path}: {e}"))?;
                }
                Entry::Text {
                    path,
                    contents,
                    mode,
                } => {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(contents.len() as u64);
                    h.set_mode(*mode);
                    h.set_mtime(0);
                    b.append_data(&mut h, path, contents.as_bytes())
                        .map_err(|e| format!("tar {path}: {e}"))?;
                }
                Entry::Link { path, target } => {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_mode(0o777);
                    h.set_mtime(0);
                    b.append_link(&mut h, path, target)
                        .map_err(|e| format!("tar {path}: {e}"))?;
                }
            }
        }
        b.into_inner().map_err(|e| format!("tar: {e}"))
    }
}

fn append_dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> Result<(), String> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(mode);
    h.set_mtime(0);
    b.append_data(&mut h, format!("{path}/"), std::io::empty())
        .map_err(|e| format!("tar {path}: {e}"))
}

fn entry_path(e: &Entry) -> &str {
    match e {
        Entry::File { path, .. }
        | Entry::Text { path, .. }
        | Entry::Link { path, .. }
        | Entry::Dir { path, .. } => path,
    }
}

/// Shared libraries (including the dynamic loader) `exe` loads, from `ldd`. A static
/// binary has none.
pub fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>, String> {
    let out = std::process::Command::new("ldd")
        .arg(exe)
        .output()
        .map_err(|e| {
            format!(
                "cannot run ldd to find the libraries of {}: {e}",
                exe.display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(format!("ldd {} failed: {}", exe.display(), err.trim()));
    }
    Ok(parse_ldd(&text))
}

/// Paths in `ldd` output (`libc.so.6 => /lib/.../libc.so.6 (0x...)`, `/lib64/ld-linux... (0x...)`).
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let candidate = match line.split_once("=>") {
            Some((_, rhs)) => rhs.trim(),
            None => line,
        };
        let path = candidate.split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    libs
}

/// Applet paths (`bin/sh`, `usr/bin/wget`, ...) of a busybox binary.
fn busybox_applets(busybox: &Path) -> Result<Vec<String>, String> {
    let out = std::process::Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| format!("cannot run {} --list-full: {e}", busybox.display()))?;
    if !out.status.success() {
        return Err(format!("{} --list-full failed", busybox.display()));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty() && !l.contains(".."))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pull_policy_follows_kubernetes() {
        assert_eq!(
            PullPolicy::for_container(None, "busybox"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::for_container(None, "busybox:latest"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::for_container(None, "busybox:1.36"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::for_container(None, "host:5000/busybox"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::for_container(None, "busybox@sha256:abc"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::for_container(Some("Never"), "busybox"),
            PullPolicy::Never
        );
    }

    #[test]
    fn image_names_split() {
        let n = ImageName::parse("kommit.dev/demo:v2");
        assert!(n.is_demo());
        assert_eq!(n.tag.as_deref(), Some("v2"));
        let n = ImageName::parse("localhost:5000/x/y");
        assert_eq!(n.repository, "localhost:5000/x/y");
        assert_eq!(n.tag, None);
        assert!(!is_demo_image("kommit.dev/demo-other:1"));
    }

    #[test]
    fn ldd_output_parses() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn bad_image_names_are_rejected() {
        assert!(validate_image_name("").is_err());
        assert!(validate_image_name("Busybox").is_err());
        assert!(validate_image_name("busy box").is_err());
        assert!(validate_image_name("busybox:").is_err());
        assert!(validate_image_name("kommit.dev/demo:1").is_ok());
    }
}
