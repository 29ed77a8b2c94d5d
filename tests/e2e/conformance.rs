//! devroom behaves as a LiveKit server to LiveKit's own client (issue 3, conformance): the official
//! Python SDK (`pip install livekit`, libwebrtc inside) joins a devroom room, falls back from `/rtc/v1`
//! to `/rtc`, and receives and decodes every synthetic track, VP8, H.264 and Opus.
//!
//! Runs inside a network namespace (`unshare -n`, needs root) because libwebrtc skips loopback.
//! `deploy/dev.sh` installs the SDK into `target/pyenv`.

use fleet_tests::bin_path;
use fleet_tests::devroom::clip_cache;
use std::path::Path;
use std::process::Command;

const SCENARIO: &str = r#"
[[rooms]]
name = "conformance"

[[rooms.participants]]
identity = "alice"
video_codec = "vp8"

[[rooms.participants]]
identity = "bob"
video_codec = "h264"
"#;

#[test]
fn livekit_python_sdk_receives_every_track() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("target/pyenv/bin/python");
    assert!(python.exists(), "{} is missing: run `deploy/dev.sh deps` (installs LiveKit's Python SDK)", python.display());
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let output = Command::new("unshare")
        .arg("-n")
        .arg(root.join("tests/conformance/run_in_netns.sh"))
        .arg(bin_path("devroom"))
        .arg(&python)
        .arg(&scenario)
        .arg(clip_cache())
        .args(["conformance", "4", "5"])
        .output()
        .expect("unshare runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "the SDK client failed ({}):\n{stdout}\n{stderr}", output.status);
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    let subscribed = result["subscribed"].as_object().unwrap();
    assert_eq!(subscribed.len(), 4, "two participants, two tracks each");
    let mimes: std::collections::BTreeSet<&str> = subscribed.values().map(|t| t["mime"].as_str().unwrap()).collect();
    assert_eq!(mimes.into_iter().collect::<Vec<_>>(), ["audio/opus", "video/H264", "video/VP8"]);
    for (sid, frames) in result["frames"].as_object().unwrap() {
        let frames = frames.as_u64().unwrap();
        let video = subscribed[sid]["mime"].as_str().unwrap().starts_with("video");
        // About 5 s of media: 30 fps video, 100 audio frames a second; leave room for the join.
        let least = if video { 60 } else { 200 };
        assert!(frames >= least, "{sid}: only {frames} frames decoded");
    }
    assert!(stderr.contains("falling back to v0"), "the SDK should have tried /rtc/v1 and fallen back:\n{stderr}");
}
