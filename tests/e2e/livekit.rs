//! Capturing LiveKit rooms (issue 3): a recorder joins a devroom room as a hidden subscriber, follows
//! who joins, leaves and mutes, writes every track to segments, and ends when the room closes.

use fleet_tests::devroom::Devroom;
use fleet_tests::media::{decode_errors, ffprobe};
use fleet_tests::{Setup, bin_path};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ROOM_SCENARIO: &str = r#"
[[rooms]]
name = "lk-three"
close_after_s = 20

[[rooms.participants]]
identity = "alice"
video_codec = "vp8"

[[rooms.participants]]
identity = "bob"
video_codec = "h264"
join_at_s = 5
leave_at_s = 12

[[rooms.participants]]
identity = "carol"
mute_camera = [[8, 10]]
"#;

fn timeline(root: &Path, id: &str) -> Vec<Value> {
    let path = root.join(format!("recordings/{id}/raw/s1/timeline.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Start and end (seconds) of one track's media across its segments, read back with ffprobe.
fn track_span(dir: &Path) -> (f64, f64, usize) {
    let mut segments: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    segments.sort();
    let mut start = f64::MAX;
    let mut end: f64 = 0.0;
    for segment in &segments {
        assert_eq!(decode_errors(segment), "", "{} must decode cleanly", segment.display());
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

#[tokio::test(flavor = "multi_thread")]
async fn records_a_livekit_room_until_it_closes() {
    let mut setup = Setup::local();
    let devroom = Devroom::start(setup.dir.path(), ROOM_SCENARIO);
    setup.fleet.recorder_extra = devroom.recorder_toml(60);
    let _recorder = setup.fleet.recorder("rec-1", "both", 2);

    let id = setup.api.start(r#"{"room":"lk-three"}"#).await;
    let record = setup.api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(120)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    assert_eq!(record["end_reason"], "room_closed", "{record:#}");

    // The timeline follows the room.
    let entries = timeline(&setup.root, &id);
    for e in &entries {
        println!("{e}");
    }
    let room_open_ms = entries[0]["wall_ms"].as_u64().unwrap();
    let at = |kind: &str, pred: &dyn Fn(&Value) -> bool| -> f64 {
        let e = entries.iter().find(|e| e["type"] == kind && pred(e)).unwrap_or_else(|| panic!("no {kind} entry"));
        (e["wall_ms"].as_u64().unwrap() as f64 - room_open_ms as f64) / 1000.0
    };
    let bob_joined = at("participant_joined", &|e| e["identity"] == "bob");
    let bob_left = at("participant_left", &|e| e["participant"] == "bob");
    let carol_muted = at("track_muted", &|e| e["participant"] == "carol" && e["muted"] == true);
    let carol_unmuted = at("track_muted", &|e| e["participant"] == "carol" && e["muted"] == false);
    println!("bob joined {bob_joined:.2} left {bob_left:.2}; carol muted {carol_muted:.2} unmuted {carol_unmuted:.2}");
    assert!((bob_joined - 5.0).abs() < 0.5 && (bob_left - 12.0).abs() < 0.5);
    assert!((carol_muted - 8.0).abs() < 0.5 && (carol_unmuted - 10.0).abs() < 0.5);

    // Every track has decodable segments covering its span.
    let media = setup.root.join(format!("recordings/{id}/raw/s1"));
    let mut tracks = 0;
    for participant in ["alice", "bob", "carol"] {
        for track in std::fs::read_dir(media.join(participant)).unwrap() {
            let track = track.unwrap().path();
            let (start, end, segments) = track_span(&track);
            println!("{participant}/{}: {start:.2}..{end:.2} s in {segments} segments", track.file_name().unwrap().to_string_lossy());
            tracks += 1;
        }
    }
    assert_eq!(tracks, 6, "two tracks for each of three participants");

    let (mp4, _) = setup.read_output(&record);
    let path = setup.dir.path().join("out.mp4");
    std::fs::write(&path, &mp4).unwrap();
    assert_eq!(decode_errors(&path), "");
    let probe = ffprobe(&path);
    println!("duration {}", probe["format"]["duration"]);
    let _ = bin_path("devroom");
}
