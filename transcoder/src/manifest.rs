//! `manifest.json`: what was produced, measured from the file itself.

use fleet_protocol::job::OutputInfo;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct Manifest<'a> {
    pub job_id: &'a str,
    pub room: &'a str,
    pub output: &'a OutputInfo,
    pub faststart: bool,
    pub encoder: &'a str,
    pub sessions: &'a [fleet_protocol::job::CaptureSession],
    pub segments: usize,
    /// Chunks the video was transcoded in (absent: in one piece).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u32>,
    /// Spans left out of the recording (wall clock), as paused.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub pauses: &'a [fleet_protocol::job::Pause],
    pub warnings: &'a [String],
    pub metadata: Option<&'a serde_json::Value>,
    pub created_at_ms: u64,
}

impl Manifest<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("manifest serializes")
    }
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Codec names as ffprobe prints them, from MP4 sample entries.
pub fn codec_name(sample_entry: &str) -> String {
    match sample_entry {
        "avc1" | "avc3" => "h264".into(),
        "mp4a" => "aac".into(),
        other => other.into(),
    }
}
