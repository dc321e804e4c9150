//! `webui` (dockercoins): collects the workers' reports and shows the hashing rate.
//!
//! * `POST /report` with `{"worker": "<name>", "hashes": <n>}` → adds n hashes
//! * `GET /json` → `{"hashes": <total>, "rate": <hashes per second>, "workers": <n>}`,
//!   the rate over the last `--window` seconds (default 10; less while webui is younger)
//!   and the workers that reported in it
//! * `GET /` → a small HTML page that shows the JSON, refreshed every second
//! * `GET /healthz` → `ok`

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{DemoError, port_from, serve};

/// Arguments of `webui`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Port (default `$PORT`, else 8080).
    #[arg(long)]
    port: Option<u16>,
    /// Seconds the rate is averaged over.
    #[arg(long, default_value_t = 10.0)]
    window: f64,
}

#[derive(serde::Deserialize)]
struct Report {
    worker: String,
    hashes: u64,
}

/// The reports of the last window and the total.
pub struct Tally {
    started: Instant,
    window: Duration,
    total: u64,
    recent: VecDeque<(Instant, String, u64)>,
}

impl Tally {
    /// An empty tally averaging over `window`.
    pub fn new(window: Duration, now: Instant) -> Self {
        Tally {
            started: now,
            window,
            total: 0,
            recent: VecDeque::new(),
        }
    }

    /// Records `hashes` from `worker` at `now`.
    pub fn add(&mut self, worker: String, hashes: u64, now: Instant) {
        self.total = self.total.saturating_add(hashes);
        self.recent.push_back((now, worker, hashes));
        self.forget(now);
    }

    fn forget(&mut self, now: Instant) {
        while let Some((t, _, _)) = self.recent.front() {
            if now.duration_since(*t) > self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }

    /// `(total, rate per second, workers)` at `now`.
    pub fn summary(&mut self, now: Instant) -> (u64, f64, usize) {
        self.forget(now);
        let span = now
            .duration_since(self.started)
            .min(self.window)
            .as_secs_f64();
        let in_window: u64 = self.recent.iter().map(|(_, _, n)| n).sum();
        let rate = if span > 0.0 {
            in_window as f64 / span
        } else {
            0.0
        };
        let mut workers: Vec<&str> = self.recent.iter().map(|(_, w, _)| w.as_str()).collect();
        workers.sort_unstable();
        workers.dedup();
        (self.total, rate, workers.len())
    }
}

type Shared = Arc<Mutex<Tally>>;

pub async fn run(a: Args) -> Result<i32, DemoError> {
    if !a.window.is_finite() || a.window <= 0.0 {
        return Err(DemoError::Usage(format!(
            "--window {}: not a duration",
            a.window
        )));
    }
    let port = port_from(a.port)?;
    let tally: Shared = Arc::new(Mutex::new(Tally::new(
        Duration::from_secs_f64(a.window),
        Instant::now(),
    )));
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/json", get(json))
        .route("/report", post(report))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(tally);
    serve("webui", port, app).await
}

fn lock(t: &Shared) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

async fn report(State(t): State<Shared>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<Report>(&body) {
        Ok(r) => {
            lock(&t).add(r.worker, r.hashes, Instant::now());
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("expected {{\"worker\": NAME, \"hashes\": N}}: {e}\n"),
        )
            .into_response(),
    }
}

async fn json(State(t): State<Shared>) -> Response {
    let (hashes, rate, workers) = lock(&t).summary(Instant::now());
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({
            "hashes": hashes,
            "rate": (rate * 100.0).round() / 100.0,
            "workers": workers,
        })),
    )
        .into_response()
}

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>dockercoins</title>
<style>body{font-family:sans-serif;margin:3em}#rate{font-size:4em}</style></head>
<body><h1>dockercoins</h1>
<p><span id="rate">…</span> hashes/second</p>
<p><span id="hashes">0</span> hashes mined by <span id="workers">0</span> workers</p>
<script>
async function refresh() {
  try {
    const s = await (await fetch("json")).json();
    document.getElementById("rate").textContent = s.rate.toFixed(1);
    document.getElementById("hashes").textContent = s.hashes;
    document.getElementById("workers").textContent = s.workers;
  } catch (e) {}
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_covers_the_window_or_the_time_since_start() {
        let t0 = Instant::now();
        let mut t = Tally::new(Duration::from_secs(10), t0);
        t.add("a".into(), 10, t0 + Duration::from_secs(1));
        t.add("b".into(), 10, t0 + Duration::from_secs(2));
        // Two seconds old: 20 hashes over 2 s.
        assert_eq!(t.summary(t0 + Duration::from_secs(2)), (20, 10.0, 2));
        // At 12 s, a's report (1 s) left the window; b's (2 s) is still in it.
        assert_eq!(t.summary(t0 + Duration::from_secs(12)), (20, 1.0, 1));
        assert_eq!(t.summary(t0 + Duration::from_secs(30)), (20, 0.0, 0));
    }
}
