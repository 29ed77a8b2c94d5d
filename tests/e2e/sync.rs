//! A/V sync of a whole-fleet recording, measured from the MP4 with the sync checker.

use fleet_tests::Setup;
use fleet_tests::media::ffprobe;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn three_participants_stay_in_sync_for_a_minute() {
    let setup = Setup::local();
    let _recorder = setup.fleet.recorder("rec-a", "both", 2);
    let api = &setup.api;
    let id = api.start(r#"{"room":"sync","source":{"type":"test","participants":3}}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(api.stop(&id).await.status, 202);
    let record = api.wait_for_state(&id, &["complete"], Duration::from_secs(180)).await;
    let (mp4, _) = setup.read_output(&record);
    let path = setup.dir.path().join("sync.mp4");
    std::fs::write(&path, mp4).unwrap();

    let session = &record["sessions"][0];
    let recorded_s = (session["ended_at_ms"].as_u64().unwrap() - session["started_at_ms"].as_u64().unwrap()) as f64 / 1000.0;
    let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - recorded_s).abs() <= 0.1, "MP4 {duration} s, recorded {recorded_s} s");

    // 3 participants in a 2x2 grid of 640x360 tiles.
    let tiles = ["640:360:0:0", "640:360:640:0", "640:360:0:360"].map(String::from);
    let report = fleet_tests::sync::check(&path, &tiles, 30.0, 1, duration.floor() as usize - 1);
    let mut summary = serde_json::to_value(&report).unwrap();
    summary["offsets_ms"] = serde_json::json!(report.offsets_ms.len());
    eprintln!("sync report: {summary}");
    assert!(report.found_ratio >= 0.99, "markers found: {summary}");
    // Issue targets: p95 |A/V| <= 40 ms, cadence drift <= 20 ms. Usually measured: 0.5 ms and ~0 ms, but
    // in some runs one participant's flashes land one frame (33 ms) late, depending on its source frame
    // phase (the compositor's frame choice, to be investigated), so video is held to within one frame.
    assert!(report.p95_abs_offset_ms <= 40.0, "A/V offset: {summary}");
    assert!(report.max_cadence_drift_ms <= 20.0, "cadence drift: {summary}");
    assert!(report.max_video_position_error_ms <= 34.0, "video markers off their seconds by more than a frame: {summary}");
}
