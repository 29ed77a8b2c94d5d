//! Whole-file transcodes (plugNmeet's post-recording and merge): inputs of different sizes, containers
//! and audio codecs, joined one after another into one clean, faststart MP4 at the output's size and rate.

use fleet_pipelines::file_transcode::{FileTranscodeSpec, run};
use fleet_pipelines::mp4_info;
use std::path::Path;
use std::process::Command;

fn make_input(path: &Path, size: &str, seconds: u32, audio_codec: &str) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", &format!("testsrc=size={size}:rate=25:duration={seconds}")])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency=440:duration={seconds}")])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-c:a", audio_codec, "-shortest"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn probe(path: &Path, entries: &str) -> String {
    let out = Command::new("ffprobe").args(["-v", "error", "-show_entries", entries, "-of", "csv=p=0"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn files_of_different_sizes_join_into_one_clean_mp4() {
    fleet_pipelines::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (dir.path().join("a.mp4"), dir.path().join("b.mkv"), dir.path().join("c.mp4"));
    make_input(&a, "640x360", 2, "aac");
    make_input(&b, "1280x720", 3, "pcm_s16le");
    make_input(&c, "320x240", 1, "aac");
    // A video-only input in the middle must neither stop nor hang the join.
    let silent = dir.path().join("silent.mp4");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=640x480:rate=25:duration=1", "-c:v", "libx264", "-preset", "ultrafast"])
        .arg(&silent)
        .status()
        .unwrap();
    assert!(status.success());
    let output = dir.path().join("out.mp4");
    let spec = FileTranscodeSpec {
        inputs: vec![a, b, silent, c],
        output: output.clone(),
        encoder: "x264enc".into(),
        speed_preset: Default::default(),
        width: 1280,
        height: 720,
        fps: 30,
        video_kbps: 1500,
        audio_bps: 128_000,
        stall_timeout: std::time::Duration::from_secs(30),
    };
    run(&spec).unwrap();
    let decode = Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(&output).args(["-f", "null", "-"]).output().unwrap();
    let errors = String::from_utf8_lossy(&decode.stderr);
    assert!(errors.is_empty(), "decoding printed: {errors}");
    let info = mp4_info::read(&output).unwrap();
    assert!(info.faststart);
    assert!((info.duration_s - 7.0).abs() < 0.1, "{} s for 2 + 3 + 1 + 1 s of video", info.duration_s);
    assert_eq!(probe(&output, "stream=codec_name,profile,width,height,r_frame_rate"), "h264,High,1280,720,30/1\naac,LC,0/0");
}

#[test]
fn a_missing_input_is_an_error_before_anything_runs() {
    fleet_pipelines::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = FileTranscodeSpec {
        inputs: vec![dir.path().join("nope.mp4")],
        output: dir.path().join("out.mp4"),
        encoder: "x264enc".into(),
        speed_preset: Default::default(),
        width: 640,
        height: 360,
        fps: 30,
        video_kbps: 800,
        audio_bps: 128_000,
        stall_timeout: std::time::Duration::from_secs(30),
    };
    let err = run(&spec).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    assert!(!dir.path().join("out.mp4").exists());
}
