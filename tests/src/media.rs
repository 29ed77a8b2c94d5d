//! Output checks with ffprobe/ffmpeg, independent of the fleet's own MP4 reader.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

pub fn ffprobe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(out.status.success(), "ffprobe failed on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Decodes every frame; returns what ffmpeg printed at level error (empty when clean). Frames keep their
/// own times and time base (`-fps_mode passthrough -enc_time_base -1`): real senders' frames are not
/// evenly spaced, and rescaled to ffmpeg's default 1/frame-rate time base two frames 30 ms apart can
/// land on one tick, which ffmpeg reports as non-monotonic, though nothing failed to decode.
pub fn decode_errors(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-fps_mode", "passthrough", "-enc_time_base", "-1", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// True when the `moov` box comes before `mdat` (read with our own eyes: top-level box walk).
pub fn moov_before_mdat(bytes: &[u8]) -> bool {
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        match &bytes[at + 4..at + 8] {
            b"moov" => return true,
            b"mdat" => return false,
            _ => {}
        }
        if size < 8 {
            return false;
        }
        at += size;
    }
    false
}

/// The stream of `codec_type` in an ffprobe result.
pub fn stream<'a>(probe: &'a Value, codec_type: &str) -> &'a Value {
    probe["streams"].as_array().unwrap().iter().find(|s| s["codec_type"] == codec_type).unwrap_or_else(|| panic!("no {codec_type} stream: {probe}"))
}

/// Mean luma (0..255) of the tile `crop` (ffmpeg `w:h:x:y`) in every frame.
pub fn tile_luma(path: &Path, crop: &str) -> Vec<f64> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-vf", &format!("crop={crop},scale=4:4,format=gray"), "-f", "rawvideo", "-"])
        .output()
        .expect("ffmpeg runs");
    out.stdout.chunks_exact(16).map(|f| f.iter().map(|&v| v as f64).sum::<f64>() / 16.0).collect()
}

/// Seconds of the tile that are black (no participant media: a gap between capture sessions, or media
/// lost), at `fps`. The first and last 0.1 s are not counted: a track's first frame may come a frame
/// after the recording's zero, and its last may end a frame before the recording does.
pub fn black_seconds(path: &Path, crop: &str, fps: f64) -> f64 {
    let luma = tile_luma(path, crop);
    let edge = (fps / 10.0).ceil() as usize;
    let inner = luma.get(edge..luma.len().saturating_sub(edge)).unwrap_or(&[]);
    inner.iter().filter(|&&l| l < 30.0).count() as f64 / fps
}

/// Start times (s) of every packet in a track's segments (`<track_dir>/*.mkv`), in order: the
/// segments keep the capture session's running time, so the list spans the whole track.
pub fn packet_times(track_dir: &Path) -> Vec<f64> {
    let mut segments: Vec<_> =
        std::fs::read_dir(track_dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "mkv")).collect();
    segments.sort();
    let mut times = Vec::new();
    for segment in segments {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "packet=pts_time", "-of", "csv=p=0"])
            .arg(&segment)
            .output()
            .expect("ffprobe runs");
        times.extend(String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok()));
    }
    times.sort_by(f64::total_cmp);
    times
}

/// The longest stretch without a packet between `from_s` and `to_s`: (length, where it began).
pub fn longest_gap(times: &[f64], from_s: f64, to_s: f64) -> (f64, f64) {
    times
        .windows(2)
        .filter(|w| w[1] >= from_s && w[0] <= to_s)
        .map(|w| (w[1] - w[0], w[0]))
        .fold((0.0, from_s), |best, gap| if gap.0 > best.0 { gap } else { best })
}
