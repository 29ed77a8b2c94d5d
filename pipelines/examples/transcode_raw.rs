//! Transcode one capture session's raw segments offline, as the transcoder would:
//! `cargo run -p fleet-pipelines --example transcode_raw -- <raw/session dir> <out.mp4> <duration s> [encoder]`

use fleet_pipelines::segment_reader::{SegmentFile, TrackInput};
use fleet_pipelines::transcode::{TranscodeSpec, run};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn sorted(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).expect("readable directory").map(|e| e.unwrap().path()).collect();
    entries.sort();
    entries
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: transcode_raw <raw session dir> <out.mp4> <duration s> [encoder]");
        std::process::exit(2);
    }
    fleet_pipelines::init().unwrap();
    let mut tracks = Vec::new();
    for participant in sorted(Path::new(&args[1])).into_iter().filter(|p| p.is_dir()) {
        for track in sorted(&participant) {
            let segments = sorted(&track).into_iter().map(|path| SegmentFile { path, offset_ns: 0 }).collect();
            tracks.push(TrackInput { name: track.display().to_string(), segments });
        }
    }
    let spec = TranscodeSpec {
        tracks,
        duration_ns: (args[3].parse::<f64>().expect("duration in seconds") * 1e9) as u64,
        width: 1280,
        height: 720,
        fps: 30,
        video_kbps: 3000,
        audio_bps: 128_000,
        audio_only: false,
        encoder: args.get(4).cloned().unwrap_or_else(|| "x264enc".into()),
        output: PathBuf::from(&args[2]),
        stall_timeout: Duration::from_secs(60),
    };
    let started = Instant::now();
    let report = run(&spec, |_| {}).expect("transcode");
    println!("{:.2} s wall, {} video + {} audio tracks, problems: {:?}", started.elapsed().as_secs_f64(), report.video_tracks, report.audio_tracks, report.problems);
}
