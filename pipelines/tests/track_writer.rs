//! Received frames into segments: a track writer cuts decodable Matroska segments from encoded frames,
//! including the corner a muted track makes (a segment holding a single frame).

use fleet_pipelines::clip::{Clip, ClipCodec, ClipSpec};
use fleet_pipelines::track_writer::{TrackCodec, TrackWriter, TrackWriterEvent};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

fn clip(codec: ClipCodec, cache: &Path) -> Clip {
    let spec = ClipSpec { codec, participant_index: 0, width: 320, height: 180, fps: 30, video_bitrate_bps: 300_000, seconds: 2, camera_like: false };
    Clip::load_or_encode(&spec, cache).unwrap()
}

fn decode_errors(path: &Path) -> String {
    let output = Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(path).args(["-f", "null", "-"]).output().unwrap();
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// Writes `frames` (pts, frame index) of the clip and returns the segment files.
fn write(codec: TrackCodec, clip: &Clip, frames: &[(u64, usize)], dir: &Path) -> Vec<std::path::PathBuf> {
    let (events_tx, events) = mpsc::channel();
    let first = &clip.frames[frames[0].1];
    let writer = TrackWriter::start(dir, 1_000_000_000, codec, false, &first.data, move |event| {
        let _ = events_tx.send(event);
    })
    .unwrap();
    for &(pts, index) in frames {
        let frame = &clip.frames[index];
        writer.push(pts, 33_333_333, &frame.data, frame.keyframe).unwrap();
    }
    finish(&writer, &events, dir)
}

/// Ends the track, waits for the writer to close its last segment and returns the segment files.
fn finish(writer: &TrackWriter, events: &mpsc::Receiver<TrackWriterEvent>, dir: &Path) -> Vec<std::path::PathBuf> {
    writer.finish();
    loop {
        match events.recv_timeout(Duration::from_secs(20)).expect("the writer finishes") {
            TrackWriterEvent::Finished => break,
            TrackWriterEvent::Failed(err) => panic!("{err}"),
            _ => {}
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn segments_decode_and_cut_on_keyframes() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let clip = clip(ClipCodec::Vp8, cache.path());
    let frames: Vec<(u64, usize)> = (0..clip.frames.len()).map(|i| (clip.frames[i].pts_ns + 5_000_000_000, i)).collect();
    let files = write(TrackCodec::Vp8, &clip, &frames, out.path());
    assert!(files.len() >= 2, "2 s of media in 1 s segments: {files:?}");
    for file in &files {
        assert_eq!(decode_errors(file), "", "{}", file.display());
    }
}

#[test]
fn a_single_frame_segment_is_valid() {
    // A fragment cut on a keyframe just before the track went quiet holds one frame; matroskamux 1.22
    // corrupts such a file's header unless the frame has a duration.
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let clip = clip(ClipCodec::Vp8, cache.path());
    let files = write(TrackCodec::Vp8, &clip, &[(8_115_000_000, 0)], out.path());
    assert_eq!(files.len(), 1);
    assert_eq!(decode_errors(&files[0]), "");
}

#[test]
fn h264_and_opus_tracks_are_written() {
    let cache = tempfile::tempdir().unwrap();
    for (clip_codec, codec) in [(ClipCodec::H264, TrackCodec::H264), (ClipCodec::Opus, TrackCodec::Opus)] {
        let out = tempfile::tempdir().unwrap();
        let clip = clip(clip_codec, cache.path());
        let frames: Vec<(u64, usize)> = (0..clip.frames.len()).map(|i| (clip.frames[i].pts_ns, i)).collect();
        let files = write(codec, &clip, &frames, out.path());
        assert!(!files.is_empty());
        for file in &files {
            assert_eq!(decode_errors(file), "", "{codec:?} {}", file.display());
        }
    }
}

/// Frames of an IVF file made by ffmpeg (libvpx-vp9): (data, keyframe).
fn vp9_frames(width: u32, height: u32, dir: &Path) -> Vec<(Vec<u8>, bool)> {
    let path = dir.join(format!("{width}x{height}.ivf"));
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={width}x{height}:rate=30"))
        .args(["-t", "1", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "30", "-f", "ivf"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&path).unwrap();
    let mut frames = Vec::new();
    let mut at = 32;
    while at + 12 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let frame = bytes[at + 12..at + 12 + size].to_vec();
        // VP9 uncompressed header: frame_type is bit 2 (profile 0) of the first byte; 0 = keyframe.
        let keyframe = frame[0] & 0x04 == 0;
        frames.push((frame, keyframe));
        at += 12 + size;
    }
    frames
}

#[test]
fn a_vp9_resolution_change_inside_a_segment_keeps_it_decodable() {
    // VP9 SVC as LiveKit forwards it: the spatial layer (so the picture size) changes on a keyframe,
    // here from sizes that fit one byte (240x136) to ones that need two (640x360).
    let clips = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let small = vp9_frames(240, 136, clips.path());
    let large = vp9_frames(640, 360, clips.path());
    let (events_tx, events) = mpsc::channel();
    let writer = TrackWriter::start(out.path(), 10_000_000_000, TrackCodec::Vp9, false, &small[0].0, move |event| {
        let _ = events_tx.send(event);
    })
    .unwrap();
    for (i, (frame, keyframe)) in small.iter().chain(large.iter()).enumerate() {
        writer.push(i as u64 * 33_333_333, 33_333_333, frame, *keyframe).unwrap();
    }
    for file in &finish(&writer, &events, out.path()) {
        assert_eq!(decode_errors(file), "", "{}", file.display());
    }
}
