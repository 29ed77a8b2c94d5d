//! What the capture benchmarks share: devroom's rooms, the command line, and the two measurements (API
//! start → first media, and a recorder's cost while it records the four-publisher room).

use crate::Nats;
use crate::api::Api;
use crate::bench::{cpu_seconds, dir_size, median, status_kb, summary};
use crate::procs::Proc;
use futures::StreamExt;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// devroom's rooms: four publishers (`bench-four`), and one (`bench-latency`) for the start latency.
pub const SCENARIO: &str = r#"
[[rooms]]
name = "bench-four"
[[rooms.participants]]
identity = "p1"
[[rooms.participants]]
identity = "p2"
[[rooms.participants]]
identity = "p3"
[[rooms.participants]]
identity = "p4"

[[rooms]]
name = "bench-latency"
[[rooms.participants]]
identity = "solo"
"#;

pub struct Options {
    pub jobs: usize,
    pub record_seconds: u64,
}

/// `[--jobs N] [--record-seconds S]` (20 and 60 by default).
pub fn options() -> Options {
    let mut o = Options { jobs: 20, record_seconds: 60 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--jobs", Some(v)) => o.jobs = v,
            ("--record-seconds", Some(v)) => o.record_seconds = v as u64,
            _ => panic!("usage: [--jobs N] [--record-seconds S]"),
        }
    }
    o
}

/// API start → first media bytes over `options.jobs` recordings of `bench-latency`.
pub async fn start_to_first_media(api: &Api, nats: &Nats, options: &Options) -> Value {
    let events = async_nats::connect(nats.url()).await.unwrap();
    let mut states = events.subscribe("fleet.events.>").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut latencies = Vec::new();
    for _ in 0..options.jobs {
        let started = Instant::now();
        let id = api.start(r#"{"room":"bench-latency"}"#).await;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), states.next()).await.expect("recording event").unwrap();
            let event: Value = serde_json::from_slice(&message.payload).unwrap();
            if event["job_id"] == id.as_str() && event["state"] == "recording" {
                break;
            }
        }
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        api.stop(&id).await;
        api.wait_for_state(&id, &["finalizing", "complete"], Duration::from_secs(30)).await;
    }
    let latency = summary(&mut latencies);
    eprintln!("[bench] start -> first media ms: {latency}");
    latency
}

/// The recorder's cost while it records `bench-four` for `options.record_seconds`.
pub async fn record_four(api: &Api, recorder: &Proc, root: &Path, options: &Options) -> Value {
    let pid = recorder.pid();
    let id = api.start(r#"{"room":"bench-four"}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = cpu_seconds(pid);
    let wall = Instant::now();
    let (mut peak_rss_kb, mut rss_samples) = (0, Vec::new());
    while wall.elapsed() < Duration::from_secs(options.record_seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = status_kb(pid, "VmRSS:");
        peak_rss_kb = peak_rss_kb.max(rss);
        rss_samples.push(rss as f64 / 1024.0);
    }
    let (cpu, wall_s) = (cpu_seconds(pid) - cpu_before, wall.elapsed().as_secs_f64());
    api.stop(&id).await;
    let record = api.wait_for_state(&id, &["finalizing", "complete"], Duration::from_secs(60)).await;
    let session = &record["sessions"][0];
    let session_s = (session["ended_at_ms"].as_u64().unwrap_or(0).saturating_sub(session["started_at_ms"].as_u64().unwrap_or(0))) as f64 / 1000.0;
    let raw_bytes = dir_size(&root.join(format!("recordings/{id}/raw")));
    eprintln!(
        "[bench] recorded {wall_s:.0} s: {:.3} cores, peak RSS {} MB, {:.0} kB/s stored",
        cpu / wall_s,
        peak_rss_kb / 1024,
        raw_bytes as f64 / session_s / 1000.0
    );
    json!({
        "measured_wall_s": wall_s,
        "recorder_cpu_s": cpu,
        "recorder_cores": cpu / wall_s,
        "recorder_peak_rss_mb": peak_rss_kb as f64 / 1024.0,
        "recorder_median_rss_mb": median(&mut rss_samples),
        // Everything the session stored (segments, all tracks), per second of the session.
        "stored_bytes_per_s": raw_bytes as f64 / session_s.max(1.0),
        "segments_written": session["segments"].as_u64().unwrap_or(0),
    })
}
