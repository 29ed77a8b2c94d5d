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
    /// Take no new recording while the spool holds more than this many MiB awaiting upload (the object
    /// store is down or slow); running recordings go on. 0: no limit.
    pub max_spool_mb: f64,
    /// Below this much free space on the spool's filesystem, a running capture hands its recording back
    /// to the queue (another recorder resumes it) and no new recording is taken.
    pub min_free_spool_mb: f64,
    /// In a hand-over, the draining session records on this long after its successor began writing
    /// (the successor's tracks may start one by one); the transcode cuts each track where the
    /// successor has it.
    pub handover_overlap_s: u64,
    /// Progressive transcode: while recording, the transcoders are asked this often to transcode the
    /// chunks whose media is all in storage, so at the stop only the last chunk and the join remain.
    /// 0: the transcode starts after the stop.
    pub progressive_interval_s: u64,
    pub test_source: TestSourceConfig,
    pub livekit: LivekitConfig,
    pub streaming: StreamingConfig,
}

/// Live streams (jobs with `outputs.rtmp`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// H.264 encoder of the live composite (`x264enc` runs at zero latency; `nvh264enc` on a GPU).
    pub encoder: String,
    /// A stream that was live is reconnected for this long after it drops before it is given up.
    pub retry_window_s: u64,
    /// How long the composite waits for a late frame (ms): more absorbs more network jitter.
    pub latency_ms: u32,
    /// The node's look (branding and logos): taken from the same file's `[transcoder]` section, so a
    /// node draws its streams as it draws its recordings.
    #[serde(skip)]
    pub branding: fleet_protocol::branding::Branding,
    #[serde(skip)]
    pub logos: std::collections::BTreeMap<String, fleet_transcoder::config::LogoConfig>,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self { encoder: "x264enc".into(), retry_window_s: 60, latency_ms: 300, branding: Default::default(), logos: Default::default() }
    }
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
            max_spool_mb: 10_240.0,
            min_free_spool_mb: 256.0,
            handover_overlap_s: 2,
            progressive_interval_s: 2,
            test_source: TestSourceConfig::default(),
            livekit: LivekitConfig::default(),
            streaming: StreamingConfig::default(),
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

/// The LiveKit server the `livekit` source joins, and how the recorder behaves in its rooms.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LivekitConfig {
    /// `ws://` or `wss://` URL of the LiveKit server (or devroom).
    pub url: String,
    pub api_key: String,
    pub api_secret: String,
    /// Lifetime of the recorder's join token; the server refreshes it while connected.
    pub token_ttl_s: u64,
    /// End the recording when no participant is in the room for this long.
    pub empty_timeout_s: u64,
    /// Local address of the media socket, offered as the only ICE candidate. Set it to an address the
    /// SFU can reach (the loopback default suits a server on the same host, as in the tests).
    pub rtc_ip: std::net::IpAddr,
    /// How long a lost signalling connection is retried before the capture fails.
    pub reconnect_timeout_s: u64,
    /// Wait this long for a room that does not exist yet (0: fail at once).
    pub wait_for_room_s: u64,
}

impl Default for LivekitConfig {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:7880".into(),
            api_key: String::new(),
            api_secret: String::new(),
            token_ttl_s: 600,
            empty_timeout_s: 60,
            rtc_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            reconnect_timeout_s: 30,
            wait_for_room_s: 0,
        }
    }
}
