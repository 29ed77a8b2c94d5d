//! `cargo run -p fleet-tests --bin rooms_per_node [-- --rooms 5,10,20,30 --seconds 30]`: how many rooms
//! one recorder node records at once. For each N, N devroom rooms of 4 publishers (VP8 1280x720 30 fps +
//! Opus each) are asked to record on one recorder-only node with N slots and the default admission
//! (no new room above 90 % machine CPU). Measured over `seconds` of recording: rooms admitted, recorder
//! CPU and RSS, devroom's CPU beside it (the publishers, on the same 2 cores), the spool backlog (what
//! waits for upload), and per video track the frames stored per second of media (30 when nothing is
//! lost). Written to `target/bench/rooms-per-node.json` with the machine it ran on; with `--camera-like`
//! every camera sends a noisy picture at the full 1.5 Mb/s a 720p camera does, to
//! `target/bench/rooms-per-node-camera.json`.

use fleet_tests::api::Api;
use fleet_tests::bench::{cpu_seconds, machine, median, status_kb};
use fleet_tests::devroom::Devroom;
use fleet_tests::procs::free_port;
use fleet_tests::{API_KEY, Fleet, Nats, StorageSetup};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

struct Options {
    rooms: Vec<usize>,
    seconds: u64,
    /// Cameras at their full 1.5 Mb/s (devroom's `camera_like`), not flat colours.
    camera_like: bool,
}

fn options() -> Options {
    let mut options = Options { rooms: vec![5, 10, 20, 30], seconds: 30, camera_like: false };
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--camera-like") {
        args.remove(at);
        options.camera_like = true;
    }
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--rooms", Some(list)) => options.rooms = list.split(',').map(|n| n.trim().parse().expect("room counts")).collect(),
            ("--seconds", Some(s)) => options.seconds = s.parse().expect("seconds"),
            _ => panic!("usage: [--rooms 5,10,20,30] [--seconds 30] [--camera-like]"),
        }
    }
    options
}

fn scenario(rooms: usize, camera_like: bool) -> String {
    let mut toml = format!("camera_like = {camera_like}\n");
    for room in 0..rooms {
        toml.push_str(&format!("[[rooms]]\nname = \"room-{room}\"\n"));
        for p in 1..=4 {
            toml.push_str(&format!("[[rooms.participants]]\nidentity = \"p{p}\"\n"));
        }
    }
    toml
}

/// For each video track of the job: frames per second of media stored (packets over the segments'
/// durations, by `ffprobe`) and kilobits per second stored (the segments' bytes over those durations).
fn stored_video(root: &Path, job: &str) -> Vec<(f64, f64)> {
    let mut per_track = Vec::new();
    let raw = root.join(format!("recordings/{job}/raw"));
    for session in std::fs::read_dir(&raw).into_iter().flatten().flatten() {
        for participant in std::fs::read_dir(session.path()).into_iter().flatten().flatten() {
            for track in std::fs::read_dir(participant.path()).into_iter().flatten().flatten() {
                let (mut packets, mut seconds, mut bytes, mut video) = (0u64, 0f64, 0u64, false);
                for segment in std::fs::read_dir(track.path()).into_iter().flatten().flatten() {
                    let out = std::process::Command::new("ffprobe")
                        .args([
                            "-v",
                            "error",
                            "-select_streams",
                            "v",
                            "-count_packets",
                            "-show_entries",
                            "stream=nb_read_packets:format=duration",
                            "-of",
                            "csv=p=0",
                        ])
                        .arg(segment.path())
                        .output()
                        .unwrap();
                    let text = String::from_utf8_lossy(&out.stdout);
                    let mut lines = text.lines().filter(|l| !l.is_empty());
                    if let (Some(count), Some(duration)) = (lines.next(), lines.next())
                        && let (Ok(count), Ok(duration)) = (count.trim().trim_end_matches(',').parse::<u64>(), duration.trim().parse::<f64>())
                    {
                        video = true;
                        bytes += segment.metadata().map(|m| m.len()).unwrap_or(0);
                        packets += count;
                        seconds += duration;
                    }
                }
                if video && seconds > 0.0 {
                    per_track.push((packets as f64 / seconds, bytes as f64 * 8.0 / 1000.0 / seconds));
                }
            }
        }
    }
    per_track
}

async fn one_step(rooms: usize, seconds: u64, camera_like: bool) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let root = dir.path().join("storage");
    let mut fleet = Fleet::new(dir.path(), &nats, StorageSetup::Local(root.clone()));
    let devroom = Devroom::start(dir.path(), &scenario(rooms, camera_like));
    fleet.recorder_extra = devroom.recorder_toml(3600);
    // The product's admission: take a room only below 90 % machine CPU (the harness sets 1.0).
    fleet.recorder_max_cpu_load = 0.9;
    let port = free_port();
    let _controller = fleet.controller(port);
    let recorder = fleet.recorder("node", "recorder-only", rooms as u32);
    let api = Api::new(port);
    let mut jobs = Vec::new();
    for room in 0..rooms {
        jobs.push(api.start(&format!(r#"{{"room":"room-{room}"}}"#)).await);
        // As rooms arrive in a real fleet, not all in one instant: the CPU reading follows each.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (recorder_pid, devroom_pid) = (recorder.pid(), devroom.proc.pid());
    let (cpu_recorder, cpu_devroom, wall) = (cpu_seconds(recorder_pid), cpu_seconds(devroom_pid), Instant::now());
    let (mut rss, mut spool_mb) = (Vec::new(), Vec::new());
    while wall.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push(status_kb(recorder_pid, "VmRSS:") as f64 / 1024.0);
        let nodes = api.send("GET", "/v1/nodes", Some(API_KEY), None).await;
        let spool = nodes.body["nodes"].as_array().and_then(|n| n.first()).and_then(|n| n["spool_bytes"].as_u64()).unwrap_or(0);
        spool_mb.push(spool as f64 / 1e6);
    }
    let wall_s = wall.elapsed().as_secs_f64();
    let recorder_cores = (cpu_seconds(recorder_pid) - cpu_recorder) / wall_s;
    let devroom_cores = (cpu_seconds(devroom_pid) - cpu_devroom) / wall_s;
    let mut admitted = Vec::new();
    for job in &jobs {
        let record = api.get(job).await;
        if record["state"] == "recording" {
            admitted.push(job.clone());
        }
    }
    for job in &jobs {
        api.stop(job).await;
    }
    for job in &admitted {
        api.wait_for_state(job, &["finalizing"], Duration::from_secs(120)).await;
    }
    let stored: Vec<(f64, f64)> = admitted.iter().flat_map(|job| stored_video(&root, job)).collect();
    let mut fps: Vec<f64> = stored.iter().map(|(fps, _)| *fps).collect();
    let mut kbps: Vec<f64> = stored.iter().map(|(_, kbps)| *kbps).collect();
    let median_kbps = if kbps.is_empty() { 0.0 } else { median(&mut kbps) };
    let min_fps = fps.iter().copied().fold(f64::INFINITY, f64::min);
    let tracks = fps.len();
    let median_fps = if fps.is_empty() { 0.0 } else { median(&mut fps) };
    let max_spool = spool_mb.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "[bench] {rooms} rooms asked, {} admitted: recorder {recorder_cores:.2} cores, median RSS {:.0} MB; devroom {devroom_cores:.2} cores; \
         video fps stored min {min_fps:.2} median {median_fps:.2} over {tracks} tracks ({median_kbps:.0} kb/s median); spool up to {max_spool:.1} MB",
        admitted.len(),
        median(&mut rss.clone())
    );
    drop(devroom);
    json!({
        "rooms_asked": rooms,
        "rooms_admitted": admitted.len(),
        "measured_s": wall_s,
        "recorder_cores": recorder_cores,
        "recorder_median_rss_mb": median(&mut rss),
        "devroom_cores_beside": devroom_cores,
        "video_tracks": tracks,
        "stored_video_fps_min": min_fps,
        "stored_video_fps_median": median_fps,
        "stored_video_kbps_median": median_kbps,
        "spool_backlog_max_mb": max_spool,
    })
}

#[tokio::main]
async fn main() {
    let options = options();
    let mut steps = Vec::new();
    for &rooms in &options.rooms {
        steps.push(one_step(rooms, options.seconds, options.camera_like).await);
    }
    let result = json!({
        "machine": machine(),
        "what": format!("N rooms of 4 devroom publishers (VP8 1280x720 30 fps + Opus; {}) \
                 recorded at once by one recorder-only node with the default admission (90 % CPU); devroom runs on the same machine",
                 if options.camera_like { "camera-like: noisy pictures at the clips' full 1.5 Mb/s" } else { "devroom's flat-colour clips, about 0.2 Mb/s, far below camera bitrates" }),
        "reference": "plugNmeet's browser recorder: 2-3 rooms per 2 vCPU; target here: at least 30 rooms on this 2-core machine, none losing a frame",
        "steps": steps,
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let name = if options.camera_like { "rooms-per-node-camera.json" } else { "rooms-per-node.json" };
    std::fs::write(out.join(name), serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
}
