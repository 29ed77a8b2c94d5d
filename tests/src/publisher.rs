//! Real publishers for the real livekit-server: LiveKit's Python SDK (libwebrtc inside) running
//! `tests/conformance/publisher.py`, which publishes camera-like video and audio with sync markers.
//! Run inside a test's network namespace ([`crate::netns`]): libwebrtc skips loopback.

use crate::livekit_server::{API_KEY, API_SECRET, LiveKitServer};
use crate::procs::Proc;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn python() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/bin/python");
    assert!(path.exists(), "{} is missing: run `deploy/dev.sh deps` (installs LiveKit's Python SDK)", path.display());
    path
}

/// One publisher's settings; see the script's header for the event flags.
#[derive(Clone)]
pub struct PublisherSpec {
    pub identity: String,
    /// Marker colour and tone (440 + 110 * index Hz).
    pub index: usize,
    pub codec: &'static str,
    pub simulcast: bool,
    pub seconds: f64,
    pub width: u32,
    pub height: u32,
    /// Extra script flags, e.g. `["--mute-camera", "6:9"]`.
    pub flags: Vec<String>,
}

impl PublisherSpec {
    pub fn new(identity: &str, index: usize, codec: &'static str) -> Self {
        PublisherSpec { identity: identity.into(), index, codec, simulcast: false, seconds: 20.0, width: 640, height: 360, flags: Vec::new() }
    }
}

pub struct Publisher {
    pub proc: Proc,
}

impl Publisher {
    pub fn start(server: &LiveKitServer, room: &str, spec: &PublisherSpec, dir: &Path) -> Publisher {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/publisher.py");
        let mut args: Vec<String> = vec![
            script.to_string_lossy().into(),
            "--url".into(),
            server.url(),
            "--room".into(),
            room.into(),
            "--api-key".into(),
            API_KEY.into(),
            "--api-secret".into(),
            API_SECRET.into(),
            "--identity".into(),
            spec.identity.clone(),
            "--index".into(),
            spec.index.to_string(),
            "--codec".into(),
            spec.codec.into(),
            "--seconds".into(),
            spec.seconds.to_string(),
            "--width".into(),
            spec.width.to_string(),
            "--height".into(),
            spec.height.to_string(),
        ];
        if spec.simulcast {
            args.push("--simulcast".into());
        }
        args.extend(spec.flags.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn_remote(&format!("publisher-{}", spec.identity), &python(), &args, &[], dir);
        Publisher { proc }
    }

    /// Waits until the script has published its camera.
    pub fn wait_published(&self, timeout: Duration) {
        wait_for_camera(&self.proc, timeout);
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        script_events(&self.proc)
    }
}

/// What a publisher script logged: its `{"event": ..., "t": ...}` lines.
fn script_events(proc: &Proc) -> Vec<serde_json::Value> {
    proc.log_text().lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter(|v| v.get("event").is_some()).collect()
}

/// Waits until a publisher script logged its camera as published.
fn wait_for_camera(proc: &Proc, timeout: Duration) {
    crate::wait::until_blocking(&format!("{} publishing its camera", proc.name), timeout, Duration::from_millis(100), || {
        let published = script_events(proc).iter().any(|e| e["event"] == "published" && e["kind"] == "video");
        if published { Ok(()) } else { Err(proc.log_text()) }
    })
}

/// A headless Chromium running LiveKit's JS SDK (`tests/browser/publish.mjs`): camera and microphone from
/// a marker clip (`publisher.py --write-clip`), published with the SDK's defaults.
pub struct BrowserPublisher {
    pub proc: Proc,
}

/// A browser publisher's settings.
#[derive(Clone)]
pub struct BrowserSpec {
    pub identity: String,
    /// Marker colour and tone, as [`PublisherSpec::index`].
    pub index: usize,
    pub seconds: f64,
    /// Seconds during which a canvas is shared as a screen.
    pub screen_share: Option<(f64, f64)>,
    /// The JS SDK's `videoCodec` (`vp9`, `av1`: the SDK adds a VP8 backup); its default when `None`.
    pub codec: Option<&'static str>,
    /// The share and `seconds` count from when this file appears, not from the start.
    pub schedule_from: Option<PathBuf>,
}

impl BrowserSpec {
    pub fn new(identity: &str, index: usize, seconds: f64) -> Self {
        BrowserSpec { identity: identity.into(), index, seconds, screen_share: None, codec: None, schedule_from: None }
    }
}

impl BrowserPublisher {
    pub fn start(server: &LiveKitServer, room: &str, spec: &BrowserSpec, dir: &Path) -> Self {
        let (identity, index) = (spec.identity.as_str(), spec.index);
        let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
        assert!(
            browser_dir.join("node_modules/playwright-core").exists() && Path::new("/usr/bin/chromium").exists(),
            "the browser publisher is not installed: run `deploy/dev.sh deps` (Debian's chromium, npm packages in tests/browser)"
        );
        let clip = dir.join(format!("clip-{identity}"));
        let status = std::process::Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/publisher.py"))
            .args(["--write-clip", &clip.to_string_lossy(), "--index", &index.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "writing the marker clip failed");
        let token = livekit_api::access_token::AccessToken::with_api_key(API_KEY, API_SECRET)
            .with_identity(identity)
            .with_name(identity)
            .with_grants(livekit_api::access_token::VideoGrants {
                room_join: true,
                room: room.into(),
                can_publish: Some(true),
                can_subscribe: Some(false),
                ..Default::default()
            })
            .to_jwt()
            .unwrap();
        let mut args: Vec<String> = vec![
            browser_dir.join("publish.mjs").to_string_lossy().into(),
            "--url".into(),
            server.url(),
            "--token".into(),
            token,
            "--video".into(),
            clip.join("camera.y4m").to_string_lossy().into(),
            "--audio".into(),
            clip.join("microphone.wav").to_string_lossy().into(),
            "--seconds".into(),
            spec.seconds.to_string(),
        ];
        if let Some((from, to)) = spec.screen_share {
            args.extend(["--screen-share".into(), format!("{from}:{to}")]);
        }
        if let Some(codec) = spec.codec {
            args.extend(["--codec".into(), codec.into()]);
        }
        if let Some(file) = &spec.schedule_from {
            args.extend(["--schedule-from".into(), file.to_string_lossy().into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        BrowserPublisher { proc: Proc::spawn_remote(&format!("browser-{identity}"), Path::new("node"), &args, &[], dir) }
    }

    pub fn wait_published(&self, timeout: Duration) {
        wait_for_camera(&self.proc, timeout);
        self.proc.prioritise_descendants();
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        script_events(&self.proc)
    }
}
