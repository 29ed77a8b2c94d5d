//! Capture benchmarks (`deploy/dev.sh bench`), written to `target/bench/capture.json` with the machine
//! they ran on:
//! - Recorder CPU (seconds of CPU per wall second, one core = 1.0) and peak RSS while it records a
//!   4-participant 720p30 devroom room (VP8 ~1.5 Mbps + Opus each) for N seconds. Devroom runs in its own
//!   process; only the recorder process is measured. The recorder runs recorder-only (no transcode).
//! - API start → first media bytes written (the job turns `recording` when the first segment file is
//!   opened with media in it): p50/p99 over N recordings of a 1-participant room.

use fleet_tests::api::Api;
use fleet_tests::bench::{machine, status_kb};
use fleet_tests::capture_bench::{SCENARIO, options, record_four, start_to_first_media};
use fleet_tests::devroom::Devroom;
use fleet_tests::procs::free_port;
use fleet_tests::{Fleet, Nats, StorageSetup};
use serde_json::json;
use std::path::Path;

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

    eprintln!("[bench] API start -> first media bytes over {} recordings", options.jobs);
    let latency = start_to_first_media(&api, &nats, &options).await;
    eprintln!("[bench] recording the 4-participant room for {} s", options.record_seconds);
    let mut record = record_four(&api, &recorder, &root, &options).await;
    record["room"] = json!("4 participants, each VP8 1280x720 30 fps, 1.5 Mbps target + Opus 48 kHz (devroom, pre-encoded)");
    record["recorder_lifetime_peak_rss_mb"] = json!(status_kb(recorder.pid(), "VmHWM:") as f64 / 1024.0);
    record["targets"] = json!({ "cores": 0.05, "rss_mb": 60 });
    record["note"] = json!("recorder-only node; devroom and the controller run in their own processes and are not counted");

    let result = json!({
        "machine": machine(),
        "api_start_to_first_media_ms": latency,
        "record_four_participants": record,
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("capture.json");
    std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    eprintln!("[bench] written to {}", path.display());
    drop(devroom);
}
