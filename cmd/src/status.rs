//! `kommit status`: the applied commit and its rollout, read from a running `kommit up`
//! over its etcd v3 API (the rollout records under `/registry/commits/`).
//!
//! Exit codes: 0 shown (with `--follow`: the rollout converged), 1 with `--follow` when
//! the rollout failed, or the followed commit was rejected or superseded, 2 when the
//! cluster cannot be reached or the request is at fault.
//!
//! On a terminal `--follow` draws one progress bar per workload (indicatif); otherwise
//! it prints each change as lines, so logs and pipes read well.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::jiff::Timestamp;
use kommit_cache::grpc::pb::etcdserverpb::RangeRequest;
use kommit_cache::grpc::pb::etcdserverpb::kv_client::KvClient;
use kommit_reconciler::rollout::{
    CommitRecord, Health, ObjectProgress, RECORD_PREFIX, RolloutState, record_key,
};
use tonic::transport::Channel;

use crate::up::{APPLIED_KEY, records::ETCD_ENDPOINT_FILE, source};

/// Show the applied commit and its rollout.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository `kommit up` follows, to find its default data directory (default:
    /// the current directory). Not needed with --data-dir or --etcd.
    #[arg(value_name = "REPO")]
    repo: Option<String>,
    /// The data directory of `kommit up` (it holds the etcd API's address).
    #[arg(long, value_name = "DIR", conflicts_with = "etcd")]
    data_dir: Option<PathBuf>,
    /// The etcd API address of `kommit up` (host:port).
    #[arg(long, value_name = "ADDR")]
    etcd: Option<String>,
    /// Follow the rollout until it ends: exit 0 when it converges, 1 when it fails. A
    /// rollout superseded by a newer commit is followed into that commit's.
    #[arg(long, short = 'w', conflicts_with = "history")]
    follow: bool,
    /// List every recorded commit, newest first.
    #[arg(long)]
    history: bool,
    /// Show this commit (a full id or a unique prefix) instead of the applied one.
    #[arg(long, value_name = "SHA", conflicts_with = "history")]
    commit: Option<String>,
}

/// Entry point.
pub fn run(args: Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run_async(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn endpoint(args: &Args) -> anyhow::Result<String> {
    if let Some(e) = &args.etcd {
        return Ok(e.clone());
    }
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            let target = source::resolve(args.repo.as_deref(), None, None)
                .context("finding the cluster (give --data-dir or --etcd)")?;
            source::default_data_dir(&target.name)?
        }
    };
    let file = dir.join(ETCD_ENDPOINT_FILE);
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "reading {} (is `kommit up` running with this data directory?)",
            file.display()
        )
    })?;
    Ok(text.trim().to_owned())
}

struct Client {
    kv: KvClient<Channel>,
    endpoint: String,
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Client {
    async fn connect(endpoint: String) -> anyhow::Result<Client> {
        let url = if endpoint.contains("://") {
            endpoint.clone()
        } else {
            format!("http://{endpoint}")
        };
        let channel = Channel::from_shared(url)
            .with_context(|| format!("{endpoint}: not an address"))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("connecting to the etcd API at {endpoint}"))?;
        Ok(Client {
            kv: KvClient::new(channel),
            endpoint,
        })
    }

    async fn range(&mut self, key: &[u8], end: Vec<u8>) -> anyhow::Result<Vec<(Vec<u8>, i64)>> {
        let r = self
            .kv
            .range(RangeRequest {
                key: key.to_vec().into(),
                range_end: end.into(),
                ..RangeRequest::default()
            })
            .await
            .with_context(|| format!("reading from the etcd API at {}", self.endpoint))?
            .into_inner();
        Ok(r.kvs
            .into_iter()
            .map(|kv| (kv.value.to_vec(), kv.create_revision))
            .collect())
    }

    async fn get(&mut self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self
            .range(key.as_bytes(), Vec::new())
            .await?
            .into_iter()
            .next()
            .map(|(v, _)| v))
    }

    async fn applied(&mut self) -> anyhow::Result<Option<String>> {
        Ok(self
            .get(APPLIED_KEY)
            .await?
            .map(|v| String::from_utf8_lossy(&v).trim().to_owned()))
    }

    async fn record(&mut self, commit: &str) -> anyhow::Result<Option<CommitRecord>> {
        match self.get(&record_key(commit)).await? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .with_context(|| format!("decoding the record of {commit}")),
        }
    }

    /// Every record, newest first.
    async fn history(&mut self) -> anyhow::Result<Vec<CommitRecord>> {
        let prefix = RECORD_PREFIX.as_bytes();
        let mut all: Vec<(CommitRecord, i64)> = self
            .range(prefix, prefix_end(prefix))
            .await?
            .into_iter()
            .filter_map(|(v, rev)| serde_json::from_slice(&v).ok().map(|r| (r, rev)))
            .collect();
        all.sort_by_key(|(r, rev)| {
            std::cmp::Reverse((r.status.start_time.as_ref().map(|t| t.0), *rev))
        });
        Ok(all.into_iter().map(|(r, _)| r).collect())
    }

    /// The full id of the recorded commit starting with `prefix`.
    async fn resolve(&mut self, prefix: &str) -> anyhow::Result<String> {
        let prefix = prefix.to_ascii_lowercase();
        let found: Vec<String> = self
            .history()
            .await?
            .into_iter()
            .map(|r| r.spec.commit)
            .filter(|c| c.starts_with(&prefix))
            .collect();
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!("no recorded commit starts with {prefix}"),
            many => bail!(
                "{prefix} is ambiguous: {} recorded commits start with it",
                many.len()
            ),
        }
    }
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(endpoint(&args)?).await?;
    if args.history {
        print_history(&client.history().await?);
        return Ok(ExitCode::SUCCESS);
    }
    let pinned = match &args.commit {
        Some(c) => Some(client.resolve(c).await?),
        None => None,
    };
    if args.follow {
        return follow(&mut client, pinned).await;
    }
    let commit = match pinned {
        Some(c) => c,
        None => match client.applied().await? {
            Some(c) => c,
            None => {
                println!("no commit applied yet");
                note_rejected(&mut client, None).await?;
                return Ok(ExitCode::SUCCESS);
            }
        },
    };
    match client.record(&commit).await? {
        Some(r) => {
            for line in render(&r, now()) {
                println!("{line}");
            }
        }
        None => println!("commit {commit}: applied, no rollout record"),
    }
    if args.commit.is_none() {
        note_rejected(&mut client, Some(&commit)).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Says so when the newest commit was rejected (the cluster runs an older one).
async fn note_rejected(client: &mut Client, applied: Option<&str>) -> anyhow::Result<()> {
    let history = client.history().await?;
    if let Some(newest) = history.first()
        && newest.status.state == RolloutState::Rejected
        && Some(newest.spec.commit.as_str()) != applied
    {
        println!(
            "newer commit {} was rejected ({}); see kommit status --commit {}",
            newest.spec.short(),
            newest.status.message,
            newest.spec.short()
        );
    }
    Ok(())
}

fn now() -> Timestamp {
    use kommit_reconciler::executor::Clock;
    kommit_reconciler::executor::SystemClock.now()
}

fn secs_between(a: Timestamp, b: Timestamp) -> i64 {
    (b.as_second() - a.as_second()).max(0)
}

fn human(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn bar(done: i32, total: i32, width: usize) -> String {
    let filled = if total <= 0 {
        width
    } else {
        (usize::try_from(done.clamp(0, total)).unwrap_or(0) * width)
            / usize::try_from(total).unwrap_or(1)
    };
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

fn health(o: &ObjectProgress) -> &'static str {
    match o.health {
        Health::Healthy => "healthy",
        Health::Progressing => "progressing",
        Health::Failed => "failed",
    }
}

/// The text of one object's progress (also the bar's message on a terminal).
fn object_line(o: &ObjectProgress) -> String {
    format!(
        "{:<32} {} {}  {}",
        o.id(),
        bar(o.ready, o.desired, 20),
        o.message,
        health(o)
    )
}

/// A record for people.
fn render(r: &CommitRecord, now: Timestamp) -> Vec<String> {
    let mut out = vec![format!(
        "commit {} {}  {}",
        r.spec.short(),
        r.status.state,
        r.spec.subject()
    )];
    if !r.spec.author.is_empty() {
        out.push(format!("  author:  {}", r.spec.author));
    }
    if let Some(start) = r.status.start_time.as_ref().map(|t| t.0) {
        let mut line = format!(
            "  started: {} ({} ago)",
            start.strftime("%Y-%m-%d %H:%M:%S UTC"),
            human(secs_between(start, now))
        );
        match r.status.end_time.as_ref().map(|t| t.0) {
            Some(end) => line.push_str(&format!(
                ", ended after {}",
                human(secs_between(start, end))
            )),
            None => line.push_str(&format!(
                ", running for {}",
                human(secs_between(start, now))
            )),
        }
        out.push(line);
    }
    if !r.status.message.is_empty() {
        let reason = if r.status.reason.is_empty() {
            String::new()
        } else {
            format!("{}: ", r.status.reason)
        };
        out.push(format!("  {reason}{}", r.status.message));
    }
    if !r.status.changes.is_empty() {
        out.push("  changes:".into());
        for c in &r.status.changes {
            let ns = if c.namespace.is_empty() {
                String::new()
            } else {
                format!("{}/", c.namespace)
            };
            let summary = if c.summary.is_empty() {
                String::new()
            } else {
                format!(": {}", c.summary)
            };
            out.push(format!(
                "    {} {} {ns}{}{summary}",
                c.action.to_lowercase(),
                c.kind,
                c.name
            ));
        }
    }
    if !r.status.objects.is_empty() {
        out.push("  workloads:".into());
        for o in &r.status.objects {
            out.push(format!("    {}", object_line(o)));
        }
    }
    if !r.status.errors.is_empty() {
        out.push("  errors:".into());
        for e in &r.status.errors {
            out.push(format!("    {e}"));
        }
    }
    out
}

fn print_history(records: &[CommitRecord]) {
    if records.is_empty() {
        println!("no commits recorded yet");
        return;
    }
    let now = now();
    println!(
        "{:<10} {:<12} {:<10} {:<9} MESSAGE",
        "COMMIT", "STATE", "AGE", "DURATION"
    );
    for r in records {
        let start = r.status.start_time.as_ref().map(|t| t.0);
        let age = start.map_or_else(|| "?".into(), |s| human(secs_between(s, now)));
        let duration = match (start, r.status.end_time.as_ref().map(|t| t.0)) {
            (Some(s), Some(e)) => human(secs_between(s, e)),
            (Some(s), None) => format!("{}+", human(secs_between(s, now))),
            _ => "?".into(),
        };
        println!(
            "{:<10} {:<12} {:<10} {:<9} {}",
            r.spec.short(),
            r.status.state.as_str(),
            age,
            duration,
            r.spec.subject()
        );
    }
}

/// How the followed rollout is shown: bars on a terminal, lines elsewhere.
enum View {
    Lines {
        last: Vec<String>,
    },
    Bars {
        multi: indicatif::MultiProgress,
        header: indicatif::ProgressBar,
        bars: Vec<(String, indicatif::ProgressBar)>,
    },
}

impl View {
    fn new() -> View {
        if std::io::stdout().is_terminal() {
            let multi = indicatif::MultiProgress::new();
            let header = multi.add(indicatif::ProgressBar::new_spinner());
            header.enable_steady_tick(Duration::from_millis(120));
            View::Bars {
                multi,
                header,
                bars: Vec::new(),
            }
        } else {
            View::Lines { last: Vec::new() }
        }
    }

    fn show(&mut self, r: &CommitRecord) {
        match self {
            View::Lines { last } => {
                let lines = render(r, now());
                // Times change every second; print when anything else does.
                let key: Vec<String> = lines
                    .iter()
                    .filter(|l| !l.starts_with("  started:"))
                    .cloned()
                    .collect();
                if key != *last {
                    for l in &lines {
                        println!("{l}");
                    }
                    *last = key;
                }
            }
            View::Bars {
                multi,
                header,
                bars,
            } => {
                header.set_message(format!(
                    "commit {} {}  {}",
                    r.spec.short(),
                    r.status.state,
                    r.spec.subject()
                ));
                let style =
                    indicatif::ProgressStyle::with_template("  {prefix:32} [{bar:24}] {msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("#>-");
                for o in &r.status.objects {
                    let id = o.id();
                    let pb = match bars.iter().find(|(k, _)| *k == id) {
                        Some((_, pb)) => pb.clone(),
                        None => {
                            let pb = multi.add(indicatif::ProgressBar::new(0));
                            pb.set_style(style.clone());
                            pb.set_prefix(id.clone());
                            bars.push((id, pb.clone()));
                            pb
                        }
                    };
                    pb.set_length(u64::try_from(o.desired.max(0)).unwrap_or(0));
                    pb.set_position(u64::try_from(o.ready.max(0)).unwrap_or(0));
                    pb.set_message(format!("{}  {}", o.message, health(o)));
                }
            }
        }
    }

    fn finish(&mut self, r: &CommitRecord) {
        if let View::Bars { header, bars, .. } = self {
            for (_, pb) in bars.drain(..) {
                pb.finish();
            }
            header.finish_and_clear();
            for l in render(r, now()) {
                println!("{l}");
            }
        }
    }
}

async fn follow(client: &mut Client, pinned: Option<String>) -> anyhow::Result<ExitCode> {
    let mut view = View::new();
    let mut target = pinned.clone();
    let mut waiting_said = false;
    loop {
        let commit = match &target {
            Some(c) => Some(c.clone()),
            None => client.applied().await?,
        };
        let record = match &commit {
            Some(c) => client.record(c).await?,
            None => None,
        };
        match record {
            None => {
                if !waiting_said {
                    println!("waiting for a commit to be applied");
                    waiting_said = true;
                }
            }
            Some(r) => {
                // Stay with this commit: a newer one shows up as its superseding.
                target = Some(r.spec.commit.clone());
                view.show(&r);
                match r.status.state {
                    RolloutState::Progressing => {}
                    RolloutState::Converged => {
                        view.finish(&r);
                        return Ok(ExitCode::SUCCESS);
                    }
                    RolloutState::Superseded if pinned.is_none() => {
                        let next = r.status.superseded_by.clone();
                        view.finish(&r);
                        println!(
                            "following commit {}",
                            next.as_deref()
                                .map(|n| n.get(..8).unwrap_or(n))
                                .unwrap_or("?")
                        );
                        view = View::new();
                        target = next;
                    }
                    RolloutState::Failed | RolloutState::Rejected | RolloutState::Superseded => {
                        view.finish(&r);
                        return Ok(ExitCode::from(1));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kommit_reconciler::rollout::CommitSpec;

    #[test]
    fn prefix_ranges_end_after_the_last_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/registry/commits/"), b"/registry/commits0");
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b");
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }

    #[test]
    fn bars_fill_in_proportion() {
        assert_eq!(bar(0, 4, 8), "[--------]");
        assert_eq!(bar(2, 4, 8), "[####----]");
        assert_eq!(bar(5, 4, 8), "[########]");
        assert_eq!(bar(0, 0, 4), "[####]", "nothing wanted is done");
    }

    #[test]
    fn a_rejected_record_reads_with_its_errors() {
        let start: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        let r = CommitRecord::rejected(
            CommitSpec {
                commit: "ab".repeat(20),
                author: "Ada <ada@example.invalid>".into(),
                message: "web: typo\n\nbody".into(),
                ..CommitSpec::default()
            },
            vec!["web.yaml:3:1: spec.replicass: unknown field".into()],
            start,
        );
        let text = render(&r, "2026-01-01T10:02:00Z".parse().unwrap()).join("\n");
        assert_eq!(
            text,
            "commit abababab Rejected  web: typo
  author:  Ada <ada@example.invalid>
  started: 2026-01-01 10:00:00 UTC (2m0s ago), ended after 0s
  ValidationFailed: 1 validation error; the cluster keeps the last applied commit
  errors:
    web.yaml:3:1: spec.replicass: unknown field"
        );
    }
}
