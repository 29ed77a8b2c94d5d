//! Chunked transcode of one capture session offline: `chunk_join <raw session dir> <out.mp4> <duration s> <chunk s>`
use fleet_pipelines::segment_reader::session_tracks;
use fleet_pipelines::transcode::{TranscodeSpec, Window, run};
use std::path::{Path, PathBuf};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    fleet_pipelines::init().unwrap();
    let tracks = session_tracks(Path::new(&args[1])).unwrap();
    let duration_ns = (args[3].parse::<f64>().unwrap() * 1e9) as u64;
    let chunk_ns = (args[4].parse::<f64>().unwrap() * 1e9) as u64;
    let out = PathBuf::from(&args[2]);
    let dir = out.parent().unwrap().to_path_buf();
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < duration_ns {
        let end = (start + chunk_ns).min(duration_ns);
        let path = dir.join(format!("chunk-{}.mp4", chunks.len()));
        let spec = TranscodeSpec {
            video_window: Some(Window { start_ns: start, end_ns: end }),
            ..TranscodeSpec::hd720(tracks.clone(), duration_ns, "x264enc", path.clone())
        };
        run(&spec, |_| {}).unwrap();
        chunks.push(path);
        start = end;
    }
    fleet_pipelines::join::run(&chunks, &out).unwrap();
}
