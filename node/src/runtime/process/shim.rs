//! The per-container supervisor of the process runtime (`demo process-shim <dir>`).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use k8s_openapi::jiff::Timestamp;

use super::{
    CONFIG, ContainerRecord, EXIT, ExitRecord, LOG, PID, PidRecord, process_start_ticks, read_json,
    write_json,
};

/// Arguments of the shim.
#[derive(Debug, clap::Args)]
pub struct ShimArgs {
    /// The container's state directory.
    dir: PathBuf,
}

/// Runs one container to its end (blocking); returns the shim's own exit code.
pub fn shim_main(args: ShimArgs) -> i32 {
    // Own session: the agent's terminal signals (Ctrl-C) and its exit do not reach us.
    let _ = nix::unistd::setsid();
    let dir = args.dir;
    let fail = |message: String| {
        eprintln!("process-shim: {message}");
        let rec = ExitRecord {
            exit_code: 128,
            finished_at: Timestamp::now(),
            reason: Some("StartError".into()),
            message: Some(message),
        };
        let _ = write_json(&dir.join(EXIT), &rec);
        1
    };
    let Some(rec) = read_json::<ContainerRecord>(&dir.join(CONFIG)) else {
        return fail(format!("cannot read {}", dir.join(CONFIG).display()));
    };
    let me = std::process::id() as i32;
    if let Some(ticks) = process_start_ticks(me) {
        let _ = write_json(
            &dir.join("shim.json"),
            &PidRecord {
                pid: me,
                start_ticks: ticks,
                started_at: Timestamp::now(),
            },
        );
    }
    // Join the container's cgroups; the process inherits them.
    for cg in &rec.cgroups {
        if let Err(e) = std::fs::write(cg.join("cgroup.procs"), me.to_string()) {
            eprintln!("process-shim: cannot join cgroup {}: {e}", cg.display());
        }
    }
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG))
    {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot open the log: {e}")),
    };
    let log2 = match log.try_clone() {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot open the log: {e}")),
    };
    let Some((prog, rest)) = rec.argv.split_first() else {
        return fail("empty command".into());
    };
    let mut cmd = Command::new(prog);
    cmd.args(rest)
        .env_clear()
        .envs(rec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&rec.cwd)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("exec: \"{prog}\": {e}")),
    };
    let pid = child.id() as i32;
    let started_at = Timestamp::now();
    // Already gone (or a zombie): record a pid that can never match a live process.
    let start_ticks = process_start_ticks(pid).unwrap_or(u64::MAX);
    let recorded = write_json(
        &dir.join(PID),
        &PidRecord {
            pid,
            start_ticks,
            started_at,
        },
    );
    // The container was removed while we started it (an agent that found it "created"
    // and cleaned it up): nobody could ever stop this process, so it must not run.
    if recorded.is_err() || !dir.join(CONFIG).exists() {
        eprintln!("process-shim: the container was removed while starting; stopping it");
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        return 1;
    }
    let status = child.wait();
    let exit_code = match status {
        Ok(s) => s.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + s.signal().unwrap_or(9)
        }),
        Err(e) => {
            eprintln!("process-shim: wait failed: {e}");
            137
        }
    };
    let rec = ExitRecord {
        exit_code,
        finished_at: Timestamp::now(),
        reason: None,
        message: None,
    };
    if let Err(e) = write_json(&dir.join(EXIT), &rec) {
        eprintln!("process-shim: cannot record the exit: {e}");
        return 1;
    }
    0
}
