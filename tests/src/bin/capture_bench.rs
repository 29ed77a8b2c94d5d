//! Capture benchmarks (`deploy/dev.sh bench`), written to `target/bench/capture.json` with the machine
//! they ran on:
//! - Recorder CPU (seconds of CPU per wall second, one core = 1.0) and peak RSS while it records a
//!   4-participant 720p30 devroom room (VP8 ~1.5 Mbps + Opus each) for N seconds. Devroom runs in its own
//!   process; only the recorder process is measured. The recorder runs recorder-only (no transcode).
//! - API start → first media bytes written (the job turns `recording` when the first segment file is
//!   opened with media in it): p50/p99 over N recordings of a 1-participant room.

use fleet_tests::api::Api;
use fleet_tests::bench::{cpu_seconds, dir_size, machine, median, status_kb, summary};
use fleet_tests::devroom::Devroom;
use fleet_tests::procs::free_port;
use fleet_tests::{Fleet, Nats, StorageSetup};
use futures::StreamExt;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const SCENARIO: &str = r#"
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

struct Options {
    jobs: usize,
    record_seconds: u64,
}

fn options() -> Options {
    let mut o = Options { jobs: 20, record_seconds: 60 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--jobs", Some(v)) => o.jobs = v,
            ("--record-seconds", Some(v)) => o.record_seconds = v as u64,
            _ => panic!("usage: capture_bench [--jobs N] [--record-seconds S]"),
        }
    }
    o
}

#[tokio::main]
async fn main() {
    let options = options();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let root = dir.path().join("storage");
    let mut fleet = Fleet::new(dir.path(), &nats, StorageSetup::Local(root.clone()));
    let devroom = Devroom::start(dir.path(), SCENARIO);
    fleet.recorder_extra = devroom.recorder_toml(3600);
    let port = free_port();
    let _controller = fleet.controller(port);
    let recorder = fleet.recorder("bench-rec", "recorder-only", 4);
    let api = Api::new(port);
    let events = async_nats::connect(nats.url()).await.unwrap();
    let mut states = events.subscribe("fleet.events.>").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    eprintln!("[bench] API start -> first media bytes over {} recordings", options.jobs);
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

    eprintln!("[bench] recording the 4-participant room for {} s", options.record_seconds);
    let pid = recorder.pid();
    let id = api.start(r#"{"room":"bench-four"}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    // Settle: every track has started writing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = cpu_seconds(pid);
    let wall = Instant::now();
    let mut peak_rss_kb = 0;
    let mut rss_samples = Vec::new();
    while wall.elapsed() < Duration::from_secs(options.record_seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = status_kb(pid, "VmRSS:");
        peak_rss_kb = peak_rss_kb.max(rss);
        rss_samples.push(rss as f64 / 1024.0);
    }
    let cpu = cpu_seconds(pid) - cpu_before;
    let wall_s = wall.elapsed().as_secs_f64();
    api.stop(&id).await;
    let record = api.wait_for_state(&id, &["finalizing", "complete"], Duration::from_secs(60)).await;
    let segments: u64 = record["sessions"].as_array().unwrap().iter().map(|s| s["segments"].as_u64().unwrap_or(0)).sum();
    let raw = root.join(format!("recordings/{id}/raw"));
    let raw_bytes = dir_size(&raw);

    let result = json!({
        "machine": machine(),
        "api_start_to_first_media_ms": latency,
        "record_four_participants": {
            "room": "4 participants, each VP8 1280x720 30 fps ~1.5 Mbps + Opus 48 kHz (devroom, pre-encoded)",
            "measured_wall_s": wall_s,
            "recorder_cpu_s": cpu,
            "recorder_cores": cpu / wall_s,
            "recorder_peak_rss_mb": peak_rss_kb as f64 / 1024.0,
            "recorder_median_rss_mb": median(&mut rss_samples),
            "recorder_lifetime_peak_rss_mb": status_kb(pid, "VmHWM:") as f64 / 1024.0,
            "segments_written": segments,
            "raw_bytes": raw_bytes,
            "targets": { "cores": 0.05, "rss_mb": 60 },
            "note": "recorder-only node; devroom and the controller run in their own processes and are not counted",
        },
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("capture.json");
    std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    eprintln!("[bench] written to {}", path.display());
    drop(devroom);
}
