use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscoderConfig {
    /// Transcodes run at once on this node.
    pub slots: u32,
    /// Do not take a new job while the machine's CPU use is above this (0..1). In mode `both` this keeps
    /// transcoding from starving live recordings.
    pub max_cpu_load: f64,
    /// Where raw segments are downloaded and the output is built.
    pub scratch_dir: PathBuf,
    /// `auto` (best working encoder, GPU first) or an element name such as `x264enc`.
    pub encoder: String,
    /// A transcode that makes no progress for this long fails instead of hanging.
    pub stall_timeout_s: u64,
    pub audio_bitrate_bps: u32,
    /// Recordings longer than this are transcoded in chunks of this length by every free transcoder
    /// at once, then joined. 0: never. Rounded down to whole seconds.
    pub chunk_seconds: u64,
    /// plugNmeet's recordings root (`main_path`) as mounted here: file jobs (plugNmeet's post-recording
    /// and merge tasks) read and write below it. Absent: file jobs fail with that reason.
    pub shared_files_root: Option<PathBuf>,
}

impl Default for TranscoderConfig {
    fn default() -> Self {
        Self {
            slots: 1,
            max_cpu_load: 0.95,
            scratch_dir: std::env::temp_dir().join("fleet-transcoder"),
            encoder: "auto".into(),
            stall_timeout_s: 120,
            audio_bitrate_bps: 128_000,
            chunk_seconds: 600,
            shared_files_root: None,
        }
    }
}
