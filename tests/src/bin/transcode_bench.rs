//! Transcode benchmark (`deploy/dev.sh bench`), written to `target/bench/transcode.json` with the machine
//! it ran on. A 4-participant 720p30 devroom room is recorded through the fleet for N seconds; its raw
//! segments are then composited into a 2x2 720p30 grid with AAC audio, alternately by the fleet's
//! transcode pipeline (in a child process, as a transcoder node runs it) and by an ffmpeg filter graph
//! doing the same composition (xstack + amix + libx264 veryfast + aac). Reports medians of wall time,
//! times real time, the speed ratio, and each one's peak RSS.
//!
//! The fleet runs twice per round: with the default x264 preset (`veryfast`, as ffmpeg's) and with
//! `superfast` (`[transcoder] x264_speed_preset`). What the faster preset costs in quality is measured
//! apart, on camera-like content (the devroom clips are flat colours, which every preset encodes
//! perfectly): each preset encodes the same raw 720p grid with x264enc, scored by SSIM and PSNR.
//!
//! `transcode_bench --ours <raw session dir> <out.mp4> <duration s> <x264 preset>` is the child process.

use fleet_pipelines::segment_reader::{TrackInput, probe_caps, session_tracks};
use fleet_pipelines::transcode::{TranscodeSpec, run};
use fleet_tests::api::Api;
use fleet_tests::bench::{machine, median, run_measured};
use fleet_tests::devroom::Devroom;
use fleet_tests::procs::free_port;
use fleet_tests::{Fleet, Nats, StorageSetup};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

struct Options {
    record_seconds: u64,
    repeats: usize,
    /// Keep the recorded raw session here, for offline experiments.
    keep_raw: Option<PathBuf>,
}

fn options(args: &[String]) -> Options {
    let mut o = Options { record_seconds: 120, repeats: 3, keep_raw: None };
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--record-seconds", Some(v)) => o.record_seconds = v,
            ("--repeats", Some(v)) => o.repeats = v as usize,
            ("--keep-raw", _) if pair.len() == 2 => o.keep_raw = Some(PathBuf::from(&pair[1])),
            _ => panic!("usage: transcode_bench [--record-seconds S] [--repeats R] [--keep-raw DIR]"),
        }
    }
    o
}

fn scenario(seconds: u64) -> String {
    let mut toml = format!("[[rooms]]\nname = \"bench-grid\"\nclose_after_s = {seconds}\n");
    for (i, codec) in ["vp8", "vp8", "vp8", "vp8"].iter().enumerate() {
        toml.push_str(&format!("[[rooms.participants]]\nidentity = \"p{}\"\nvideo_codec = \"{codec}\"\n", i + 1));
    }
    toml
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--ours") {
        return transcode_ours(&args[1..]);
    }
    let options = options(&args);
    fleet_pipelines::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut recorded = runtime.block_on(record(dir.path(), options.record_seconds));
    let (raw, recorded_s) = (recorded.raw.clone(), recorded.seconds);
    if let Some(keep) = &options.keep_raw {
        copy_dir(&raw, keep);
        eprintln!("[bench] raw session kept in {} ({recorded_s} s)", keep.display());
    }
    let tracks = session_tracks(&raw).unwrap();
    let (videos, audios): (Vec<TrackInput>, Vec<TrackInput>) =
        tracks.into_iter().partition(|t| probe_caps(t).is_some_and(|c| c.structure(0).is_some_and(|s| s.name().starts_with("video/"))));
    assert_eq!((videos.len(), audios.len()), (4, 4), "4 cameras and 4 microphones recorded");

    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let (mut ours, mut theirs, mut ours_rss, mut theirs_rss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut ours_fast, mut ours_fast_rss) = (Vec::new(), Vec::new());
    let ours_run = |round: usize, preset: &str| {
        let output = work.join(format!("ours-{preset}-{round}.mp4"));
        run_measured(Command::new(std::env::current_exe().unwrap()).arg("--ours").arg(&raw).arg(&output).arg(recorded_s.to_string()).arg(preset))
    };
    for round in 0..options.repeats {
        let (wall, rss) = ours_run(round, "veryfast");
        ours.push(wall);
        ours_rss.push(rss);
        let (wall, rss) = run_measured(&mut ffmpeg_grid(&videos, &audios, &work, &work.join(format!("ffmpeg-{round}.mp4"))));
        theirs.push(wall);
        theirs_rss.push(rss);
        let (wall, rss) = ours_run(round, "superfast");
        ours_fast.push(wall);
        ours_fast_rss.push(rss);
        eprintln!(
            "[bench] round {round}: ours {:.2} s ({:.0} MB), ffmpeg {:.2} s ({:.0} MB), ours superfast {:.2} s ({:.0} MB)",
            ours[round], ours_rss[round], theirs[round], theirs_rss[round], ours_fast[round], ours_fast_rss[round]
        );
    }
    let quality = preset_quality(&work);
    let (chunked_wall_s, chunks) = runtime.block_on(chunked_on_two_transcoders(&mut recorded));
    eprintln!("[bench] chunked over 2 transcoders: {chunked_wall_s:.2} s ({chunks} chunks)");
    let ours_median = median(&mut ours.clone());
    let theirs_median = median(&mut theirs.clone());
    let result = json!({
        "machine": machine(),
        "transcode_grid_four": {
            "input": "4 participants recorded from devroom through the fleet: VP8 1280x720 30 fps ~1.5 Mbps (flat-colour clips, cheap to decode) + Opus",
            "recording_seconds": recorded_s,
            "output": "1280x720 30 fps 2x2 grid, H.264 High 3000 kbps (x264enc / libx264 veryfast) + AAC-LC 128 kbps 48 kHz stereo, faststart MP4",
            "repeats": options.repeats,
            "fleet_wall_s": ours,
            "ffmpeg_wall_s": theirs,
            "fleet_median_s": ours_median,
            "ffmpeg_median_s": theirs_median,
            "fleet_times_realtime": recorded_s / ours_median,
            "ffmpeg_times_realtime": recorded_s / theirs_median,
            "fleet_speed_vs_ffmpeg": theirs_median / ours_median,
            "fleet_peak_rss_mb": ours_rss,
            "ffmpeg_peak_rss_mb": theirs_rss,
            "fleet_median_peak_rss_mb": median(&mut ours_rss),
            "fleet_superfast": {
                "x264_speed_preset": "superfast",
                "wall_s": ours_fast,
                "median_s": median(&mut ours_fast.clone()),
                "times_realtime": recorded_s / median(&mut ours_fast.clone()),
                "speed_vs_ffmpeg_veryfast": theirs_median / median(&mut ours_fast.clone()),
                "peak_rss_mb": ours_fast_rss,
            },
            "x264_presets_on_camera_like_content": quality,
            "ffmpeg_median_peak_rss_mb": median(&mut theirs_rss),
            "targets": { "times_realtime": 4.0, "speed_vs_ffmpeg": 1.2, "peak_rss_mb": 500 },
            "chunked_two_transcoders": {
                "wall_s": chunked_wall_s,
                "times_realtime": recorded_s / chunked_wall_s,
                "chunk_seconds": CHUNK_SECONDS,
                "chunks": chunks,
                "measured": "job state transcoding -> complete, two transcoder processes on this machine (NATS queue, downloads from local storage, the join and the audio mix included); one run",
            },
            "ffmpeg_command": "concat demuxer per track; scale+pad each to a 640x360 tile, xstack 2x2, fps=30; amix of 4; libx264 veryfast 3000k High; aac 128k; +faststart",
        },
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("transcode.json");
    std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    eprintln!("[bench] written to {}", path.display());
}

/// The fleet that recorded the room, kept running for the chunked transcode.
struct Recorded {
    fleet: Fleet,
    api: Api,
    id: String,
    raw: PathBuf,
    seconds: f64,
    _processes: Vec<fleet_tests::procs::Proc>,
    _devroom: Devroom,
    _nats: Nats,
}

/// Chunk length of the chunked run: four chunks of a 120 s recording.
const CHUNK_SECONDS: u64 = 30;

/// Records the 4-participant room through the fleet (recorder-only, no transcoder yet); the raw
/// session is copied aside for the offline comparison.
async fn record(dir: &Path, seconds: u64) -> Recorded {
    let nats = Nats::start(dir);
    let root = dir.join("storage");
    let mut fleet = Fleet::new(dir, &nats, StorageSetup::Local(root.clone()));
    let devroom = Devroom::start(dir, &scenario(seconds));
    fleet.recorder_extra = devroom.recorder_toml(3600);
    let port = free_port();
    let controller = fleet.controller(port);
    let recorder = fleet.recorder("bench-rec", "recorder-only", 1);
    let api = Api::new(port);
    eprintln!("[bench] recording 4 participants for {seconds} s");
    let id = api.start(r#"{"room":"bench-grid"}"#).await;
    let record = api.wait_for_state(&id, &["finalizing", "failed"], Duration::from_secs(seconds + 120)).await;
    assert_eq!(record["state"], "finalizing", "{record:#}");
    let session = &record["sessions"][0];
    let recorded_ms = session["ended_at_ms"].as_u64().unwrap() - session["started_at_ms"].as_u64().unwrap();
    let raw = root.join(format!("recordings/{id}/raw/{}", session["id"].as_str().unwrap()));
    let kept = dir.join("raw");
    copy_dir(&raw, &kept);
    std::fs::remove_file(kept.join("timeline.jsonl")).ok();
    Recorded {
        fleet,
        api,
        id,
        raw: kept,
        seconds: recorded_ms as f64 / 1000.0,
        _processes: vec![controller, recorder],
        _devroom: devroom,
        _nats: nats,
    }
}

/// Starts two transcoders that chunk the waiting job; returns the job's transcoding -> complete time.
async fn chunked_on_two_transcoders(recorded: &mut Recorded) -> (f64, u64) {
    recorded.fleet.transcoder_extra = format!("chunk_seconds = {CHUNK_SECONDS}\n");
    let _a = recorded.fleet.transcoder("bench-tx-a");
    let _b = recorded.fleet.transcoder("bench-tx-b");
    let mut started = None;
    loop {
        let record = recorded.api.get(&recorded.id).await;
        match record["state"].as_str().unwrap_or_default() {
            "transcoding" if started.is_none() => started = Some(std::time::Instant::now()),
            "complete" => {
                let wall = started.expect("seen transcoding").elapsed().as_secs_f64();
                return (wall, record["chunks"]["count"].as_u64().unwrap_or(1));
            }
            "failed" => panic!("chunked transcode failed: {record:#}"),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The child process: the fleet's composite transcode of one session, as a transcoder runs it.
fn transcode_ours(args: &[String]) {
    fleet_pipelines::init().unwrap();
    let tracks = session_tracks(Path::new(&args[0])).unwrap();
    let duration_ns = (args[2].parse::<f64>().unwrap() * 1e9) as u64;
    let mut spec = TranscodeSpec::hd720(tracks, duration_ns, "x264enc", PathBuf::from(&args[1]));
    spec.speed_preset = args[3].parse().unwrap();
    let report = run(&spec, |_| {}).expect("transcode");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// What each x264 preset costs and gives on camera-like content: 10 s of a 720p 2x2 grid of busy,
/// grainy synthetic pictures (ffmpeg's lavfi sources with temporal noise), encoded by x264enc at the
/// default 3000 kbps. CPU seconds are the encoding pipeline's (raw file in, MP4 out; x264 nearly all of
/// it); `encode_only_ceiling_times_realtime` is how fast this machine could go if encoding were all it did.
fn preset_quality(work: &Path) -> serde_json::Value {
    const SECONDS: f64 = 10.0;
    let raw = work.join("camera-like.yuv");
    let sources = "testsrc2=size=640x360:rate=30,noise=alls=12:allf=t[a];mandelbrot=size=640x360:rate=30[b];\
        life=size=640x360:rate=30:mold=10:ratio=0.5:death_color=#203040:life_color=#c0a080,noise=alls=12:allf=t[c];\
        cellauto=size=640x360:rate=30,noise=alls=8:allf=t[d];[a][b][c][d]xstack=inputs=4:layout=0_0|w0_0|0_h0|w0_h0,format=yuv420p";
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", sources, "-t", &SECONDS.to_string(), "-f", "rawvideo"])
        .arg(&raw)
        .status()
        .unwrap();
    assert!(made.success(), "camera-like content");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut results = Vec::new();
    for preset in ["veryfast", "superfast"] {
        let encoded = work.join(format!("camera-like-{preset}.mp4"));
        let launch = format!(
            "filesrc location={} blocksize=1382400 ! rawvideoparse width=1280 height=720 format=i420 framerate=30/1 colorimetry=bt709 \
             ! x264enc bitrate=3000 speed-preset={preset} key-int-max=60 ! video/x-h264,profile=high ! h264parse ! mp4mux ! filesink location={}",
            raw.display(),
            encoded.display()
        );
        let cpu_s = child_cpu_seconds(Command::new("gst-launch-1.0").arg("-q").args(launch.split_whitespace()));
        let scores = Command::new("ffmpeg")
            .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "1280x720", "-r", "30", "-i"])
            .arg(&raw)
            .arg("-i")
            .arg(&encoded)
            .args(["-lavfi", "[1:v][0:v]ssim;[1:v][0:v]psnr", "-f", "null", "-"])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&scores.stderr);
        let after = |key: &str| log.split(key).nth(1).and_then(|rest| rest.split_whitespace().next()).and_then(|v| v.parse::<f64>().ok());
        let bytes = std::fs::metadata(&encoded).unwrap().len();
        results.push(json!({
            "x264_speed_preset": preset,
            "encode_cpu_s": cpu_s,
            "encode_only_ceiling_times_realtime": cores * SECONDS / cpu_s,
            "ssim": after("All:"),
            "psnr_db": after("average:"),
            "kbps": bytes as f64 * 8.0 / SECONDS / 1000.0,
        }));
    }
    std::fs::remove_file(&raw).ok();
    json!({ "content": "10 s 1280x720 30 fps: 2x2 grid of ffmpeg lavfi testsrc2, mandelbrot, life and cellauto with temporal noise", "encoder": "x264enc 3000 kbps", "presets": results })
}

/// The user + system CPU seconds of a child process, from its rusage.
fn child_cpu_seconds(command: &mut Command) -> f64 {
    let before = children_cpu_seconds();
    let status = command.status().unwrap();
    assert!(status.success(), "{command:?}: {status}");
    children_cpu_seconds() - before
}

fn children_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The same composition with ffmpeg: a 2x2 grid of letterboxed 640x360 tiles, all audios mixed.
fn ffmpeg_grid(videos: &[TrackInput], audios: &[TrackInput], work: &Path, output: &Path) -> Command {
    let list = |track: &TrackInput| {
        let path = work.join(format!("{}.txt", track.name.replace('/', "-")));
        let body: String = track.segments.iter().map(|s| format!("file '{}'\n", s.path.display())).collect();
        std::fs::write(&path, body).unwrap();
        path
    };
    let mut command = Command::new("ffmpeg");
    command.args(["-y", "-v", "error"]);
    for track in videos.iter().chain(audios) {
        command.args(["-f", "concat", "-safe", "0", "-i"]).arg(list(track));
    }
    let tile = "scale=640:360:force_original_aspect_ratio=decrease,pad=640:360:(ow-iw)/2:(oh-ih)/2";
    let mut filter = String::new();
    for i in 0..videos.len() {
        filter.push_str(&format!("[{i}:v]{tile}[v{i}];"));
    }
    let stacked: String = (0..videos.len()).map(|i| format!("[v{i}]")).collect();
    filter.push_str(&format!("{stacked}xstack=inputs={}:layout=0_0|w0_0|0_h0|w0_h0,fps=30,format=yuv420p[v];", videos.len()));
    let mixed: String = (0..audios.len()).map(|i| format!("[{}:a]", videos.len() + i)).collect();
    filter.push_str(&format!("{mixed}amix=inputs={}[au]", audios.len()));
    command.args(["-filter_complex", &filter, "-map", "[v]", "-map", "[au]"]);
    command.args(["-c:v", "libx264", "-preset", "veryfast", "-b:v", "3000k", "-profile:v", "high"]);
    command.args(["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2", "-movflags", "+faststart"]).arg(output);
    command
}
