//! Transcode one capture session's raw segments offline, as the transcoder would:
//! `cargo run -p fleet-pipelines --example transcode_raw -- <raw/session dir> <out.mp4> <duration s> [encoder] [x264 preset]`

use fleet_pipelines::segment_reader::session_tracks;
use fleet_pipelines::transcode::{TranscodeSpec, run};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: transcode_raw <raw session dir> <out.mp4> <duration s> [encoder] [x264 preset]");
        std::process::exit(2);
    }
    fleet_pipelines::init().unwrap();
    let tracks = session_tracks(Path::new(&args[1])).expect("a readable session directory");
    let duration_ns = (args[3].parse::<f64>().expect("duration in seconds") * 1e9) as u64;
    let encoder = args.get(4).map(String::as_str).unwrap_or("x264enc");
    let mut spec = TranscodeSpec::hd720(tracks, duration_ns, encoder, PathBuf::from(&args[2]));
    if let Some(preset) = args.get(5) {
        spec.speed_preset = preset.parse().expect("an x264 preset: ultrafast .. medium");
    }
    let started = Instant::now();
    let report = run(&spec, |_| {}).expect("transcode");
    println!(
        "{:.2} s wall, {} video + {} audio tracks, problems: {:?}",
        started.elapsed().as_secs_f64(),
        report.video_tracks,
        report.audio_tracks,
        report.problems
    );
}
