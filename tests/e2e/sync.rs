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

/// A recording transcoded in 4 s chunks by two transcoders at once: the joined MP4 has the frames of a
/// single-node transcode of the same segments (same count, same pictures) and stays in sync.
#[tokio::test(flavor = "multi_thread")]
async fn chunked_transcode_on_two_transcoders_matches_one_node() {
    let mut setup = Setup::local();
    setup.fleet.transcoder_extra = "chunk_seconds = 4\n".into();
    let _recorder = setup.fleet.recorder("rec-a", "recorder-only", 1);
    let tx_a = setup.fleet.transcoder("tx-a");
    let tx_b = setup.fleet.transcoder("tx-b");
    let api = &setup.api;
    let id = api.start(r#"{"room":"chunks","source":{"type":"test","participants":3}}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(api.stop(&id).await.status, 202);
    let record = api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(180)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    let count = record["chunks"]["count"].as_u64().unwrap();
    assert!(count >= 4, "14 s in 4 s chunks: {record:#}");
    let chunks_by = |tx: &fleet_tests::procs::Proc| tx.log_text().matches("chunk done").count();
    let (by_a, by_b) = (chunks_by(&tx_a), chunks_by(&tx_b));
    println!("chunks: {count}, by tx-a {by_a}, by tx-b {by_b}");
    // Known waste: a chunk the progressive transcode (asked every 10 s here) had started but not finished
    // when the stop split the recording is queued again, and may be transcoded twice (both identical; the
    // record keeps the first). At most the one chunk the 10 s ask queued before this 14 s recording stopped.
    assert!((count as usize..=count as usize + 1).contains(&(by_a + by_b)), "chunks transcoded: {} for {count}", by_a + by_b);
    assert!(by_a > 0 && by_b > 0, "both transcoders took chunks: tx-a {by_a}, tx-b {by_b}");
    let (mp4, manifest) = setup.read_output(&record);
    assert_eq!(manifest["chunks"].as_u64(), Some(count));
    matches_one_piece(&setup, &record, &mp4);
}

/// The progressive transcode: chunks are transcoded while the room still records (asked every 2 s), so
/// at the stop only the rest is; the joined MP4 is the one-piece transcode's, frame for frame.
#[tokio::test(flavor = "multi_thread")]
async fn progressive_transcode_while_recording_matches_one_node() {
    let mut setup = Setup::local();
    setup.fleet.transcoder_extra = "chunk_seconds = 4\n".into();
    setup.fleet.recorder_settings = "progressive_interval_s = 2\n".into();
    let _recorder = setup.fleet.recorder("rec-a", "recorder-only", 1);
    let tx = setup.fleet.transcoder("tx-a");
    let api = &setup.api;
    let id = api.start(r#"{"room":"progressive","source":{"type":"test","participants":3}}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    // 4 s chunks, final once their segments are uploaded: two are done while the room records (within
    // 14 s on a quiet machine; the deadline leaves room for a loaded one, the recording goes on meanwhile).
    let recording = fleet_tests::wait::until("chunks done while recording", Duration::from_secs(45), || async {
        let record = api.get(&id).await;
        let done = record["chunks"]["done"].as_array().map_or(0, Vec::len);
        if done >= 2 && record["state"] == "recording" { Ok(record) } else { Err(record.to_string()) }
    })
    .await;
    assert_eq!(recording["chunks"]["open"], true, "{recording:#}");
    let done_while_recording = fleet_tests::chunks::done(&recording);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(api.stop(&id).await.status, 202);
    let record = api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(180)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    // Each chunk transcoded once: the stop redid none of the ones done while recording.
    let count = fleet_tests::chunks::assert_each_transcoded_once(&record, &done_while_recording, &tx.log_text());
    let (mp4, manifest) = setup.read_output(&record);
    assert_eq!(manifest["chunks"].as_u64(), Some(count));
    matches_one_piece(&setup, &record, &mp4);
}

/// The chunked MP4 of `record` against the same segments transcoded in one piece: same frames, same
/// pictures, same sync.
fn matches_one_piece(setup: &Setup, record: &serde_json::Value, mp4: &[u8]) {
    let id = record["id"].as_str().unwrap();
    let chunked = setup.dir.path().join("chunked.mp4");
    std::fs::write(&chunked, mp4).unwrap();
    assert_eq!(fleet_tests::media::decode_errors(&chunked), "");

    // The same segments transcoded in one piece.
    fleet_pipelines::init().unwrap();
    let session = &record["sessions"][0];
    let raw = setup.root.join(format!("recordings/{id}/raw/{}", session["id"].as_str().unwrap()));
    let recorded_ns = (session["ended_at_ms"].as_u64().unwrap() - session["started_at_ms"].as_u64().unwrap()) * 1_000_000;
    let single = setup.dir.path().join("single.mp4");
    let tracks = fleet_pipelines::segment_reader::session_tracks(&raw).unwrap();
    fleet_pipelines::transcode::run(&fleet_pipelines::transcode::TranscodeSpec::hd720(tracks, recorded_ns, "x264enc", single.clone()), |_| {})
        .unwrap();

    let frames =
        |path: &std::path::Path| -> u64 { fleet_tests::media::stream(&ffprobe(path), "video")["nb_frames"].as_str().unwrap().parse().unwrap() };
    assert_eq!(frames(&chunked), frames(&single), "video frames, chunked vs one piece");
    let duration = |path: &std::path::Path| -> f64 { ffprobe(path)["format"]["duration"].as_str().unwrap().parse().unwrap() };
    assert!((duration(&chunked) - duration(&single)).abs() <= 1.0 / 30.0 + 0.001, "{} vs {}", duration(&chunked), duration(&single));
    // Pictures: the worst frame's PSNR between the two (a misplaced or black frame at a cut drops it far).
    let psnr = std::process::Command::new("ffmpeg")
        .args(["-v", "info", "-i"])
        .arg(&single)
        .arg("-i")
        .arg(&chunked)
        .args(["-lavfi", "[0:v][1:v]psnr=stats_file=-", "-f", "null", "-"])
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&psnr.stdout);
    let per_frame: Vec<f64> = stats
        .lines()
        .filter_map(|l| l.split_whitespace().find_map(|f| f.strip_prefix("psnr_avg:")))
        .map(|v| if v == "inf" { f64::INFINITY } else { v.parse().unwrap() })
        .collect();
    let worst = per_frame.iter().copied().fold(f64::INFINITY, f64::min);
    let differing: Vec<(usize, f64)> = per_frame.iter().copied().enumerate().filter(|(_, p)| *p < 35.0).collect();
    println!("worst frame PSNR chunked vs one piece: {worst} dB; frames under 35 dB: {differing:?}");
    assert!(differing.is_empty(), "frames that differ from the one-piece transcode: {differing:?}");

    let tiles = ["640:360:0:0", "640:360:640:0", "640:360:0:360"].map(String::from);
    let single_report = fleet_tests::sync::check(&single, &tiles, 30.0, 1, duration(&single).floor() as usize - 1);
    let report = fleet_tests::sync::check(&chunked, &tiles, 30.0, 1, duration(&chunked).floor() as usize - 1);
    let mut summary = serde_json::to_value(&report).unwrap();
    summary["offsets_ms"] = serde_json::json!(report.offsets_ms.len());
    eprintln!("chunked sync report: {summary}");
    let mut single_summary = serde_json::to_value(&single_report).unwrap();
    single_summary["offsets_ms"] = serde_json::json!(single_report.offsets_ms.len());
    eprintln!("one-piece sync report: {single_summary}");
    // What is tested here is the chunking: every marker of the one-piece transcode is in the chunked one.
    // The capture itself is held to the issue's 99 % by the minute-long test above; this short one runs
    // beside it, and on a loaded 2-core CI machine the chunked output once had 38 of 39 markers (with identical
    // pictures, PSNR 74 dB; the one-piece count was not recorded then, hence the report of both).
    let lost_by_chunking: Vec<&String> = report.missing.iter().filter(|m| !single_report.missing.contains(m)).collect();
    assert!(lost_by_chunking.is_empty(), "markers lost by chunking: {lost_by_chunking:?}; {summary}");
    assert!(single_report.found_ratio >= 0.95, "markers found in the one-piece transcode: {:?}", single_report.missing);
    // The capture's own jitter (a test machine's busy moment delays a frame of the synthetic source) is in
    // both transcodes alike; chunking may add none of its own.
    assert!(report.p95_abs_offset_ms <= 40.0, "{summary}");
    assert!(
        report.max_cadence_drift_ms <= single_report.max_cadence_drift_ms.max(20.0) + 1.0,
        "chunking moved markers off their cadence: chunked {summary}, one piece {single_summary}"
    );
    let shift = (report.mean_offset_ms - single_report.mean_offset_ms).abs();
    println!("mean A/V offset: chunked {:.1} ms, one piece {:.1} ms", report.mean_offset_ms, single_report.mean_offset_ms);
    assert!(shift <= 34.0, "chunking moved the pictures against the sound by {shift:.1} ms (more than a frame)");
}

/// A recording paused for 4 s and resumed: the MP4 leaves the pause out (its length is the capture's
/// less the pause), its audio and video stay in step across the cut, nothing but the pause is lost (one
/// flash a second on both sides), and record and manifest list the pause.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_span_is_cut_from_the_mp4_in_sync() {
    let setup = Setup::local();
    let _recorder = setup.fleet.recorder("rec-a", "both", 2);
    let api = &setup.api;
    let id = api.start(r#"{"room":"pause","source":{"type":"test","participants":1}}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pause = |path: &'static str| {
        let id = id.clone();
        async move { api.send("POST", &format!("/v1/recordings/{id}/{path}"), Some(fleet_tests::API_KEY), None).await }
    };
    let paused = pause("pause").await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!(pause("pause").await.status, 200, "pausing a paused recording changes nothing");
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(pause("resume").await.status, 200);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(api.stop(&id).await.status, 202);
    assert_eq!(pause("pause").await.status, 409, "a stopping recording is not paused");
    let record = api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(180)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    let (mp4, manifest) = setup.read_output(&record);
    let path = setup.dir.path().join("paused.mp4");
    std::fs::write(&path, mp4).unwrap();

    let pauses = record["pauses"].as_array().expect("the record lists its pauses");
    assert_eq!(pauses.len(), 1, "{record:#}");
    assert_eq!(manifest["pauses"], record["pauses"]);
    // The capture's timeline marks the pause and the resume at the record's times.
    let timeline = std::fs::read_to_string(setup.root.join(format!("recordings/{id}/raw/s1/timeline.jsonl"))).unwrap();
    let marks: Vec<(String, u64)> = timeline
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["type"].as_str().is_some_and(|t| t.starts_with("recording_")))
        .map(|line| (line["type"].as_str().unwrap().to_string(), line["wall_ms"].as_u64().unwrap()))
        .collect();
    let expected = vec![
        ("recording_paused".to_string(), pauses[0]["from_ms"].as_u64().unwrap()),
        ("recording_resumed".to_string(), pauses[0]["until_ms"].as_u64().unwrap()),
    ];
    assert_eq!(marks, expected, "the timeline's pause marks");
    let paused_s = (pauses[0]["until_ms"].as_u64().unwrap() - pauses[0]["from_ms"].as_u64().unwrap()) as f64 / 1000.0;
    let session = &record["sessions"][0];
    let recorded_s = (session["ended_at_ms"].as_u64().unwrap() - session["started_at_ms"].as_u64().unwrap()) as f64 / 1000.0;
    let probe = ffprobe(&path);
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    println!("recorded {recorded_s:.3} s, paused {paused_s:.3} s, MP4 {duration:.3} s");
    assert!((duration - (recorded_s - paused_s)).abs() <= 0.15, "MP4 {duration} s, recorded {recorded_s} s less {paused_s} s paused");
    assert_eq!(fleet_tests::media::decode_errors(&path), "", "the MP4 decodes cleanly across the cut");
    let stream_s = |kind: &str| -> f64 {
        let streams = probe["streams"].as_array().unwrap();
        let stream = streams.iter().find(|s| s["codec_type"] == kind).unwrap();
        stream["duration"].as_str().unwrap().parse().unwrap()
    };
    assert!((stream_s("video") - stream_s("audio")).abs() <= 0.1, "video {} s, audio {} s", stream_s("video"), stream_s("audio"));

    // One participant fills the frame: its flashes keep a second apart except across the cut, where the
    // gap is shorter (what the pause took), never longer (nothing else lost).
    let onsets = fleet_tests::sync::flash_onsets(&path, "1280:720:0:0", 30.0);
    let gaps: Vec<f64> = onsets.windows(2).map(|w| w[1] - w[0]).collect();
    println!("flash onsets {onsets:.2?}");
    assert!(gaps.iter().all(|g| *g <= 1.07), "a gap longer than a second: {gaps:.3?}");
    assert!(onsets.len() as f64 >= duration.floor() - 1.0, "{} flashes in {duration} s", onsets.len());
    let report = fleet_tests::sync::check_paired(&path, &["1280:720:0:0".to_string()], 30.0, 0.5, duration - 0.5);
    let summary = serde_json::to_value(&report).unwrap();
    println!("sync across the cut: {summary}");
    assert!(report.p95_abs_offset_ms <= 40.0, "A/V offset: {summary}");
    assert!(report.found_ratio >= 0.8, "markers paired: {summary}");
    // The cut moves neither track against the other: audio is cut to the sample and the cut spans whole
    // frames, so the offsets after it are those before it.
    let (lowest, highest) = report.offsets_ms.iter().fold((f64::MAX, f64::MIN), |(lo, hi), o| (lo.min(*o), hi.max(*o)));
    assert!(highest - lowest <= 8.0, "the offset moved across the cut: {summary}");
}

/// A pause longer than the request's `max_pause_s` ends the recording; the MP4 holds what came before it.
#[tokio::test(flavor = "multi_thread")]
async fn a_pause_longer_than_max_pause_s_ends_the_recording() {
    let setup = Setup::local();
    let _recorder = setup.fleet.recorder("rec-a", "both", 2);
    let api = &setup.api;
    let id = api.start(r#"{"room":"pause-limit","source":{"type":"test","participants":1},"max_pause_s":2}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let paused = api.send("POST", &format!("/v1/recordings/{id}/pause"), Some(fleet_tests::API_KEY), None).await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    let record = api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(60)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    assert_eq!(record["end_reason"], "pause_limit", "{record:#}");
    let (mp4, _) = setup.read_output(&record);
    let path = setup.dir.path().join("limit.mp4");
    std::fs::write(&path, mp4).unwrap();
    let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
    let session = &record["sessions"][0];
    let before_pause_s = (record["pauses"][0]["from_ms"].as_u64().unwrap() - session["started_at_ms"].as_u64().unwrap()) as f64 / 1000.0;
    let ended_after_s = (session["ended_at_ms"].as_u64().unwrap() - record["pauses"][0]["from_ms"].as_u64().unwrap()) as f64 / 1000.0;
    println!("MP4 {duration:.3} s, paused after {before_pause_s:.3} s, ended {ended_after_s:.3} s into the pause");
    assert!((2.0..4.0).contains(&ended_after_s), "ended {ended_after_s} s into a pause of at most 2 s");
    assert!((duration - before_pause_s).abs() <= 0.15, "MP4 {duration} s, {before_pause_s} s before the pause");
}
