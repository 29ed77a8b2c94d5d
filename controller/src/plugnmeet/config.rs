use fleet_runtime::config::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[controller.plugnmeet]`: the fleet as a drop-in recorder for plugnmeet-server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlugnmeetConfig {
    pub enabled: bool,
    /// plugNmeet's NATS server(s); empty: the fleet's own connection.
    pub nats_url: String,
    /// The recorder id the whole fleet answers as (plugNmeet's `recorder.id`).
    pub recorder_id: String,
    /// plugNmeet's API key and secret: NATS login token, notify signature.
    pub api_key: String,
    pub api_secret: String,
    /// plugnmeet-server's base URL; notifications go to `<server_url>/auth/recorder/notify`.
    pub server_url: String,
    pub recorder_channel: String,
    pub recorder_info_bucket: String,
    /// plugNmeet's `main_path` (the recordings root the server serves from). When set, each finished
    /// recording is copied to `<main_path>/<sub_path>/<room_id>/<recording_id>.mp4`; when absent, the
    /// reported `file_path` is the recording's key in the fleet's object storage.
    pub main_path: Option<PathBuf>,
    pub sub_path: String,
    /// plugNmeet's transcoder queue (stream and subject) and its durable consumer.
    pub transcoder_jobs: String,
    pub transcoder_consumer: String,
    /// Attempts per notification before it is given up (backoff up to 10 s: 20 attempts cover about
    /// 3 minutes of plugnmeet-server being away; later reports wait, so their order holds).
    pub notify_attempts: u32,
}

impl Default for PlugnmeetConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            nats_url: String::new(),
            recorder_id: "fleet".into(),
            api_key: String::new(),
            api_secret: String::new(),
            server_url: "http://127.0.0.1:8080".into(),
            recorder_channel: "recorderChannel".into(),
            recorder_info_bucket: "pnm-recorderInfo".into(),
            main_path: None,
            sub_path: "fleet".into(),
            transcoder_jobs: "pnm-RecorderTranscoderJobs".into(),
            transcoder_consumer: "transcoderWorker".into(),
            notify_attempts: 20,
        }
    }
}

impl PlugnmeetConfig {
    /// Refuses a configuration that would fail only later, at the first request.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.api_key.is_empty() || self.api_secret.is_empty() {
            return Err(ConfigError::new("controller.plugnmeet needs api_key and api_secret (plugNmeet's)"));
        }
        fleet_protocol::SafeId::parse(self.recorder_id.as_str()).map_err(|e| ConfigError::new(format!("controller.plugnmeet.recorder_id: {e}")))?;
        if self.recorder_id.len() > 36 {
            return Err(ConfigError::new(
                "controller.plugnmeet.recorder_id must be at most 36 characters (plugNmeet stores it in a 36-character column)",
            ));
        }
        if !self.server_url.starts_with("http://") && !self.server_url.starts_with("https://") {
            return Err(ConfigError::new("controller.plugnmeet.server_url must be an http(s) URL"));
        }
        if self.main_path.is_some() && !super::files::is_safe_relative(&self.sub_path) {
            return Err(ConfigError::new("controller.plugnmeet.sub_path must be a relative path without '..'"));
        }
        Ok(())
    }
}
