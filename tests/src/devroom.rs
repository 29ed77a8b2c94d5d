//! The devroom LiveKit stand-in as a process, with a scenario written by the test.

use crate::bin_path;
use crate::procs::Proc;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const LIVEKIT_API_KEY: &str = "devroom-test-key";
pub const LIVEKIT_API_SECRET: &str = "devroom-test-secret-0123456789abcdef";

pub struct Devroom {
    pub proc: Proc,
    pub addr: String,
}

/// Pre-encoded clips are shared by every test run (they take seconds to make once).
pub fn clip_cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/devroom-clips")
}

impl Devroom {
    pub fn start(dir: &Path, scenario_toml: &str) -> Devroom {
        let scenario = dir.join("scenario.toml");
        std::fs::write(&scenario, scenario_toml).unwrap();
        let ready = dir.join("devroom.addr");
        let _ = std::fs::remove_file(&ready);
        let proc = Proc::spawn(
            "devroom",
            &bin_path("devroom"),
            &[
                "--listen",
                "127.0.0.1:0",
                "--scenario",
                &scenario.to_string_lossy(),
                "--api-key",
                LIVEKIT_API_KEY,
                "--api-secret",
                LIVEKIT_API_SECRET,
                "--clip-cache",
                &clip_cache().to_string_lossy(),
                "--ready-file",
                &ready.to_string_lossy(),
            ],
            &[],
            dir,
        );
        // Clip encoding on a cold cache takes a while.
        let addr = crate::wait::until_blocking("devroom started", Duration::from_secs(180), Duration::from_millis(100), || {
            std::fs::read_to_string(&ready).ok().filter(|addr| !addr.is_empty()).ok_or_else(|| proc.log_text())
        });
        Devroom { proc, addr }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// `[recorder.livekit]` pointing at this devroom.
    pub fn recorder_toml(&self, empty_timeout_s: u64) -> String {
        self.recorder_toml_with_secret(empty_timeout_s, LIVEKIT_API_SECRET)
    }

    pub fn recorder_toml_with_secret(&self, empty_timeout_s: u64, secret: &str) -> String {
        format!(
            "[recorder.livekit]\nurl = \"{}\"\napi_key = \"{LIVEKIT_API_KEY}\"\napi_secret = \"{secret}\"\nempty_timeout_s = {empty_timeout_s}\n",
            self.url()
        )
    }

    pub async fn room_state(&self, room: &str) -> Option<serde_json::Value> {
        let response = reqwest::get(format!("http://{}/devroom/rooms/{room}", self.addr)).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// Cuts the signalling connections of everyone in the room, without a `Leave`.
    pub async fn drop_signalling(&self, room: &str) {
        let client = reqwest::Client::new();
        let response = client.post(format!("http://{}/devroom/rooms/{room}/drop-signalling", self.addr)).send().await.unwrap();
        assert!(response.status().is_success(), "dropping signalling in {room}: {}", response.status());
    }

    pub async fn close_room(&self, room: &str) {
        let client = reqwest::Client::new();
        let response = client.post(format!("http://{}/devroom/rooms/{room}/close", self.addr)).send().await.unwrap();
        assert!(response.status().is_success(), "closing {room}: {}", response.status());
    }
}
