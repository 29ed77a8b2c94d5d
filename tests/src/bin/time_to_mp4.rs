//! `deploy/dev.sh bench-time-to-mp4 [--minutes 10,60] [--progressive on|off|both]`: how long users wait for the MP4 after a meeting
//! ends, with the progressive transcode on (chunks transcoded while the room records) and off (the
//! whole transcode after the stop), in the same run. A 4-participant 720p devroom room is recorded by
//! a recorder-only node for each length; one transcoder node (defaults: 10 s chunks, asked for every 2 s) makes the MP4.
//! Measured: the API's stop → the job `complete`, and how many chunks were done before the stop.
//! Written to `target/bench/time-to-mp4.json` with the machine it ran on.

use fleet_tests::api::Api;
use fleet_tests::bench::{cpu_seconds, machine};
use fleet_tests::capture_bench::SCENARIO;
use fleet_tests::devroom::Devroom;
use fleet_tests::procs::free_port;
use fleet_tests::{Fleet, Nats, StorageSetup};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `[--minutes 10,60] [--progressive on|off|both]`: the lengths, and which ways to transcode each.
fn options() -> (Vec<u64>, Vec<bool>) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut minutes, mut progressive) = (vec![10], vec![true, false]);
    for pair in args.chunks(2) {
        match pair {
            [flag, list] if flag == "--minutes" => minutes = list.split(',').map(|m| m.trim().parse().expect("minutes")).collect(),
            [flag, which] if flag == "--progressive" => {
                progressive = match which.as_str() {
                    "on" => vec![true],
                    "off" => vec![false],
                    "both" => vec![true, false],
                    _ => panic!("--progressive on|off|both"),
                }
            }
            _ => panic!("usage: [--minutes 10,60] [--progressive on|off|both]"),
        }
    }
    (minutes, progressive)
}

async fn one_run(minutes: u64, progressive: bool) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let root = dir.path().join("storage");
    let mut fleet = Fleet::new(dir.path(), &nats, StorageSetup::Local(root.clone()));
    let devroom = Devroom::start(dir.path(), SCENARIO);
    fleet.recorder_extra = devroom.recorder_toml(4 * 3600);
    // The product's defaults, but for the switch under test (and the harness's 2 s segments).
    if !progressive {
        fleet.recorder_settings = "progressive_interval_s = 0\n".into();
    }
    let port = free_port();
    let _controller = fleet.controller(port);
    let _recorder = fleet.recorder("bench-rec", "recorder-only", 1);
    let transcoder = fleet.transcoder("bench-tx");
    let api = Api::new(port);
    let id = api.start(r#"{"room":"bench-four","max_duration_s":21600}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(60)).await;
    let cpu_at_start = cpu_seconds(transcoder.pid());
    eprintln!("[bench] recording {minutes} min, progressive {}", if progressive { "on" } else { "off" });
    tokio::time::sleep(Duration::from_secs(minutes * 60)).await;
    let before_stop = api.get(&id).await;
    let done_before_stop = before_stop["chunks"]["done"].as_array().map_or(0, Vec::len);
    let stopped = Instant::now();
    assert_eq!(api.stop(&id).await.status, 202);
    // Polled until the end, noting when the join of the chunks began.
    let mut join_began_s = None;
    let deadline = stopped + Duration::from_secs(minutes * 60 * 3 + 300);
    let record = loop {
        let record = api.get(&id).await;
        if join_began_s.is_none() && record["chunks"]["joining"].is_array() {
            join_began_s = Some(stopped.elapsed().as_secs_f64());
        }
        if matches!(record["state"].as_str(), Some("complete" | "failed")) || Instant::now() > deadline {
            break record;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stop_to_complete_s = stopped.elapsed().as_secs_f64();
    let transcoder_cpu_s = cpu_seconds(transcoder.pid()) - cpu_at_start;
    let duration_s = record["output"]["duration_s"].as_f64();
    eprintln!("[bench] {minutes} min, progressive {progressive}: stop -> {} in {stop_to_complete_s:.1} s", record["state"]);
    drop(devroom);
    json!({
        "minutes": minutes,
        "progressive": progressive,
        "final_state": record["state"],
        "stop_to_complete_s": stop_to_complete_s,
        // The join (the chunks' video and audio laid end to end, published).
        "join_s": join_began_s.map(|began| stop_to_complete_s - began),
        "chunks": record["chunks"]["count"],
        "chunks_done_before_stop": done_before_stop,
        "mp4_duration_s": duration_s,
        "transcoder_cpu_s_from_start": transcoder_cpu_s,
    })
}

#[tokio::main]
async fn main() {
    let mut runs = Vec::new();
    let (lengths, ways) = options();
    for minutes in lengths {
        for &progressive in &ways {
            runs.push(one_run(minutes, progressive).await);
        }
    }
    let result = json!({
        "machine": machine(),
        "what": "API stop -> job complete for a recording of the given length: 4 participants VP8 1280x720 30 fps + Opus (devroom: flat-colour clips, about 0.2 Mbps of video each), \
                 recorder-only node, one transcoder node (x264 veryfast 720p), the product's defaults (10 s chunks, asked every 2 s), local storage; progressive on and off in the same run (unless --progressive says one)",
        "target": "MP4 complete within 15 s of the stop for a 60-minute recording",
        "runs": runs,
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("time-to-mp4.json");
    std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    eprintln!("[bench] written to {}", path.display());
}
