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
    /// x264's speed preset when encoding on the CPU: `veryfast` (default), or `superfast`/`ultrafast` for
    /// speed at some cost in quality per bit, `faster`/`fast`/`medium` for the reverse.
    pub x264_speed_preset: fleet_pipelines::encoders::SpeedPreset,
    /// A transcode that makes no progress for this long fails instead of hanging.
    pub stall_timeout_s: u64,
    pub audio_bitrate_bps: u32,
    /// Recordings longer than this are transcoded in chunks of this length by every free transcoder
    /// at once, then joined; a recording still running is transcoded progressively in these chunks
    /// (what is left at the stop is at most one chunk). 0: never. Rounded down to whole seconds.
    pub chunk_seconds: u64,
    /// plugNmeet's recordings root (`main_path`) as mounted here: file jobs (plugNmeet's post-recording
    /// and merge tasks) read and write below it. Absent: file jobs fail with that reason.
    pub shared_files_root: Option<PathBuf>,
    /// The transcoders' X25519 private key (base64, as `transcoder e2ee-keygen` writes it) that opens the
    /// end-to-end encryption keys jobs carry sealed. A file readable by the transcoder alone.
    pub e2ee_private_key_file: Option<PathBuf>,
    /// The same key given inline (e.g. `FLEET_TRANSCODER__E2EE_PRIVATE_KEY` from a secret); the file wins.
    pub e2ee_private_key: Option<fleet_protocol::secret::Secret>,
    /// The look of every composite, field by field, where a job's own `branding` says nothing (jobs
    /// from plugNmeet and the Egress API carry none).
    pub branding: fleet_protocol::branding::Branding,
    /// Logos a branding may name: `[logos.acme] file = "/etc/fleet/acme.png"`, `corner`, `width`, `margin`.
    pub logos: std::collections::BTreeMap<String, LogoConfig>,
}

/// A logo image on this node's disk (PNG or JPEG) and where it goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogoConfig {
    pub file: PathBuf,
    #[serde(default)]
    pub corner: fleet_pipelines::look::Corner,
    /// Width in pixels at 720 lines (scaled with the output).
    #[serde(default = "LogoConfig::default_width")]
    pub width: u32,
    /// Distance from the frame's edges in pixels at 720 lines.
    #[serde(default = "LogoConfig::default_margin")]
    pub margin: u32,
}

impl LogoConfig {
    fn default_width() -> u32 {
        160
    }
    fn default_margin() -> u32 {
        24
    }
}

impl Default for TranscoderConfig {
    fn default() -> Self {
        Self {
            slots: 1,
            max_cpu_load: 0.95,
            scratch_dir: std::env::temp_dir().join("fleet-transcoder"),
            encoder: "auto".into(),
            x264_speed_preset: Default::default(),
            stall_timeout_s: 120,
            audio_bitrate_bps: 128_000,
            chunk_seconds: 10,
            shared_files_root: None,
            e2ee_private_key_file: None,
            e2ee_private_key: None,
            branding: Default::default(),
            logos: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_pipelines::encoders::SpeedPreset;

    fn load_with(line: &str) -> Result<TranscoderConfig, fleet_runtime::config::ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("transcoder.toml");
        std::fs::write(&file, line).unwrap();
        fleet_runtime::config::load(Some(&file))
    }

    #[test]
    fn the_x264_preset_is_veryfast_unless_set_and_unknown_ones_are_refused() {
        assert_eq!(load_with("").unwrap().x264_speed_preset, SpeedPreset::Veryfast);
        assert_eq!(load_with("x264_speed_preset = \"superfast\"").unwrap().x264_speed_preset, SpeedPreset::Superfast);
        let refused = load_with("x264_speed_preset = \"warp\"").unwrap_err().to_string();
        assert!(refused.contains("warp"), "{refused}");
    }
}
