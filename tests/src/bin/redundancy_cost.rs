//! `cargo run -p fleet-tests --bin redundancy_cost [-- --seconds 60]`: what `redundancy: 2` costs. One
//! 4-person devroom room (VP8 1280x720 30 fps + Opus each) is recorded for `seconds` by two
//! recorder-only nodes with redundancy 1, then 2, in the same run; one transcoder makes the MP4.
//! Measured: the recorders' CPU seconds, the raw media stored, and the transcode (stop -> complete).
//! Written to `target/bench/redundancy-cost.json` with the machine it ran on.

use fleet_tests::api::Api;
use fleet_tests::bench::{cpu_seconds, dir_size, machine};
use fleet_tests::capture_bench::SCENARIO;
use fleet_tests::devroom::Devroom;
use fleet_tests::procs::free_port;
use fleet_tests::{Fleet, Nats, StorageSetup};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn one_run(redundancy: u8, seconds: u64) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let root = dir.path().join("storage");
    let mut fleet = Fleet::new(dir.path(), &nats, StorageSetup::Local(root.clone()));
    let devroom = Devroom::start(dir.path(), SCENARIO);
    fleet.recorder_extra = devroom.recorder_toml(3600);
    let port = free_port();
    let _controller = fleet.controller(port);
    let recorders = [fleet.recorder("cost-rec-a", "recorder-only", 1), fleet.recorder("cost-rec-b", "recorder-only", 1)];
    let _transcoder = fleet.transcoder("cost-tx");
    let api = Api::new(port);
    let id = api.start(&format!(r#"{{"room":"bench-four","redundancy":{redundancy}}}"#)).await;
    let writing = |r: &Value| r["sessions"].as_array().is_some_and(|s| s.iter().filter(|s| s["writing"] == true).count() == redundancy as usize);
    fleet_tests::wait::until("captures writing", Duration::from_secs(60), || async {
        let record = api.get(&id).await;
        if writing(&record) { Ok(()) } else { Err(record.to_string()) }
    })
    .await;
    let cpu_before: f64 = recorders.iter().map(|r| cpu_seconds(r.pid())).sum();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let recorder_cpu_s = recorders.iter().map(|r| cpu_seconds(r.pid())).sum::<f64>() - cpu_before;
    let stopped = Instant::now();
    assert_eq!(api.stop(&id).await.status, 202);
    let record = api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(seconds * 4 + 120)).await;
    let stop_to_complete_s = stopped.elapsed().as_secs_f64();
    let raw_bytes = dir_size(&root.join(format!("recordings/{id}/raw")));
    eprintln!(
        "[bench] redundancy {redundancy}: recorders {recorder_cpu_s:.1} CPU s, raw {:.1} MB, stop -> {} in {stop_to_complete_s:.1} s",
        raw_bytes as f64 / 1e6,
        record["state"]
    );
    drop(devroom);
    json!({
        "redundancy": redundancy,
        "final_state": record["state"],
        "recorders_cpu_s": recorder_cpu_s,
        "recorders_cpu_percent_of_one_core": recorder_cpu_s / seconds as f64 * 100.0,
        "raw_stored_mb": raw_bytes as f64 / 1e6,
        "stop_to_complete_s": stop_to_complete_s,
        "mp4_duration_s": record["output"]["duration_s"],
    })
}

#[tokio::main]
async fn main() {
    let seconds: u64 = fleet_tests::bench::single_option("seconds", 60);
    let one = one_run(1, seconds).await;
    let two = one_run(2, seconds).await;
    let ratio = |field: &str| two[field].as_f64().unwrap_or(0.0) / one[field].as_f64().unwrap_or(f64::NAN);
    let result = json!({
        "machine": machine(),
        "what": format!("one 4-person devroom room (VP8 1280x720 30 fps + Opus each: flat-colour clips, about 0.2 Mbps of video each) captured for {seconds} s by two recorder-only nodes, \
                 redundancy 1 then 2 in the same run; one transcoder node; local storage"),
        "runs": [one, two],
        "redundancy_2_over_1": { "recorders_cpu": ratio("recorders_cpu_s"), "raw_stored": ratio("raw_stored_mb"), "stop_to_complete": ratio("stop_to_complete_s") },
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("redundancy-cost.json");
    std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    eprintln!("[bench] written to {}", path.display());
}
