//! Backbone benchmarks (`deploy/dev.sh bench`), written to `target/bench/backbone.json` with the machine
//! they ran on:
//! - API start → job `recording`: p50/p99 over N jobs (timed from the state event on NATS).
//! - Transcode of a 60 s, 2-participant test recording: times real time, against an ffmpeg filter graph
//!   doing the same composition on the same segments in the same run (median of repeats).

use fleet_pipelines::segment_reader::{TrackInput, session_tracks};
use fleet_pipelines::transcode::{TranscodeSpec, run};
use fleet_tests::api::Api;
use fleet_tests::bench::{machine, median, summary};
use fleet_tests::procs::free_port;
use fleet_tests::{Fleet, Nats, StorageSetup};
use futures::StreamExt;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Options {
    jobs: usize,
    record_seconds: u64,
    repeats: usize,
}

fn options() -> Options {
    let mut o = Options { jobs: 50, record_seconds: 60, repeats: 3 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--jobs", Some(v)) => o.jobs = v,
            ("--record-seconds", Some(v)) => o.record_seconds = v as u64,
            ("--repeats", Some(v)) => o.repeats = v,
            _ => panic!("usage: bench [--jobs N] [--record-seconds S] [--repeats R]"),
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

    eprintln!("[bench] recording {} s with 2 participants", options.record_seconds);
    let id = api.start(r#"{"room":"bench","source":{"type":"test","participants":2}}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(options.record_seconds)).await;
    api.stop(&id).await;
    let record = api.wait_for_state(&id, &["finalizing"], Duration::from_secs(60)).await;
    let session = &record["sessions"][0];
    let recorded_ns = (session["ended_at_ms"].as_u64().unwrap() - session["started_at_ms"].as_u64().unwrap()) * 1_000_000;
    let raw = root.join(format!("recordings/{id}/raw/s1"));
    let tracks = session_tracks(&raw).unwrap();

    fleet_pipelines::init().unwrap();
    let work = dir.path().join("transcode");
    std::fs::create_dir_all(&work).unwrap();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..options.repeats {
        let spec = TranscodeSpec::hd720(tracks.clone(), recorded_ns, "x264enc", work.join(format!("ours-{round}.mp4")));
        let started = Instant::now();
        run(&spec, |_| {}).unwrap();
        ours.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        ffmpeg_same_job(&tracks, &work, &work.join(format!("ffmpeg-{round}.mp4")));
        theirs.push(started.elapsed().as_secs_f64());
        eprintln!("[bench] round {round}: ours {:.2} s, ffmpeg {:.2} s", ours[round], theirs[round]);
    }
    let recorded_s = recorded_ns as f64 / 1e9;
    let ours_median = median(&mut ours);
    let theirs_median = median(&mut theirs);
    let result = json!({
        "machine": machine(),
        "api_start_to_recording_ms": latency,
        "transcode": {
            "recording_seconds": recorded_s,
            "participants": 2,
            "output": "1280x720 30 fps H.264 High 3000 kbps (x264enc veryfast) + AAC-LC 128 kbps, faststart MP4",
            "repeats": options.repeats,
            "fleet_wall_s": ours,
            "ffmpeg_wall_s": theirs,
            "fleet_median_s": ours_median,
            "ffmpeg_median_s": theirs_median,
            "fleet_times_realtime": recorded_s / ours_median,
            "ffmpeg_times_realtime": recorded_s / theirs_median,
            "fleet_speed_vs_ffmpeg": theirs_median / ours_median,
            "ffmpeg_command": "concat demuxer per track; scale+pad to 640x720 tiles, hstack, fps=30; amix; libx264 veryfast 3000k High; aac 128k; +faststart",
        },
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("backbone.json");
    std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    eprintln!("[bench] written to {}", path.display());
}

/// The same composition with ffmpeg: two 640x720 letterboxed tiles side by side, both audios mixed.
fn ffmpeg_same_job(tracks: &[TrackInput], work: &Path, output: &Path) {
    let list = |track: &TrackInput| {
        let path = work.join(format!("{}.txt", track.name.replace('/', "-")));
        let body: String = track.segments.iter().map(|s| format!("file '{}'\n", s.path.display())).collect();
        std::fs::write(&path, body).unwrap();
        path
    };
    let videos: Vec<&TrackInput> = tracks.iter().filter(|t| t.name.ends_with("camera")).collect();
    let audios: Vec<&TrackInput> = tracks.iter().filter(|t| t.name.ends_with("microphone")).collect();
    let mut command = Command::new("ffmpeg");
    command.args(["-y", "-v", "error"]);
    for track in videos.iter().chain(audios.iter()) {
        command.args(["-f", "concat", "-safe", "0", "-i"]).arg(list(track));
    }
    let tile = "scale=640:720:force_original_aspect_ratio=decrease,pad=640:720:(ow-iw)/2:(oh-ih)/2";
    let filter = format!(
        "[0:v]{tile}[a];[1:v]{tile}[b];[a][b]hstack=inputs=2,fps=30,format=yuv420p[v];[2:a][3:a]amix=inputs=2[au]"
    );
    command.args(["-filter_complex", &filter, "-map", "[v]", "-map", "[au]"]);
    command.args(["-c:v", "libx264", "-preset", "veryfast", "-b:v", "3000k", "-profile:v", "high"]);
    command.args(["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2", "-movflags", "+faststart"]).arg(output);
    let status = command.status().unwrap();
    assert!(status.success(), "ffmpeg failed");
}
