use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecorderConfig {
    /// Recordings run at once on this node.
    pub slots: u32,
    /// Do not take a new recording while the machine's CPU use is above this (0..1).
    pub max_cpu_load: f64,
    /// Segments wait here until their upload is confirmed.
    pub spool_dir: PathBuf,
    /// Segment length; a lost node loses at most the open segment.
    pub segment_seconds: u32,
    /// How long a stopped capture may take to close its last segments.
    pub finish_timeout_s: u64,
    /// Give up on an upload after retrying for this long (the segment stays in the spool).
    pub upload_retry_limit_s: u64,
    pub test_source: TestSourceConfig,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            slots: 4,
            max_cpu_load: 0.9,
            spool_dir: PathBuf::from("/var/lib/fleet/spool"),
            segment_seconds: 4,
            finish_timeout_s: 20,
            upload_retry_limit_s: 600,
            test_source: TestSourceConfig::default(),
        }
    }
}

/// The synthetic participants of the `test` source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestSourceConfig {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_bitrate_bps: u32,
}

impl Default for TestSourceConfig {
    fn default() -> Self {
        Self { width: 640, height: 360, fps: 30, video_bitrate_bps: 500_000 }
    }
}
