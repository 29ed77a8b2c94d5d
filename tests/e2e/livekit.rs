//! Capturing LiveKit rooms (issue 3): a recorder joins a devroom room as a hidden subscriber, follows
//! who joins, leaves, mutes and shares, writes every track (VP8, H.264, Opus) to segments, and ends
//! when the room closes, stays empty, or cannot be joined.

use fleet_tests::Setup;
use fleet_tests::devroom::Devroom;
use fleet_tests::media::{decode_errors, ffprobe};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const THREE_PARTICIPANTS: &str = r#"
[[rooms]]
name = "lk-three"
close_after_s = 20

[[rooms.participants]]
identity = "alice"
video_codec = "vp8"
speaking = [[2, 4]]

[[rooms.participants]]
identity = "bob"
video_codec = "h264"
join_at_s = 5
leave_at_s = 12

[[rooms.participants]]
identity = "carol"
mute_camera = [[8, 10]]
screen_share = [[14, 17]]
speaking = [[4, 6]]
"#;

/// When the test cuts the recorder's signalling connection (seconds after the room opened).
const SIGNALLING_DROP_AT_S: f64 = 15.5;

/// How far a track's first or last media may sit from when the room says it began or ended.
const SPAN_TOLERANCE_S: f64 = 0.3;

fn timeline(root: &Path, id: &str) -> Vec<Value> {
    let path = root.join(format!("recordings/{id}/raw/s1/timeline.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Start and end (seconds of session running time) of one track's media across its segments, read
/// back with ffprobe; every segment must decode cleanly.
fn track_span(dir: &Path) -> (f64, f64, usize) {
    let mut segments: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    segments.sort();
    let mut start = f64::MAX;
    let mut end: f64 = 0.0;
    for segment in &segments {
        let errors = decode_errors(segment);
        if !errors.is_empty() {
            // Keep the evidence: the test directory is removed when the test ends.
            let keep = std::env::temp_dir().join(format!("undecodable-{}", segment.file_name().unwrap().to_string_lossy()));
            let _ = std::fs::copy(segment, &keep);
            panic!("{} must decode cleanly (copied to {}): {errors}", segment.display(), keep.display());
        }
        let output = Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0"])
            .arg(segment)
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let mut fields = line.split(',');
            let Some(Ok(pts)) = fields.next().map(str::parse::<f64>) else { continue };
            let duration = fields.next().and_then(|d| d.parse::<f64>().ok()).unwrap_or(0.0);
            start = start.min(pts);
            end = end.max(pts + duration);
        }
    }
    (start, end, segments.len())
}

fn running_s(entry: &Value) -> f64 {
    entry["running_ns"].as_f64().unwrap() / 1e9
}

#[tokio::test(flavor = "multi_thread")]
async fn records_a_livekit_room_until_it_closes() {
    let mut setup = Setup::local();
    let devroom = Devroom::start(setup.dir.path(), THREE_PARTICIPANTS);
    setup.fleet.recorder_extra = devroom.recorder_toml(60);
    let _recorder = setup.fleet.recorder("rec-1", "both", 2);

    let id = setup.api.start(r#"{"room":"lk-three"}"#).await;
    setup.api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    // Cut the signalling connection mid-recording: the recorder rejoins and keeps recording.
    let created_ms = devroom.room_state("lk-three").await.expect("room open")["created_ms"].as_u64().unwrap();
    let drop_at = std::time::UNIX_EPOCH + Duration::from_millis(created_ms) + Duration::from_secs_f64(SIGNALLING_DROP_AT_S);
    tokio::time::sleep(drop_at.duration_since(std::time::SystemTime::now()).unwrap_or_default()).await;
    devroom.drop_signalling("lk-three").await;
    let record = setup.api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(120)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    assert_eq!(record["end_reason"], "room_closed", "{record:#}");

    // The timeline follows the room; times are from when the room opened (alice was there from the start).
    let entries = timeline(&setup.root, &id);
    let find = |kind: &str, pred: &dyn Fn(&Value) -> bool| -> &Value {
        entries.iter().find(|e| e["type"] == kind && pred(e)).unwrap_or_else(|| panic!("no {kind} entry in {entries:#?}"))
    };
    // The room opened (devroom's clock) at this running time of the capture session.
    let room = devroom.room_state("lk-three").await.expect("devroom still knows the room");
    let session_wall_zero_ms = entries[0]["wall_ms"].as_f64().unwrap() - running_s(&entries[0]) * 1000.0;
    let opened = (room["created_ms"].as_f64().unwrap() - session_wall_zero_ms) / 1000.0;
    let alice_joined = running_s(find("participant_joined", &|e| e["identity"] == "alice")) - opened;
    println!("alice's join reached the timeline {alice_joined:.3} s after the room opened");
    let at = |kind: &str, pred: &dyn Fn(&Value) -> bool| running_s(find(kind, pred)) - opened;
    let bob_joined = at("participant_joined", &|e| e["identity"] == "bob");
    let bob_left = at("participant_left", &|e| e["participant"] == "bob");
    let carol_muted = at("track_muted", &|e| e["participant"] == "carol" && e["muted"] == true);
    let carol_unmuted = at("track_muted", &|e| e["participant"] == "carol" && e["muted"] == false);
    let share = find("track_published", &|e| e["source"] == "screen_share");
    let share_started = running_s(share) - opened;
    let share_track = share["track"].as_str().unwrap().to_string();
    let share_stopped = at("track_unpublished", &|e| e["track"] == share_track.as_str());
    let closed = at("session_ended", &|_| true);
    println!(
        "room opened at {opened:.3} s of the session; bob joined {bob_joined:.2} left {bob_left:.2}; carol muted {carol_muted:.2} \
         unmuted {carol_unmuted:.2}, shared {share_started:.2}..{share_stopped:.2}; closed {closed:.2}"
    );
    for (what, measured, expected) in [
        ("alice joined", alice_joined, 0.0),
        ("bob joined", bob_joined, 5.0),
        ("bob left", bob_left, 12.0),
        ("carol muted", carol_muted, 8.0),
        ("carol unmuted", carol_unmuted, 10.0),
        ("screen share started", share_started, 14.0),
        ("screen share stopped", share_stopped, 17.0),
        ("room closed", closed, 20.0),
    ] {
        assert!((measured - expected).abs() <= 0.3, "{what} at {measured:.2} s, expected {expected} s");
    }
    assert!(entries.iter().any(|e| e["type"] == "sender_report"), "sender reports are logged");
    let rejoined = at("rejoined", &|_| true);
    println!("rejoined {:.2} s after the signalling drop", rejoined - SIGNALLING_DROP_AT_S);
    assert!(rejoined - SIGNALLING_DROP_AT_S < 2.0, "rejoined at {rejoined:.2} s");

    // Active speakers as the room announced them: alice 2-4 s, carol 4-6 s.
    let speakers: Vec<(f64, Vec<String>)> = entries
        .iter()
        .filter(|e| e["type"] == "active_speakers")
        .map(|e| (running_s(e) - opened, e["participants"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()))
        .collect();
    println!("active speakers: {speakers:?}");
    let first_with = |who: &[&str]| speakers.iter().find(|(_, s)| s == who).map(|(t, _)| *t).unwrap_or(f64::NAN);
    assert!((first_with(&["alice"]) - 2.0).abs() <= 0.3, "{speakers:?}");
    assert!((first_with(&["carol"]) - 4.0).abs() <= 0.3, "{speakers:?}");
    assert!(speakers.iter().any(|(t, s)| s.is_empty() && (t - 6.0).abs() <= 0.3), "{speakers:?}");

    // Every track has decodable segments covering the time its publisher was in the room.
    let media = setup.root.join(format!("recordings/{id}/raw/s1"));
    let expected_span = |participant: &str, track: &str| -> (f64, f64) {
        match (participant, track == share_track) {
            ("bob", _) => (5.0, 12.0),
            ("carol", true) => (14.0, 17.0),
            _ => (0.0, 20.0),
        }
    };
    let mut tracks = 0;
    for participant in ["alice", "bob", "carol"] {
        for track in std::fs::read_dir(media.join(participant)).unwrap() {
            let track = track.unwrap().path();
            let name = track.file_name().unwrap().to_string_lossy().to_string();
            let (start, end, segments) = track_span(&track);
            let (from, to) = expected_span(participant, &name);
            let (start, end) = (start - opened, end - opened);
            println!("{participant}/{name}: {start:.2}..{end:.2} s (expected {from}..{to}) in {segments} segments");
            assert!(start - from <= SPAN_TOLERANCE_S && start >= from - 0.05, "{participant}/{name} starts at {start:.2} s, expected {from}");
            assert!((end - to).abs() <= SPAN_TOLERANCE_S, "{participant}/{name} ends at {end:.2} s, expected {to}");
            tracks += 1;
        }
    }
    assert_eq!(tracks, 7, "camera and microphone of three participants, and one screen share");

    let (mp4, _) = setup.read_output(&record);
    let path = setup.dir.path().join("out.mp4");
    std::fs::write(&path, &mp4).unwrap();
    assert_eq!(decode_errors(&path), "");
    let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - 20.0).abs() < 0.5, "the MP4 lasts {duration} s");
}

const EDGE_ROOMS: &str = r#"
[[rooms]]
name = "lk-lossy"
close_after_s = 10
loss_percent = 5

[[rooms.participants]]
identity = "vp8-user"
video_codec = "vp8"

[[rooms.participants]]
identity = "h264-user"
video_codec = "h264"

[[rooms]]
name = "lk-emptying"

[[rooms.participants]]
identity = "leaver"
leave_at_s = 3
"#;

/// Packet loss, a room that empties, a room that does not exist: each ends the job as it should.
#[tokio::test(flavor = "multi_thread")]
async fn lossy_empty_and_missing_rooms() {
    let mut setup = Setup::local();
    let devroom = Devroom::start(setup.dir.path(), EDGE_ROOMS);
    setup.fleet.recorder_extra = devroom.recorder_toml(3);
    let _recorder = setup.fleet.recorder("rec-1", "both", 4);

    let lossy = setup.api.start(r#"{"room":"lk-lossy"}"#).await;
    let emptying = setup.api.start(r#"{"room":"lk-emptying"}"#).await;
    let missing = setup.api.start(r#"{"room":"lk-nowhere"}"#).await;

    let record = setup.api.wait_for_state(&missing, &["complete", "failed"], Duration::from_secs(30)).await;
    assert_eq!(record["state"], "failed");
    let error = record["error"].as_str().unwrap();
    assert!(error.contains("requested room does not exist"), "{error}");

    let record = setup.api.wait_for_state(&emptying, &["complete", "failed"], Duration::from_secs(60)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    assert_eq!(record["end_reason"], "room_empty");
    let session = &record["sessions"][0];
    let lasted = (session["ended_at_ms"].as_u64().unwrap() - session["started_at_ms"].as_u64().unwrap()) as f64 / 1000.0;
    assert!((5.5..9.0).contains(&lasted), "left at 3 s + 3 s empty timeout, but the capture lasted {lasted} s");

    // 5 % of RTP lost on the way: NACK/RTX and keyframe requests keep every segment decodable.
    let record = setup.api.wait_for_state(&lossy, &["complete", "failed"], Duration::from_secs(90)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    assert_eq!(record["end_reason"], "room_closed");
    let media = setup.root.join(format!("recordings/{lossy}/raw/s1"));
    for participant in ["vp8-user", "h264-user"] {
        let tracks: Vec<_> = std::fs::read_dir(media.join(participant)).unwrap().map(|t| t.unwrap().path()).collect();
        assert_eq!(tracks.len(), 2, "{participant}: camera and microphone");
        for track in tracks {
            let (start, end, segments) = track_span(&track);
            println!("lossy {participant}/{}: {start:.2}..{end:.2} s in {segments} segments", track.file_name().unwrap().to_string_lossy());
            assert!(end - start > 8.0, "{participant}: only {:.2} s of media", end - start);
        }
    }
}

/// A recorder with the wrong LiveKit secret fails the job with the server's reason.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_secret_fails_the_job_with_the_reason() {
    let mut setup = Setup::local();
    let devroom = Devroom::start(setup.dir.path(), THREE_PARTICIPANTS);
    setup.fleet.recorder_extra = devroom.recorder_toml_with_secret(60, "not-the-secret-not-the-secret-0000");
    let _recorder = setup.fleet.recorder("rec-1", "both", 1);
    let id = setup.api.start(r#"{"room":"lk-three"}"#).await;
    let record = setup.api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(30)).await;
    assert_eq!(record["state"], "failed");
    let error = record["error"].as_str().unwrap();
    println!("{error}");
    assert!(error.contains("401") && error.contains("invalid authorization token: InvalidSignature"), "{error}");
    // The room never saw the recorder.
    assert!(devroom.room_state("lk-three").await.is_none_or(|room| room["subscribers"] == 0));
}

const SYNC_ROOM: &str = r#"
[[rooms]]
name = "lk-sync"
close_after_s = 30

[[rooms.participants]]
identity = "p1"

[[rooms.participants]]
identity = "p2"
video_codec = "h264"

[[rooms.participants]]
identity = "p3"
join_at_s = 0.4
"#;

/// A/V sync of a captured LiveKit room, measured in the final MP4: each participant's flash and beep,
/// sent together by devroom, land together. The transcoder lines each participant's tracks up from the
/// RTCP sender reports in the timeline (arrival times alone left up to ~30 ms between them).
#[tokio::test(flavor = "multi_thread")]
async fn captured_room_is_in_sync() {
    let mut setup = Setup::local();
    let devroom = Devroom::start(setup.dir.path(), SYNC_ROOM);
    setup.fleet.recorder_extra = devroom.recorder_toml(60);
    let _recorder = setup.fleet.recorder("rec-1", "both", 1);
    let id = setup.api.start(r#"{"room":"lk-sync"}"#).await;
    let record = setup.api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(180)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    let (mp4, _) = setup.read_output(&record);
    let path = setup.dir.path().join("sync.mp4");
    std::fs::write(&path, &mp4).unwrap();
    let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
    // Tiles in the grid follow the participants' directory order: p1, p2, p3.
    let tiles = ["640:360:0:0", "640:360:640:0", "640:360:0:360"].map(String::from);
    let report = fleet_tests::sync::check_paired(&path, &tiles, 30.0, 1.0, duration - 1.0);
    let mut summary = serde_json::to_value(&report).unwrap();
    summary["offsets_ms"] = serde_json::json!(report.offsets_ms.len());
    println!("livekit sync report: {summary}");
    println!("offsets (per tile, in order): {:?}", report.offsets_ms.iter().map(|o| o.round() as i64).collect::<Vec<_>>());
    assert!(report.found_ratio >= 0.95, "markers found: {summary}");
    assert!(report.p95_abs_offset_ms <= 40.0, "A/V offset: {summary}");
    assert!(report.max_cadence_drift_ms <= 20.0, "cadence drift: {summary}");
}

const GARBAGE_ROOM: &str = r#"
[[rooms]]
name = "lk-garbage"
close_after_s = 14

[[rooms.participants]]
identity = "p1-steady"

[[rooms.participants]]
identity = "p2-broken"
garbage = [[4.0, 8.0]]
"#;

/// A participant whose camera and microphone send random bytes for 4 s (in well-formed RTP, as a broken
/// or hostile client would): the recording completes and decodes cleanly, the job names the video that
/// could not be decoded, the other participant's picture keeps its beat throughout, and the broken
/// one's media before and after the garbage is kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_participant_sending_garbage_spoils_only_its_own_tile() {
    let mut setup = Setup::local();
    let devroom = Devroom::start(setup.dir.path(), GARBAGE_ROOM);
    setup.fleet.recorder_extra = devroom.recorder_toml(3);
    let _recorder = setup.fleet.recorder("rec-1", "both", 1);
    let id = setup.api.start(r#"{"room":"lk-garbage"}"#).await;
    let record = setup.api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(120)).await;
    println!("warnings: {:#}", record["warnings"]);
    assert_eq!(record["state"], "complete", "{record:#}");
    // The job says whose video could not be decoded; the steady participant is not named.
    let warnings: Vec<&str> = record["warnings"].as_array().map(|w| w.iter().filter_map(|w| w.as_str()).collect()).unwrap_or_default();
    // (A chunked transcode says which chunk: "chunk 0 (0-10 s): p2-broken/…".)
    assert!(warnings.iter().any(|w| w.contains("p2-broken/") && w.contains("video frames could not be decoded")), "{warnings:?}");
    assert!(!warnings.iter().any(|w| w.contains("p1-steady")), "{warnings:?}");
    assert!(!warnings.iter().any(|w| w.contains("no longer recorded")), "a track writer gave up on garbage: {warnings:?}");
    let path = setup.dir.path().join("garbage.mp4");
    std::fs::copy(setup.root.join(format!("recordings/{id}/{id}.mp4")), &path).unwrap();
    assert_eq!(decode_errors(&path), "", "the output decodes without an error");

    let steady = fleet_tests::sync::flash_onsets(&path, "640:360:0:180", 30.0);
    let broken = fleet_tests::sync::flash_onsets(&path, "640:360:640:180", 30.0);
    println!("steady flashes: {steady:.2?}\nbroken flashes: {broken:.2?}");
    let end = steady.last().copied().unwrap_or(0.0);
    assert!(end > 11.0, "the steady participant's flashes stop at {end:.2} s");
    let widest = steady.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(widest < 1.0 + 2.5 / 30.0, "the steady participant missed a flash: {widest:.2} s between two");
    // Garbage from about 4 s (the room opens a moment before the recorder joins) to 8 s; the decoder
    // picks up again at the next keyframe after it.
    // While it sends garbage its tile shows no flash (its last good frame stays, or it is blank).
    assert!(!broken.iter().any(|&t| (4.5..6.9).contains(&t)), "the garbage was shown as media");
    assert!(broken.iter().any(|&t| t < 3.0), "the broken participant's media before the garbage is kept");
    assert!(broken.iter().any(|&t| t > 10.0), "the broken participant's media after the garbage is kept");
    // Its microphone too: the garbage did not end the recording of its audio (the writer once failed on
    // it, and the rest of the track was lost). Its beep sounds with each flash after the garbage.
    let audio = fleet_tests::sync::decode_audio(&path);
    let tone = fleet_pipelines::markers::tone_hz(1);
    let power = |from_s: f64| {
        let from = (from_s * 48_000.0) as usize;
        audio.get(from..from + 2_400).map_or(0.0, |window| fleet_tests::sync::tone_power(window, tone))
    };
    for &flash in broken.iter().filter(|&&t| t > 9.0) {
        let (beep, quiet) = (power(flash), power(flash + 0.5));
        assert!(beep > 10.0 * quiet.max(1e-9), "no beep of the broken participant at {flash:.2} s ({beep:.2e} vs {quiet:.2e} after it)");
    }
}

const CODEC_SWITCH_ROOM: &str = r#"
[[rooms]]
name = "lk-codec-switch"
close_after_s = 12

[[rooms.participants]]
identity = "p1-switching"
video_codec = "vp8"
switch_codec_at_s = 6.0
"#;

/// A camera whose codec changes mid-track (VP8 → H.264 on the same SSRC, as LiveKit's SFU switches a
/// subscriber when the publisher falls back to its backup codec): the first writer closes, a new one
/// stores the track from the switch on as `<sid>-2`, the timeline says one replaced the other, every
/// segment decodes in its own codec, and the recording keeps the picture and its sync across the switch.
#[tokio::test(flavor = "multi_thread")]
async fn a_codec_change_mid_track_starts_a_new_writer() {
    let mut setup = Setup::local();
    let devroom = Devroom::start(setup.dir.path(), CODEC_SWITCH_ROOM);
    setup.fleet.recorder_extra = devroom.recorder_toml(60);
    let _recorder = setup.fleet.recorder("rec-1", "both", 1);
    let id = setup.api.start(r#"{"room":"lk-codec-switch"}"#).await;
    let record = setup.api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(120)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    assert!(record["warnings"].as_array().is_none_or(|w| w.is_empty()), "warnings: {record:#}");

    let entries = timeline(&setup.root, &id);
    let video: Vec<&Value> = entries.iter().filter(|e| e["type"] == "track_published" && e["kind"] == "video").collect();
    assert_eq!(video.len(), 2, "the camera, then its continuation in the new codec: {video:#?}");
    let (first, second) = (video[0]["track"].as_str().unwrap(), video[1]["track"].as_str().unwrap());
    assert_eq!(second, format!("{first}-2"));
    assert_eq!((video[0]["codec"].as_str(), video[1]["codec"].as_str()), (Some("vp8"), Some("h264")));
    assert_eq!(video[1]["source"], "camera");
    let replaced = entries.iter().find(|e| e["type"] == "track_unpublished" && e["track"] == first).expect("the first writer's track ends");
    let switch_s = running_s(replaced);
    println!("codec switched at {switch_s:.2} s of the session");

    let media = setup.root.join(format!("recordings/{id}/raw/s1/p1-switching"));
    for (track, codec) in [(first, "vp8"), (second, "h264")] {
        let dir = media.join(track);
        for segment in std::fs::read_dir(&dir).unwrap() {
            let segment = segment.unwrap().path();
            assert_eq!(decode_errors(&segment), "", "{}", segment.display());
            let probe = ffprobe(&segment);
            assert_eq!(fleet_tests::media::stream(&probe, "video")["codec_name"], codec, "{}", segment.display());
        }
        let (start, end, segments) = track_span(&dir);
        println!("{track}: {start:.2}..{end:.2} s in {segments} segments");
        if codec == "vp8" {
            assert!((end - switch_s).abs() < 0.3, "the VP8 writer ends at the switch: {end:.2} vs {switch_s:.2}");
        } else {
            assert!(start - switch_s < 0.3 && start >= switch_s - 0.05, "the H.264 writer starts at the switch: {start:.2} vs {switch_s:.2}");
        }
    }

    let (mp4, _) = setup.read_output(&record);
    let path = setup.dir.path().join("codec-switch.mp4");
    std::fs::write(&path, &mp4).unwrap();
    assert_eq!(decode_errors(&path), "");
    let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
    let report = fleet_tests::sync::check_paired(&path, &["1280:720:0:0".to_string()], 30.0, 1.0, duration - 1.0);
    let mut summary = serde_json::to_value(&report).unwrap();
    summary["offsets_ms"] = serde_json::json!(report.offsets_ms.len());
    println!("sync across the codec switch: {summary}");
    assert!(report.found_ratio >= 0.95, "markers found: {summary}");
    assert!(report.p95_abs_offset_ms <= 40.0, "A/V offset: {summary}");
}
