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

/// Decodes every frame; returns what ffmpeg printed at level error (empty when clean).
pub fn decode_errors(path: &Path) -> String {
    let out = Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(path).args(["-f", "null", "-"]).output().expect("ffmpeg runs");
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
