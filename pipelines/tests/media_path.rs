//! The media path without the fleet around it: capture a synthetic room into segments, composite them
//! into an MP4, and check the result with our MP4 reader and with ffprobe/ffmpeg.

use fleet_pipelines::segment_reader::{SegmentFile, TrackInput};
use fleet_pipelines::synthetic_room::{CaptureEvent, SyntheticRoom, SyntheticRoomConfig};
use fleet_pipelines::{encoders, mp4_info, transcode};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn synthetic_room_to_faststart_mp4() {
    fleet_pipelines::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = SyntheticRoomConfig {
        participants: 2,
        width: 320,
        height: 180,
        fps: 30,
        video_bitrate_bps: 300_000,
        segment_ns: 2_000_000_000,
        out_dir: dir.path().join("raw"),
    };
    let (tx, rx) = mpsc::channel();
    let room = SyntheticRoom::start(&config, move |event| {
        let _ = tx.send(event);
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(4500));
    room.stop();
    let recorded_ns = room.running_time_ns();
    let mut closed = 0;
    loop {
        match rx.recv_timeout(Duration::from_secs(10)).expect("capture finishes") {
            CaptureEvent::Fragment { fragment, .. } if !fragment.opened => closed += 1,
            CaptureEvent::Finished => break,
            CaptureEvent::Failed(err) => panic!("capture failed: {err}"),
            _ => {}
        }
    }
    // 4 tracks, 4.5 s in 2 s segments: at least 2 segments each.
    assert!(closed >= 8, "only {closed} segments closed");

    let tracks = room
        .tracks()
        .iter()
        .map(|track| {
            let mut files: Vec<_> = std::fs::read_dir(&track.dir).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            TrackInput {
                name: format!("{}/{}", track.participant, track.track),
                segments: files.into_iter().map(|path| SegmentFile { path, offset_ns: 0 }).collect(),
            }
        })
        .collect();
    let output = dir.path().join("out.mp4");
    let encoder = encoders::probe().into_iter().find(|e| !encoders::is_hardware(e)).expect("a CPU encoder");
    let spec = transcode::TranscodeSpec {
        tracks,
        duration_ns: recorded_ns,
        width: 640,
        height: 360,
        fps: 30,
        video_kbps: 1000,
        audio_bps: 128_000,
        audio_only: false,
        encoder,
        output: output.clone(),
        stall_timeout: Duration::from_secs(30),
    };
    let report = transcode::run(&spec, |_| {}).unwrap();
    assert_eq!((report.video_tracks, report.audio_tracks), (2, 2));
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    let info = mp4_info::read(&output).unwrap();
    assert!(info.faststart);
    assert_eq!(info.sample_entries, vec!["avc1", "mp4a"]);
    let recorded_s = recorded_ns as f64 / 1e9;
    assert!((info.duration_s - recorded_s).abs() < 0.2, "duration {} vs recorded {recorded_s}", info.duration_s);

    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name,profile,pix_fmt,sample_rate,channels", "-of", "compact"])
        .arg(&output)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(text.contains("codec_name=h264|profile=High|pix_fmt=yuv420p"), "{text}");
    assert!(text.contains("codec_name=aac|profile=LC|sample_rate=48000|channels=2"), "{text}");
    let decode = Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(&output).args(["-f", "null", "-"]).output().unwrap();
    assert!(decode.stderr.is_empty(), "{}", String::from_utf8_lossy(&decode.stderr));
}
