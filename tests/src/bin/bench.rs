//! Backbone benchmarks (`deploy/dev.sh bench`), written to `target/bench/backbone.json` with the machine
//! they ran on:
//! - API start → job `recording`: p50/p99 over N jobs (timed from the state event on NATS).
//!
//! The transcode benchmark is `transcode_bench`, the capture benchmark `capture_bench`.

use fleet_tests::api::Api;
use fleet_tests::bench::{machine, summary};
use fleet_tests::procs::free_port;
use fleet_tests::{Fleet, Nats, StorageSetup};
use futures::StreamExt;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

struct Options {
    jobs: usize,
}

fn options() -> Options {
    let mut o = Options { jobs: 50 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--jobs", Some(v)) => o.jobs = v,
            _ => panic!("usage: bench [--jobs N]"),
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
    let fleet = Fleet::new(dir.path(), &nats, StorageSetup::Local(root.clone()));
    let port = free_port();
    let _controller = fleet.controller(port);
    // Recorder-only: no transcode competes with the latency measurement.
    let _recorder = fleet.recorder("bench-rec", "recorder-only", 4);
    let api = Api::new(port);
    let events = async_nats::connect(nats.url()).await.unwrap();
    let mut states = events.subscribe("fleet.events.>").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    eprintln!("[bench] API start -> recording over {} jobs", options.jobs);
    let mut latencies = Vec::new();
    for _ in 0..options.jobs {
        let started = Instant::now();
        let id = api.start(r#"{"room":"bench","source":{"type":"test","participants":1}}"#).await;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), states.next()).await.expect("recording event").unwrap();
            let event: Value = serde_json::from_slice(&message.payload).unwrap();
            if event["job_id"] == id.as_str() && event["state"] == "recording" {
                break;
            }
        }
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        api.stop(&id).await;
    }
    let latency = summary(&mut latencies);
    eprintln!("[bench] start->recording ms: {latency}");

    let result = json!({
        "machine": machine(),
        "api_start_to_recording_ms": latency,
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("backbone.json");
    std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    eprintln!("[bench] written to {}", path.display());
}
