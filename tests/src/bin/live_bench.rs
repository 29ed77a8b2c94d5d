//! Live streaming benchmark (`deploy/dev.sh bench`), written to `target/bench/live.json` with the machine:
//! - The recorder's CPU and RSS while it streams a 4-participant 720p30 devroom room (VP8 ~1.5 Mbps + Opus
//!   each) live to nginx-rtmp as 1280x720 30 fps H.264 (x264 zerolatency, veryfast, 3000 kbps) + AAC, for
//!   N seconds; a stream-only job, so the recorder also writes its raw segments (the capture bench measures
//!   that part alone). Beside it, in the same command: ffmpeg doing the same job (four looping 720p30 VP8 +
//!   Opus inputs decoded, tiled 2x2, mixed, encoded alike, pushed to the same server).
//! - Whether the stream keeps real time: 20 s pulled with ffmpeg, its frame count and how long it took.
//! - Glass-to-glass latency: devroom's publishers flash every whole second of their clips, which they pace
//!   from the room's opening; a pull timestamps each frame on arrival (wall clock) and the flashes' onsets
//!   in the top-left tile, less the room's opening, modulo 1 s, are the latency. It assumes the latency is
//!   under a second (the composite waits 300 ms; a latency of 1.2 s would read 0.2 s).

use fleet_tests::api::Api;
use fleet_tests::bench::{cpu_seconds, machine, median, status_kb, summary};
use fleet_tests::devroom::Devroom;
use fleet_tests::procs::{Proc, free_port};
use fleet_tests::rtmp::RtmpServer;
use fleet_tests::{Fleet, Nats, StorageSetup};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SCENARIO: &str = r#"
[[rooms]]
name = "live-four"
[[rooms.participants]]
identity = "p1"
[[rooms.participants]]
identity = "p2"
[[rooms.participants]]
identity = "p3"
[[rooms.participants]]
identity = "p4"

# Opened when the latency job's recorder joins; `late` joins 10 s later.
[[rooms]]
name = "live-latency"
[[rooms.participants]]
identity = "solo"
[[rooms.participants]]
identity = "late"
join_at_s = 10
"#;

/// When `late` joins `live-latency`, after the room opened.
const LATE_JOIN_MS: f64 = 10_000.0;

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args().skip_while(|a| a != "--seconds").nth(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    // With FLEET_KEEP_TEST_DIRS the folder (logs) outlives the run, a failed one too.
    let temp = tempfile::tempdir().unwrap();
    let (_cleanup, dir) = match std::env::var_os("FLEET_KEEP_TEST_DIRS") {
        Some(_) => (None, temp.keep()),
        None => {
            let path = temp.path().to_path_buf();
            (Some(temp), path)
        }
    };
    let nats = Nats::start(dir.as_path());
    let mut fleet = Fleet::new(dir.as_path(), &nats, StorageSetup::Local(dir.as_path().join("storage")));
    let devroom = Devroom::start(dir.as_path(), SCENARIO);
    let nginx = RtmpServer::start(dir.as_path());
    fleet.recorder_extra = devroom.recorder_toml(3600);
    let port = free_port();
    let _controller = fleet.controller(port);
    let recorder = fleet.recorder("bench-live", "recorder-only", 2);
    let api = Api::new(port);

    let url = nginx.url("live", "bench");
    let id = api.start(&format!(r#"{{"room":"live-four","outputs":{{"file":false,"rtmp":["{url}"]}}}}"#)).await;
    wait_live(&api, &id).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!("[bench] streaming the 4-participant room for {seconds} s");
    let fleet_cost = measure(recorder.pid(), seconds).await;
    let realtime = pull_realtime(&url, dir.as_path());
    let record = api.get(&id).await;
    api.stop(&id).await;
    api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(60)).await;
    let latency = glass_to_glass(&api, &nginx, &devroom, dir.as_path()).await;

    eprintln!("[bench] ffmpeg doing the same job for {seconds} s");
    let baseline = ffmpeg_baseline(dir.as_path(), &nginx.url("live", "baseline"), seconds).await;
    let ratio = fleet_cost["cores"].as_f64().unwrap() / baseline["cores"].as_f64().unwrap().max(1e-9);
    let report = json!({
        "machine": machine(),
        "room": "4 participants, each VP8 1280x720 30 fps ~1.5 Mbps + Opus (devroom, pre-encoded)",
        "stream": "1280x720 30 fps H.264 (x264enc zerolatency veryfast 3000 kbps) + AAC 128 kbps to nginx-rtmp",
        "recorder": fleet_cost,
        "ffmpeg_same_job": baseline,
        "recorder_to_ffmpeg_cpu_ratio": ratio,
        "realtime_pull": realtime,
        "glass_to_glass_ms": latency,
        "stream_record": record["streams"][0],
        "note": "recorder-only node running a stream-only job (it also writes raw segments: ~0.09 cores in the capture bench); devroom, nginx and the controller are separate processes, not counted",
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/live.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    eprintln!("[bench] written to {}", out.display());
}

/// Until the job's first stream is live.
async fn wait_live(api: &Api, id: &str) {
    fleet_tests::wait::until(&format!("{id}'s stream live"), Duration::from_secs(60), || async {
        let record = api.get(id).await;
        if record["streams"][0]["state"] == "live" { Ok(()) } else { Err(record["streams"].to_string()) }
    })
    .await;
}

/// CPU (cores) and RSS of `pid` over `seconds`.
async fn measure(pid: u32, seconds: u64) -> Value {
    let cpu_before = cpu_seconds(pid);
    let wall = Instant::now();
    let mut rss = Vec::new();
    while wall.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss.push(status_kb(pid, "VmRSS:") as f64 / 1024.0);
    }
    let cores = (cpu_seconds(pid) - cpu_before) / wall.elapsed().as_secs_f64();
    let peak = rss.iter().cloned().fold(0.0, f64::max);
    eprintln!("[bench] {cores:.3} cores, peak RSS {peak:.0} MB");
    json!({ "cores": cores, "peak_rss_mb": peak, "median_rss_mb": median(&mut rss), "measured_s": wall.elapsed().as_secs_f64() })
}

/// 20 s of the stream as a viewer pulls it: frames, and how long it took to arrive.
fn pull_realtime(url: &str, dir: &Path) -> Value {
    let out = dir.join("pulled.flv");
    let started = Instant::now();
    fleet_tests::rtmp::capture_stream(url, 20, &out).expect("pulled");
    let took = started.elapsed().as_secs_f64();
    let frames = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v", "-count_frames", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&out)
        .output()
        .unwrap();
    let frames: f64 = String::from_utf8_lossy(&frames.stdout).trim().parse().unwrap_or(0.0);
    eprintln!("[bench] pulled 20 s: {frames} frames in {took:.2} s");
    json!({ "seconds_pulled": 20, "frames": frames, "fps": frames / 20.0, "wall_s_to_arrive": took })
}

/// A stream of `live-latency` pulled with each frame stamped on arrival (wall clock): the flashes' onsets in
/// solo's tile, less the room's opening, modulo 1 s; and when `late`'s tile first shows, less its join.
async fn glass_to_glass(api: &Api, nginx: &RtmpServer, devroom: &Devroom, dir: &Path) -> Value {
    let url = nginx.url("live", "latency");
    let id = api.start(&format!(r#"{{"room":"live-latency","outputs":{{"file":false,"rtmp":["{url}"]}}}}"#)).await;
    wait_live(api, &id).await;
    let opened_ms = devroom.room_state("live-latency").await.expect("room open")["created_ms"].as_f64().unwrap();
    let (solo, right) = (dir.join("solo.txt"), dir.join("right.txt"));
    // Regions inside solo's tile both before `late` joins (full frame) and after (left half), and inside
    // the right half (solo's picture before, late's after). Clear of the name labels.
    let filter = format!(
        "split=2[a][b];[a]crop=200:120:220:300,signalstats,metadata=print:key=lavfi.signalstats.YAVG:file={}[x];\
         [b]crop=200:120:860:300,signalstats,metadata=print:key=lavfi.signalstats.YAVG:file={}[y];[x][y]hstack",
        solo.display(),
        right.display()
    );
    let pulled = Command::new("timeout")
        .args(["60", "ffmpeg", "-v", "error", "-fflags", "nobuffer", "-use_wallclock_as_timestamps", "1", "-i", &url, "-frames:v", "600", "-copyts"])
        .args(["-an", "-filter_complex", &filter, "-f", "null", "-"])
        .status()
        .unwrap();
    assert!(pulled.success(), "pulled the latency stream");
    api.stop(&id).await;
    let solo = luma_by_arrival(&std::fs::read_to_string(&solo).unwrap());
    let right = luma_by_arrival(&std::fs::read_to_string(&right).unwrap());
    let mut flashes: Vec<f64> =
        solo.windows(2).filter(|w| w[1].1 > 200.0 && w[0].1 < 150.0).map(|w| (w[1].0 - opened_ms).rem_euclid(1000.0)).collect();
    // Late's colour replaces solo's in one half (tiles go in track order): the first clear change that is
    // not a flash, in either region.
    let first_change = |frames: &[(f64, f64)]| {
        let mut before: Vec<f64> = frames.iter().take(30).map(|(_, y)| *y).filter(|y| *y < 200.0).collect();
        let baseline = median(&mut before);
        frames.iter().find(|(_, y)| *y < 200.0 && (y - baseline).abs() > 12.0).map(|(at, _)| at - opened_ms - LATE_JOIN_MS)
    };
    let shown = match (first_change(&solo), first_change(&right)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    eprintln!("[bench] flash onsets mod 1 s (ms): {flashes:?}; late's tile shown {shown:?} ms after the join");
    json!({
        "flash_onsets": flashes.len(),
        "flash_latency_mod_1s_ms": summary(&mut flashes),
        "join_to_tile_ms": shown,
        "method": "devroom paces each clip from the room's opening and flashes on its whole seconds; a pull stamps frames on arrival. Flash onset less opening, modulo 1 s, is the latency's fraction; late's join to its tile showing (includes subscribing to the new track) bounds the whole",
    })
}

/// `(arrival Unix ms, mean luma)` per frame of a `metadata=print` file (FLV's time base is the millisecond).
fn luma_by_arrival(text: &str) -> Vec<(f64, f64)> {
    let mut frames = Vec::new();
    let mut at = 0.0;
    for line in text.lines() {
        if let Some(pts) = line.split("pts:").nth(1) {
            at = pts.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(0.0);
        } else if let Some(y) = line.strip_prefix("lavfi.signalstats.YAVG=") {
            frames.push((at, y.trim().parse().unwrap_or(0.0)));
        }
    }
    frames
}

/// ffmpeg: four looping 720p30 VP8 + Opus inputs → 2x2 tiles + mix → x264 zerolatency + AAC → RTMP.
async fn ffmpeg_baseline(dir: &Path, url: &str, seconds: u64) -> Value {
    let input = dir.join("input.webm");
    let made = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
        ])
        .args(["-t", "10", "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1500k", "-c:a", "libopus"])
        .arg(&input)
        .status()
        .unwrap();
    assert!(made.success(), "ffmpeg made the input");
    let input = input.to_string_lossy().to_string();
    let mut args: Vec<String> = vec!["-v".into(), "error".into()];
    for _ in 0..4 {
        args.extend(["-re", "-stream_loop", "-1", "-i", &input].map(String::from));
    }
    let filter = "[0:v]scale=640:360[a];[1:v]scale=640:360[b];[2:v]scale=640:360[c];[3:v]scale=640:360[d];\
                  [a][b][c][d]xstack=inputs=4:layout=0_0|w0_0|0_h0|w0_h0[v];[0:a][1:a][2:a][3:a]amix=inputs=4[m]";
    args.extend(["-filter_complex", filter, "-map", "[v]", "-map", "[m]"].map(String::from));
    args.extend(
        ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-b:v", "3000k", "-g", "60", "-pix_fmt", "yuv420p"].map(String::from),
    );
    args.extend(["-c:a", "aac", "-b:a", "128k", "-f", "flv", url].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let ffmpeg = Proc::spawn("ffmpeg-baseline", Path::new("ffmpeg"), &refs, &[], dir);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cost = measure(ffmpeg.pid(), seconds).await;
    drop(ffmpeg);
    cost
}
