//! `cargo run -p fleet-tests --bin soak [-- --minutes 60]`: one 4-person room recorded for an hour.
//! A recorder-only node captures the devroom room (4 × VP8 1280x720 30 fps + Opus, with A/V markers)
//! while a transcoder node transcodes it progressively (the product's defaults). Every 30 s the
//! recorder's RSS and CPU are sampled; flat means the last ten minutes' medians are within 10 % of
//! those of minutes 2-12 (after warm-up). After the stop: the time to the MP4, the MP4's duration
//! against the recorded span, and A/V sync of every participant over the last minute. Written to
//! `target/bench/soak.json` with the machine it ran on. `SOAK_KEEP=1` keeps the run's directory.

use fleet_tests::api::Api;
use fleet_tests::bench::{cpu_seconds, machine, median, status_kb};
use fleet_tests::capture_bench::SCENARIO;
use fleet_tests::devroom::Devroom;
use fleet_tests::procs::free_port;
use fleet_tests::{Fleet, Nats, StorageSetup};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const SAMPLE_EVERY_S: u64 = 30;

/// Median of the samples whose minute lies in `from..to`.
fn median_between(samples: &[(f64, f64)], from_min: f64, to_min: f64) -> Option<f64> {
    let mut values: Vec<f64> = samples.iter().filter(|(minute, _)| (from_min..to_min).contains(minute)).map(|(_, v)| *v).collect();
    (!values.is_empty()).then(|| median(&mut values))
}

/// Early and late medians and the growth between them, in percent.
fn flatness(samples: &[(f64, f64)], minutes: f64) -> Value {
    let early = median_between(samples, 2.0, 12.0_f64.min(minutes / 2.0));
    let late = median_between(samples, (minutes - 10.0).max(minutes / 2.0), minutes + 1.0);
    let growth = early.zip(late).map(|(early, late)| (late - early) / early * 100.0);
    json!({ "early_median": early, "late_median": late, "growth_percent": growth, "flat": growth.map(|g| g <= 10.0) })
}

#[tokio::main]
async fn main() {
    let minutes: u64 = fleet_tests::bench::single_option("minutes", 60);
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let root = dir.path().join("storage");
    let mut fleet = Fleet::new(dir.path(), &nats, StorageSetup::Local(root.clone()));
    let devroom = Devroom::start(dir.path(), SCENARIO);
    fleet.recorder_extra = devroom.recorder_toml(4 * 3600);
    let port = free_port();
    let _controller = fleet.controller(port);
    let recorder = fleet.recorder("soak-rec", "recorder-only", 1);
    let _transcoder = fleet.transcoder("soak-tx");
    let api = Api::new(port);
    let id = api.start(r#"{"room":"bench-four","max_duration_s":21600}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(60)).await;

    let started = Instant::now();
    let (mut rss_mb, mut cpu_percent) = (Vec::new(), Vec::new());
    let mut last_cpu = cpu_seconds(recorder.pid());
    while started.elapsed() < Duration::from_secs(minutes * 60) {
        tokio::time::sleep(Duration::from_secs(SAMPLE_EVERY_S)).await;
        let minute = started.elapsed().as_secs_f64() / 60.0;
        let cpu = cpu_seconds(recorder.pid());
        rss_mb.push((minute, status_kb(recorder.pid(), "VmRSS:") as f64 / 1024.0));
        cpu_percent.push((minute, (cpu - last_cpu) / SAMPLE_EVERY_S as f64 * 100.0));
        last_cpu = cpu;
        eprintln!("[soak] {minute:.1} min: recorder {:.0} MB, {:.1} % CPU", rss_mb.last().unwrap().1, cpu_percent.last().unwrap().1);
    }
    let stopped = Instant::now();
    assert_eq!(api.stop(&id).await.status, 202);
    let record = api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(minutes * 60 * 2 + 300)).await;
    let stop_to_complete_s = stopped.elapsed().as_secs_f64();
    drop(devroom);

    let mut result = json!({
        "machine": machine(),
        "what": "one 4-person devroom room (VP8 1280x720 30 fps + Opus each) recorded by a recorder-only node, progressive transcode on one \
                 transcoder node (the product's defaults), local storage; recorder sampled every 30 s",
        "minutes": minutes,
        "final_state": record["state"],
        "stop_to_complete_s": stop_to_complete_s,
        "recorder_rss_mb": flatness(&rss_mb, minutes as f64),
        "recorder_cpu_percent": flatness(&cpu_percent, minutes as f64),
        "samples": rss_mb.iter().zip(&cpu_percent).map(|((m, rss), (_, cpu))| json!([m, rss, cpu])).collect::<Vec<_>>(),
    });
    if record["state"] == "complete" {
        let session = &record["sessions"][0];
        let recorded_s = (session["ended_at_ms"].as_u64().unwrap() - session["started_at_ms"].as_u64().unwrap()) as f64 / 1000.0;
        let path = root.join(format!("recordings/{id}/{id}.mp4"));
        let probe = fleet_tests::media::ffprobe(&path);
        let duration_s: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
        // Tiles of the 2x2 grid follow the participants' order: p1, p2, p3, p4.
        let tiles = ["640:360:0:0", "640:360:640:0", "640:360:0:360", "640:360:640:360"].map(String::from);
        let report = fleet_tests::sync::check_paired(&path, &tiles, 30.0, duration_s - 61.0, duration_s - 1.0);
        let mut sync = serde_json::to_value(&report).unwrap();
        // Each marker's offset with its place in the MP4, so a jump can be traced to its chunk.
        sync["offsets_ms"] =
            json!(report.marker_video_s.iter().zip(&report.offsets_ms).map(|(t, o)| [(t * 1000.0).round() / 1000.0, o.round()]).collect::<Vec<_>>());
        sync.as_object_mut().unwrap().remove("marker_video_s");
        result["recorded_s"] = json!(recorded_s);
        result["mp4_duration_s"] = json!(duration_s);
        result["duration_error_ms"] = json!((duration_s - recorded_s) * 1000.0);
        result["sync_last_minute"] = sync;
    }
    // SOAK_KEEP: the run's directory (storage with raw segments, chunks and the MP4, logs) stays, for a look afterwards.
    if std::env::var_os("SOAK_KEEP").is_some() {
        eprintln!("[soak] kept {}", dir.keep().display());
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("soak.json");
    std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    let mut shown = result.clone();
    shown["samples"] = json!(rss_mb.len());
    println!("{}", serde_json::to_string_pretty(&shown).unwrap());
    eprintln!("[soak] written to {}", path.display());
}
