//! The recorder against LiveKit's real SFU (livekit-server 1.13.5) and real publishers (LiveKit's Python
//! SDK, libwebrtc inside: simulcast, H.264, Opus). Each test runs in a network namespace of its own
//! ([`fleet_tests::netns`]): the publishers' libwebrtc skips loopback, so media crosses a veth pair.

use fleet_tests::Setup;
use fleet_tests::livekit_server::{LiveKitOptions, LiveKitServer};
use fleet_tests::media::{decode_errors, ffprobe};
use fleet_tests::netns;
use fleet_tests::publisher::{Publisher, PublisherSpec};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

fn server_options() -> LiveKitOptions {
    LiveKitOptions { node_ip: netns::SERVER_IP.into(), ..LiveKitOptions::default() }
}

fn timeline(root: &Path, id: &str, session: &str) -> Vec<Value> {
    let path = root.join(format!("recordings/{id}/raw/{session}/timeline.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The picture area of a 16:9 track letterboxed into `tile` (x, y, w, h), as an ffmpeg crop of its
/// middle half (the flash detector averages the crop; borders and scaling edges stay out).
fn picture_crop(tile: (u32, u32, u32, u32)) -> String {
    let (x, y, w, h) = tile;
    let (pw, ph) = if w * 9 > h * 16 { (h * 16 / 9, h) } else { (w, w * 9 / 16) };
    let (px, py) = (x + (w - pw) / 2, y + (h - ph) / 2);
    format!("{}:{}:{}:{}", pw / 2, ph / 2, px + pw / 4, py + ph / 4)
}

/// Pairs each publisher (by its marker index) with the tile where its flashes are, and checks A/V sync
/// over `from_s..to_s` of the MP4.
fn sync_report(mp4: &Path, indices: &[usize], tiles: &[(u32, u32, u32, u32)], from_s: f64, to_s: f64) -> fleet_tests::sync::SyncReport {
    let mut pairs = Vec::new();
    for &index in indices {
        let best = tiles
            .iter()
            .map(|t| {
                let crop = picture_crop(*t);
                let found = fleet_tests::sync::check_paired_indexed(mp4, &[(crop.clone(), index)], 30.0, from_s, to_s).found_markers;
                (found, crop)
            })
            .max_by_key(|(found, _)| *found)
            .unwrap();
        pairs.push((best.1, index));
    }
    fleet_tests::sync::check_paired_indexed(mp4, &pairs, 30.0, from_s, to_s)
}

/// Two Python SDK publishers (VP8 with simulcast, H.264), each with camera and microphone, recorded
/// through the whole fleet: every track is written, the MP4 decodes, and the markers are in sync.
#[test]
fn python_sdk_publishers_are_recorded_in_sync() {
    if !netns::enter("python_sdk_publishers_are_recorded_in_sync") {
        return;
    }
    runtime().block_on(async {
        let mut setup = Setup::local();
        let server = LiveKitServer::start(setup.dir.path(), &server_options());
        setup.fleet.recorder_extra = server.recorder_toml(30);
        let _recorder = setup.fleet.recorder("rec-1", "both", 2);

        let mut vp8 = PublisherSpec::new("alice", 0, "vp8");
        vp8.simulcast = true;
        vp8.seconds = 40.0;
        let mut h264 = PublisherSpec::new("bob", 1, "h264");
        h264.seconds = 40.0;
        let alice = Publisher::start(&server, "real-two", &vp8, setup.dir.path());
        let bob = Publisher::start(&server, "real-two", &h264, setup.dir.path());
        alice.wait_published(Duration::from_secs(30));
        bob.wait_published(Duration::from_secs(30));

        let id = setup.api.start(r#"{"room":"real-two"}"#).await;
        setup.api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(16)).await;
        assert_eq!(setup.api.stop(&id).await.status, 202);
        let record = setup.api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(180)).await;
        assert_eq!(record["state"], "complete", "{record:#}");
        assert!(record["warnings"].as_array().is_none_or(|w| w.is_empty()), "warnings: {record:#}");

        let session = record["sessions"][0]["id"].as_str().unwrap().to_string();
        let entries = timeline(&setup.root, &id, &session);
        let codecs: Vec<&str> = entries.iter().filter(|e| e["type"] == "track_published").map(|e| e["codec"].as_str().unwrap()).collect();
        println!("published codecs: {codecs:?}");
        let started = entries.iter().filter(|e| e["type"] == "track_started").count();
        assert_eq!(started, 4, "every track's media arrived: {entries:#?}");

        let (mp4, _) = setup.read_output(&record);
        let path = setup.dir.path().join("real-two.mp4");
        std::fs::write(&path, mp4).unwrap();
        assert_eq!(decode_errors(&path), "");
        let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
        let tiles = [(0, 0, 640, 720), (640, 0, 640, 720)];
        let report = sync_report(&path, &[0, 1], &tiles, 1.0, duration - 1.0);
        let mut summary = serde_json::to_value(&report).unwrap();
        summary["offsets_ms"] = serde_json::json!(report.offsets_ms.len());
        println!("sync report: {summary}");
        assert!(report.found_ratio >= 0.99, "markers found: {summary}");
        assert!(report.p95_abs_offset_ms <= 40.0, "A/V offset: {summary}");
        assert!(report.max_cadence_drift_ms <= 20.0, "cadence drift: {summary}");
        drop((alice, bob));
    });
}
