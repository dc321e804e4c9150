//! `kommit init DIR [--bare]`: a ready cluster repository with a starter manifest.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::desired_args::{EXIT_OK, fail};

/// Arguments of `kommit init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to create (must not exist, or be empty).
    dir: PathBuf,
    /// Make a bare repository with kommit's pre-receive hook installed: `git push` to it
    /// is push-to-deploy, and an invalid commit is refused at push time.
    #[arg(long)]
    bare: bool,
    /// The branch kommit deploys.
    #[arg(long, default_value = "main")]
    branch: String,
}

const README: &str = "\
# A kommit cluster repository

The cluster runs the Kubernetes manifests of the `main` branch of this repository.
Change it with a commit:

    kommit validate          # is the commit valid?
    kommit plan main..HEAD   # what would it change?
    git push                 # deploy (a push of an invalid commit is refused)

`hello.yaml` is a starter: a namespace, a Deployment of two web servers and a Service
in front of them.
";

const HELLO: &str = "\
# A starter: two busybox web servers behind a Service.
apiVersion: v1
kind: Namespace
metadata:
  name: hello
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  namespace: hello
spec:
  replicas: 2
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      containers:
        - name: web
          image: busybox:latest
          command: [httpd, -f, -v, -p, \"8080\", -h, /etc]
          ports:
            - {name: http, containerPort: 8080}
          readinessProbe:
            tcpSocket: {port: http}
---
apiVersion: v1
kind: Service
metadata:
  name: hello
  namespace: hello
spec:
  selector: {app: hello}
  ports:
    - {name: http, port: 80, targetPort: http}
";

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Creates the repository.
pub fn run(args: &Args) -> ExitCode {
    match create(args) {
        Ok(message) => {
            println!("{message}");
            ExitCode::from(EXIT_OK)
        }
        Err(e) => fail(e),
    }
}

fn create(args: &Args) -> Result<String, String> {
    let dir = &args.dir;
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if entries.next().is_some() {
            return Err(format!("{} exists and is not empty", dir.display()));
        }
    }
    let readme = README
        .replace("`main`", &format!("`{}`", args.branch))
        .replace("main..HEAD", &format!("{}..HEAD", args.branch));
    let files: [(&str, &[u8]); 2] = [
        ("README.md", readme.as_bytes()),
        ("hello.yaml", HELLO.as_bytes()),
    ];
    let commit = kommit_desired::create_repository(
        dir,
        args.bare,
        &args.branch,
        &files,
        "kommit init: starter cluster",
    )
    .map_err(|e| e.to_string())?;
    let git_dir = if args.bare {
        dir.clone()
    } else {
        dir.join(".git")
    };
    // Record the tracked branch where the hook (and the cluster) read it.
    let config = git_dir.join("config");
    let mut text =
        std::fs::read_to_string(&config).map_err(|e| format!("{}: {e}", config.display()))?;
    text.push_str(&format!("[kommit]\n\tbranch = {}\n", args.branch));
    std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
    if !args.bare {
        return Ok(format!(
            "Created cluster repository {} (branch {}, commit {}) with hello.yaml.",
            dir.display(),
            args.branch,
            commit.to_hex_with_len(12)
        ));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the kommit binary: {e}"))?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    let hooks = git_dir.join("hooks");
    std::fs::create_dir_all(&hooks).map_err(|e| format!("{}: {e}", hooks.display()))?;
    let hook = hooks.join("pre-receive");
    let script = format!(
        "#!/bin/sh\n# Installed by `kommit init --bare`: refuse pushes of invalid commits to {branch}.\nexec {} hook pre-receive --branch {branch}\n",
        shell_quote(&exe),
        branch = args.branch
    );
    std::fs::write(&hook, script).map_err(|e| format!("{}: {e}", hook.display()))?;
    set_executable(&hook)?;
    Ok(format!(
        "Created bare cluster repository {} (branch {}, commit {}) with the pre-receive hook: \
         pushes of invalid commits to {} are refused.\nClone it: git clone {} cluster",
        dir.display(),
        args.branch,
        commit.to_hex_with_len(12),
        args.branch,
        dir.display()
    ))
}

#[cfg(unix)]
fn set_executable(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", p.display()))
}

#[cfg(not(unix))]
fn set_executable(_: &Path) -> Result<(), String> {
    Ok(())
}
