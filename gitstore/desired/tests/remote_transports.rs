//! The ref watcher following a remote over the network transports a user meets: smart
//! HTTP served by the real `git http-backend` (behind a small CGI bridge on loopback, as a
//! web server would run it) and SSH served by a real OpenSSH server on loopback.
//!
//! Each test pushes with the real `git` CLI, lets the watcher fetch into its mirror, and
//! loads the fetched commit from the mirror.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/support/mod.rs"]
mod support;
mod watching;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kommit_desired::watch::{RefWatcher, Source, WatchConfig};
use kommit_desired::{LoadOptions, Snapshot, open_repository};
use support::GitRepo;
use watching::{WAIT, next_move, oid};

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\n")
}

/// Pushes a first commit to `upstream`, follows `url` into `mirror`, then pushes a second
/// commit and asks for a fetch (as the webhook does): both commits arrive and the second
/// loads from the mirror with its ConfigMap.
async fn follow(upstream: &GitRepo, url: &str, mirror: PathBuf) {
    let work = GitRepo::init();
    let push_to = format!("file://{}", upstream.path().display());
    work.write("a.yaml", &config_map("a"));
    let a = work.commit("a");
    work.git(&["push", "-q", &push_to, "main"]);

    let mut config = WatchConfig::new(
        Source::Remote {
            url: url.to_owned(),
            mirror: mirror.clone(),
        },
        "main",
    );
    config.poll_interval = Duration::from_secs(3600);
    let mut w = RefWatcher::spawn(config, None).unwrap();
    let first = next_move(&mut w).await;
    assert_eq!(
        (first.commit, first.repository.clone()),
        (oid(&a), mirror.clone())
    );

    work.write("b.yaml", &config_map("b"));
    let b = work.commit("b");
    work.git(&["push", "-q", &push_to, "main"]);
    assert!(w.handle().refresh());
    let e = next_move(&mut w).await;
    assert_eq!(
        (e.previous, e.commit, e.fast_forward),
        (Some(oid(&a)), oid(&b), true)
    );
    let repo = open_repository(&mirror).unwrap();
    let snap = Snapshot::load(&repo, &b, &LoadOptions::default()).unwrap();
    let names: Vec<&str> = snap.objects.keys().map(|k| &*k.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(snap.files().collect::<Vec<_>>(), ["a.yaml", "b.yaml"]);
}

// ---------------------------------------------------------------------------------------
// Smart HTTP: `git http-backend` behind a CGI bridge.

/// An HTTP/1.1 server on loopback that runs `git http-backend` for every request
/// (one request per connection), serving the repositories under `root`.
struct GitHttpServer {
    addr: std::net::SocketAddr,
}

impl GitHttpServer {
    fn start(root: &Path) -> GitHttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let root = root.to_owned();
        // The thread ends with the test process; the listener is on loopback only.
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let root = root.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve_one(conn, &root) {
                        eprintln!("git http bridge: {e}");
                    }
                });
            }
        });
        GitHttpServer { addr }
    }
}

fn serve_one(conn: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = header("content-length") {
        let len: usize = len.parse().unwrap_or(0);
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for (name, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(v) = header(name) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let out = child.wait_with_output()?;
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        });
    let (head, payload) = match split {
        Some((i, n)) => (&out.stdout[..i], &out.stdout[i + n..]),
        None => (&out.stdout[..0], &out.stdout[..]),
    };
    let mut status = "200 OK".to_owned();
    let mut response = Vec::new();
    for line in String::from_utf8_lossy(head).lines() {
        match line.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_owned(),
            Some(_) => response.extend_from_slice(format!("{line}\r\n").as_bytes()),
            None => {}
        }
    }
    let mut conn = conn;
    conn.write_all(format!("HTTP/1.1 {status}\r\n").as_bytes())?;
    conn.write_all(&response)?;
    conn.write_all(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            payload.len()
        )
        .as_bytes(),
    )?;
    conn.write_all(payload)?;
    conn.flush()
}

#[tokio::test]
async fn a_remote_over_smart_http_is_followed() {
    let upstream = GitRepo::init_bare();
    let root = upstream.path().parent().unwrap().to_owned();
    let name = upstream.path().file_name().unwrap().to_string_lossy();
    let server = GitHttpServer::start(&root);
    let url = format!("http://{}/{name}", server.addr);
    let mirror = upstream.scratch().join("mirror-http.git");
    follow(&upstream, &url, mirror).await;
}

// ---------------------------------------------------------------------------------------
// SSH: a real OpenSSH server on a loopback port, with keys made for the test.

struct Sshd {
    child: Child,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs (openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_sshd(dir: &Path) -> Sshd {
    let sshd = Path::new("/usr/sbin/sshd");
    assert!(
        sshd.exists(),
        "/usr/sbin/sshd is missing: install openssh-server (tests/run does)"
    );
    // sshd insists on its privilege separation directory.
    std::fs::create_dir_all("/run/sshd").expect("/run/sshd can be made (tests run as root)");
    keygen(&dir.join("host_key"));
    keygen(&dir.join("client_key"));
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n",
            host = dir.join("host_key").display(),
            auth = dir.join("authorized_keys").display(),
        ),
    )
    .unwrap();
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sshd starts");
    let sshd = Sshd { child, port };
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < WAIT, "sshd did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    sshd
}

#[tokio::test]
async fn a_remote_over_ssh_is_followed() {
    let upstream = GitRepo::init_bare();
    let dir = tempfile::tempdir().unwrap();
    let sshd = start_sshd(dir.path());
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    // The mirror exists before the watcher starts, with the ssh command to use: the
    // test's key, and no known_hosts of the machine's user.
    let mirror = upstream.scratch().join("mirror-ssh.git");
    support::git_in(
        upstream.scratch(),
        &["init", "-q", "--bare", mirror.to_str().unwrap()],
    );
    let ssh = format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o BatchMode=yes \
         -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        dir.path().join("client_key").display()
    );
    support::git_in(&mirror, &["config", "core.sshCommand", &ssh]);
    let url = format!(
        "ssh://{user}@127.0.0.1:{}{}",
        sshd.port,
        upstream.path().display()
    );
    follow(&upstream, &url, mirror).await;
}
