//! Encodes one synthetic-participant clip and prints its frames (a debugging aid for devroom clips).
use fleet_pipelines::clip::{Clip, ClipCodec, ClipSpec};

fn main() {
    let codec = match std::env::args().nth(1).as_deref() {
        Some("h264") => ClipCodec::H264,
        Some("opus") => ClipCodec::Opus,
        _ => ClipCodec::Vp8,
    };
    let spec =
        ClipSpec { codec, participant_index: 0, width: 1280, height: 720, fps: 30, video_bitrate_bps: 1_500_000, seconds: 2, camera_like: false };
    let dir = tempfile::tempdir().expect("temp dir");
    match Clip::load_or_encode(&spec, dir.path()) {
        Ok(clip) => {
            for frame in clip.frames.iter().take(4).chain(clip.frames.iter().rev().take(2)) {
                println!("pts {} ms key {} bytes {}", frame.pts_ns / 1_000_000, frame.keyframe, frame.data.len());
            }
            println!("{} frames", clip.frames.len());
        }
        Err(err) => println!("error: {err}"),
    }
}
