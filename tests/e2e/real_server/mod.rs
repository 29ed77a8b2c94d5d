//! What the tests against the real livekit-server share: the fleet beside the server, finishing a
//! recording, reading its timeline, and the A/V sync check of its MP4.
#![allow(dead_code)] // each test binary uses some of these

use fleet_tests::Setup;
use fleet_tests::livekit_server::{LiveKitOptions, LiveKitServer};
use fleet_tests::media::decode_errors;
use fleet_tests::netns;
use fleet_tests::sync::SyncReport;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

pub fn server_options() -> LiveKitOptions {
    LiveKitOptions { node_ip: netns::SERVER_IP.into(), ..LiveKitOptions::default() }
}

/// NATS, a controller, livekit-server (in the test's namespace) and one recorder (mode both) joining it.
pub fn fleet_on_real_server() -> (Setup, LiveKitServer, fleet_tests::procs::Proc) {
    let mut setup = Setup::local();
    let server = LiveKitServer::start(setup.dir.path(), &server_options());
    setup.fleet.recorder_extra = server.recorder_toml(30);
    let recorder = setup.fleet.recorder("rec-1", "both", 2);
    (setup, server, recorder)
}

/// Stops the recording and waits for its transcode, which must complete; returns the job record.
pub async fn stop_and_complete(setup: &Setup, id: &str, timeout: Duration) -> Value {
    assert_eq!(setup.api.stop(id).await.status, 202);
    let record = setup.api.wait_for_state(id, &["complete", "failed"], timeout).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    record
}

/// The recording's MP4, copied into the test folder as `name`; it must decode without an error.
pub fn keep_mp4(setup: &Setup, record: &Value, name: &str) -> std::path::PathBuf {
    let (mp4, _) = setup.read_output(record);
    let path = setup.dir.path().join(name);
    std::fs::write(&path, &mp4).unwrap();
    // For a look afterwards: the test's directory goes with it.
    if let Some(dir) = std::env::var_os("FLEET_KEEP_MP4_DIR") {
        let _ = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(Path::new(&dir).join(name), &mp4));
        let _ = std::process::Command::new("cp").arg("-r").arg(&setup.root).arg(Path::new(&dir).join("storage")).status();
    }
    assert_eq!(decode_errors(&path), "");
    path
}

pub fn timeline(root: &Path, id: &str, session: &str) -> Vec<Value> {
    let path = root.join(format!("recordings/{id}/raw/{session}/timeline.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The picture area of a 16:9 track letterboxed into `tile` (x, y, w, h), as an ffmpeg crop of its
/// middle half (the flash detector averages the crop; borders and scaling edges stay out).
pub fn picture_crop(tile: (u32, u32, u32, u32)) -> String {
    let (x, y, w, h) = tile;
    let (pw, ph) = if w * 9 > h * 16 { (h * 16 / 9, h) } else { (w, w * 9 / 16) };
    let (px, py) = (x + (w - pw) / 2, y + (h - ph) / 2);
    format!("{}:{}:{}:{}", pw / 2, ph / 2, px + pw / 4, py + ph / 4)
}

/// Pairs each publisher (by its marker index) with the tile where its flashes are, and checks A/V sync
/// over `from_s..to_s` of the MP4, with the beeps in the MP4's own (mixed) audio: one report per publisher.
pub fn sync_reports(mp4: &Path, indices: &[usize], tiles: &[(u32, u32, u32, u32)], from_s: f64, to_s: f64) -> Vec<SyncReport> {
    let mixed = fleet_tests::sync::decode_audio(mp4);
    indices.iter().map(|&index| sync_report(mp4, &mixed, index, tiles, from_s, to_s)).collect()
}

/// As [`sync_reports`], with each publisher's beeps looked for in its own audio file of the recording
/// (`audio_per_participant`): in a busy room two publishers' beeps can start within the same few
/// milliseconds, and in the mix one would hide the other's onset.
pub fn sync_reports_own_audio(mp4: &Path, publishers: &[(usize, &Path)], tiles: &[(u32, u32, u32, u32)], from_s: f64, to_s: f64) -> Vec<SyncReport> {
    publishers.iter().map(|&(index, audio_file)| sync_report(mp4, &fleet_tests::sync::decode_audio(audio_file), index, tiles, from_s, to_s)).collect()
}

/// One publisher's report, from its tile: where its flashes have its beeps closest (another tile's flashes
/// may have this participant's beeps within the checker's reach, but not at the same instant).
pub fn sync_report(mp4: &Path, audio: &[f32], index: usize, tiles: &[(u32, u32, u32, u32)], from_s: f64, to_s: f64) -> SyncReport {
    tiles
        .iter()
        .map(|t| fleet_tests::sync::check_paired_against(mp4, audio, &[(picture_crop(*t), index)], 30.0, from_s, to_s))
        .filter(|report| !report.offsets_ms.is_empty())
        .min_by(|a, b| median_abs(&a.offsets_ms).total_cmp(&median_abs(&b.offsets_ms)))
        .unwrap_or_else(|| panic!("participant {index}: no flash with its beep in any tile"))
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

pub fn median_abs(values: &[f64]) -> f64 {
    median(&values.iter().map(|v| v.abs()).collect::<Vec<_>>())
}

/// How well a publisher's own capture keeps its sound and picture together.
#[derive(Clone, Copy, PartialEq)]
pub enum Sender {
    /// LiveKit's Python SDK fed frame by frame. On this 2-core machine its audio lags its video by an
    /// amount steady within a run but different per process and run (measured 23 to 107 ms), and its
    /// encoders drop frames now and then (a flash then starts one or two frames late).
    /// Its OpenH264 encoder skips up to 9 frames at a time (its log: `iContinualSkipFrames(9)`), so now and
    /// then a flash reaches the wire ~300 ms after its beep, past the checker's 250 ms window, while the
    /// recorder logs no lost packet (seen in two clean-clone CI runs, one flash each).
    PythonSdk,
    /// Chromium's fake camera and microphone read two files on their own clocks, with nothing keeping
    /// them together; on a loaded 2-core machine the camera also skips frames (measured -130 to +240 ms).
    BrowserFakeDevices,
}

/// What the fleet answers for with real publishers. A Python SDK publisher: 80 % of its seconds have a
/// marker, all flashes in the recording but two have their beep, the median A/V offset is within 150 ms. A browser:
/// its flashes reach the recording (at least two); its markers and offsets are printed, not held to a
/// bound, because Chromium's fake camera and microphone are not in step with each other: on this 2-core
/// machine the camera sends 5 to 20 frames a second (its encoder stats, printed; 1 to 5 under the
/// flakiness check's CPU hogs) and most flashes never leave it, and its median offset was measured from
/// -130 to +240 ms between runs while the Python publishers' beside it stayed within 120 ms. Tighter
/// bounds would measure the publishers, not the fleet. The fleet's own accuracy, with senders of exact
/// timing, is held to 40 ms (p95) and 20 ms of drift by the devroom sync tests.
pub fn assert_in_sync(reports: &[SyncReport], senders: &[Sender]) {
    for ((i, report), sender) in reports.iter().enumerate().zip(senders) {
        let mut summary = serde_json::to_value(report).unwrap();
        summary["offsets_ms"] = serde_json::json!(report.offsets_ms.iter().map(|o| o.round()).collect::<Vec<_>>());
        let centre = median(&report.offsets_ms);
        println!("publisher {i}: median A/V offset {centre:.1} ms; {summary}");
        // Publishers drop whole flashes now and then (an H.264 encoder re-initialising at a resize, a
        // browser's fake camera under load), so not every second has one; but every flash in the
        // recording has its beep.
        match sender {
            Sender::PythonSdk => {
                // Its VP8 encoder skips frames after a costly (white) one: the raw track of a run that found
                // 13 of 14 markers had gaps of 0.2-0.73 s starting at flash times, with RTP contiguous (nothing
                // lost on the way); a clean-clone CI run found 12 of 14 so. Its H.264 publisher's offsets also
                // swing under load (one clean-clone CI run: 31 to 104 ms within a run, two of twelve flashes
                // past the checker's window; 0 of 60 in five runs here, two of them beside two CPU hogs), so two
                // of twelve are allowed; the fleet's own timing is held tight by the devroom sync tests.
                assert!(report.found_ratio >= 0.8, "publisher {i}: markers found: {summary}");
                assert!(report.missing.len() <= 2, "publisher {i}: flashes without their beep: {summary}");
                assert!(centre.abs() <= 150.0, "publisher {i}: median offset {centre:.1} ms: {summary}");
            }
            Sender::BrowserFakeDevices => {
                let flashes = report.found_markers + report.missing.len();
                assert!(flashes >= 2, "publisher {i}: the browser's flashes did not reach the recording: {summary}");
            }
        }
    }
}
