//! The media path without the fleet around it: capture a synthetic room into segments, composite them
//! into an MP4, and check the result with our MP4 reader and with ffprobe/ffmpeg.

use fleet_pipelines::segment_reader::{SegmentFile, TrackInput};
use fleet_pipelines::synthetic_room::{CaptureEvent, SyntheticRoom, SyntheticRoomConfig};
use fleet_pipelines::{encoders, mp4_info, transcode};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

/// Records a synthetic room for `millis`; returns its tracks' segments (placed at `offset_ns`), the
/// recorded length and how many segments were closed.
fn capture(dir: &std::path::Path, participants: u8, millis: u64, offset_ns: u64) -> (Vec<TrackInput>, u64, usize) {
    let config = SyntheticRoomConfig {
        participants,
        width: 320,
        height: 180,
        fps: 30,
        video_bitrate_bps: 300_000,
        segment_ns: 2_000_000_000,
        out_dir: dir.to_path_buf(),
    };
    let (tx, rx) = mpsc::channel();
    let room = SyntheticRoom::start(&config, move |event| {
        let _ = tx.send(event);
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(millis));
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
    let tracks = room
        .tracks()
        .iter()
        .map(|track| {
            let mut files: Vec<_> = std::fs::read_dir(&track.dir).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            TrackInput::new(
                format!("{}/{}", track.participant, track.track),
                files.into_iter().map(|path| SegmentFile::whole(path, offset_ns)).collect(),
            )
        })
        .collect();
    (tracks, recorded_ns, closed)
}

fn cpu_encoder() -> String {
    encoders::probe().into_iter().find(|e| !encoders::is_hardware(e)).expect("a CPU encoder")
}

fn spec(tracks: Vec<TrackInput>, duration_ns: u64, output: std::path::PathBuf) -> transcode::TranscodeSpec {
    transcode::TranscodeSpec {
        tracks,
        duration_ns,
        width: 640,
        height: 360,
        fps: 30,
        video_kbps: 1000,
        audio_bps: 128_000,
        audio_only: false,
        schedule: None,
        look: fleet_pipelines::look::Look::plain(),
        cuts: Default::default(),
        video_window: None,
        encoder: cpu_encoder(),
        speed_preset: Default::default(),
        output,
        stall_timeout: Duration::from_secs(30),
    }
}

/// Mean luma of the frame at `at_s` (whole frame), and peak audio level in [at_s, at_s + 0.3 s).
fn picture_and_sound(path: &std::path::Path, at_s: f64) -> (f64, i32) {
    let video = Command::new("ffmpeg")
        .args(["-v", "error", "-ss", &format!("{at_s:.3}"), "-i"])
        .arg(path)
        .args(["-frames:v", "1", "-vf", "scale=8:8,format=gray", "-f", "rawvideo", "-"])
        .output()
        .unwrap();
    let luma = video.stdout.iter().map(|&v| v as f64).sum::<f64>() / video.stdout.len().max(1) as f64;
    let audio = Command::new("ffmpeg")
        .args(["-v", "error", "-ss", &format!("{at_s:.3}"), "-t", "0.3", "-i"])
        .arg(path)
        .args(["-ac", "1", "-f", "s16le", "-"])
        .output()
        .unwrap();
    let peak = audio.stdout.chunks_exact(2).map(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs() as i32).max().unwrap_or(0);
    (luma, peak)
}

#[test]
fn a_gap_between_sessions_is_black_and_silent_at_its_place() {
    fleet_pipelines::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut tracks, first_ns, _) = capture(&dir.path().join("s1"), 1, 2500, 0);
    let gap_ns = 4_000_000_000;
    let (second, second_ns, _) = capture(&dir.path().join("s2"), 1, 2500, first_ns + gap_ns);
    for (track, more) in tracks.iter_mut().zip(second) {
        track.segments.extend(more.segments);
    }
    let output = dir.path().join("gap.mp4");
    let total_ns = first_ns + gap_ns + second_ns;
    transcode::run(&spec(tracks, total_ns, output.clone()), |_| {}).unwrap();
    let info = mp4_info::read(&output).unwrap();
    assert!((info.duration_s - total_ns as f64 / 1e9).abs() < 0.1, "duration {}", info.duration_s);
    let gap_start = first_ns as f64 / 1e9;
    for at in [gap_start + 0.6, gap_start + 2.0, gap_start + 3.4] {
        let (luma, peak) = picture_and_sound(&output, at);
        assert!(luma < 30.0, "picture at {at:.2} s (inside the gap) has luma {luma}: not black");
        assert!(peak < 100, "sound at {at:.2} s (inside the gap) peaks at {peak}: not silent");
    }
    // Media on both sides of the gap: a participant's colour (not black) in each session.
    for at in [1.5, gap_start + 4.0 + 1.5] {
        let (luma, _) = picture_and_sound(&output, at);
        assert!(luma > 30.0, "picture at {at:.2} s should show the participant, luma {luma}");
    }
}

#[test]
fn synthetic_room_to_faststart_mp4() {
    fleet_pipelines::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tracks, recorded_ns, closed) = capture(&dir.path().join("raw"), 2, 4500, 0);
    // 4 tracks, 4.5 s in 2 s segments: at least 2 segments each.
    assert!(closed >= 8, "only {closed} segments closed");
    let output = dir.path().join("out.mp4");
    let spec = spec(tracks, recorded_ns, output.clone());
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

/// Damaged inputs: a segment cut in half, a segment with garbage written over its middle, and a
/// segment that is not Matroska at all. The transcode reads each as far as it goes, says what was
/// wrong with which file, and still gives a clean MP4 of the full length.
#[test]
fn damaged_segments_are_read_as_far_as_they_go_and_reported() {
    fleet_pipelines::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tracks, recorded_ns, _) = capture(&dir.path().join("raw"), 1, 6500, 0);
    let video = tracks.iter().find(|t| t.name.ends_with("camera")).unwrap();
    let audio = tracks.iter().find(|t| t.name.ends_with("microphone")).unwrap();
    assert!(video.segments.len() >= 3 && audio.segments.len() >= 3, "{tracks:?}");
    let truncated = &video.segments[1].path;
    let bytes = std::fs::read(truncated).unwrap();
    std::fs::write(truncated, &bytes[..bytes.len() / 2]).unwrap();
    let scribbled = &audio.segments[1].path;
    let mut bytes = std::fs::read(scribbled).unwrap();
    // The garbage starts on a cluster's header past the middle: garbage inside frame payloads alone can
    // decode without complaint (it did, now and then), a broken cluster header cannot.
    const CLUSTER_ID: [u8; 4] = [0x1F, 0x43, 0xB6, 0x75];
    let clusters: Vec<usize> = bytes.windows(4).enumerate().filter(|(_, w)| *w == CLUSTER_ID).map(|(i, _)| i).collect();
    assert!(clusters.len() >= 2, "a 2 s audio segment has several clusters");
    let start = clusters.iter().copied().find(|&i| i >= bytes.len() / 2).unwrap_or(clusters[clusters.len() - 1]);
    let end = (start + 2000).min(bytes.len());
    for (i, byte) in bytes[start..end].iter_mut().enumerate() {
        *byte = (i * 7919 % 251) as u8;
    }
    std::fs::write(scribbled, bytes).unwrap();
    let not_matroska = &video.segments[2].path;
    std::fs::write(not_matroska, b"this is not a matroska file").unwrap();

    let output = dir.path().join("damaged.mp4");
    let report = transcode::run(&spec(tracks.clone(), recorded_ns, output.clone()), |_| {}).unwrap();
    println!("problems: {:#?}", report.problems);
    let mentions = |track: &TrackInput, path: &std::path::Path| {
        let name = format!("{}: {}", track.name, path.file_name().unwrap().to_string_lossy());
        report.problems.iter().any(|p| p.starts_with(&name))
    };
    assert!(mentions(video, truncated), "the truncated segment is reported: {:?}", report.problems);
    assert!(mentions(video, not_matroska), "the foreign file is reported: {:?}", report.problems);
    assert!(mentions(audio, scribbled), "the scribbled segment is reported: {:?}", report.problems);
    let info = mp4_info::read(&output).unwrap();
    let recorded_s = recorded_ns as f64 / 1e9;
    assert!((info.duration_s - recorded_s).abs() < 0.2, "duration {} vs recorded {recorded_s}", info.duration_s);
    let decode = Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(&output).args(["-f", "null", "-"]).output().unwrap();
    assert!(decode.stderr.is_empty(), "{}", String::from_utf8_lossy(&decode.stderr));
}

/// GStreamer's opusenc stamps its first packet up to 6.5 ms off the others (the encoder delay clipped
/// at the start); a synthetic room's first segment then started with such a packet. The mix must place
/// every later packet by its own timestamp: the beeps stay on their whole seconds.
#[test]
fn a_mistimed_first_audio_packet_does_not_shift_the_rest() {
    use fleet_pipelines::clip::{Clip, ClipCodec, ClipSpec};
    use fleet_pipelines::track_writer::{TrackCodec, TrackWriter, TrackWriterEvent};
    fleet_pipelines::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clip_spec = ClipSpec {
        codec: ClipCodec::Opus,
        participant_index: 0,
        width: 320,
        height: 180,
        fps: 30,
        video_bitrate_bps: 0,
        seconds: 3,
        camera_like: false,
    };
    let clip = Clip::load_or_encode(&clip_spec, &dir.path().join("clips")).unwrap();
    let track_dir = dir.path().join("raw/participant-1/microphone");
    std::fs::create_dir_all(&track_dir).unwrap();
    let (events_tx, events) = mpsc::channel();
    let writer = TrackWriter::start(&track_dir, 2_000_000_000, TrackCodec::Opus, false, &clip.frames[0].data, move |event| {
        let _ = events_tx.send(event);
    })
    .unwrap();
    for (index, frame) in clip.frames.iter().enumerate() {
        let late_ns = if index == 0 { 6_000_000 } else { 0 };
        writer.push(frame.pts_ns + late_ns, 20_000_000, &frame.data, true).unwrap();
    }
    writer.finish();
    loop {
        match events.recv_timeout(Duration::from_secs(20)).expect("the writer finishes") {
            TrackWriterEvent::Finished => break,
            TrackWriterEvent::Failed(err) => panic!("{err}"),
            _ => {}
        }
    }
    let tracks = fleet_pipelines::segment_reader::session_tracks(&dir.path().join("raw")).unwrap();
    let output = dir.path().join("beeps.m4a");
    let spec = transcode::TranscodeSpec { audio_only: true, ..spec(tracks, clip.duration_ns, output.clone()) };
    transcode::run(&spec, |_| {}).unwrap();

    let decoded =
        Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(&output).args(["-ac", "1", "-ar", "48000", "-f", "s16le", "-"]).output().unwrap();
    let samples: Vec<i32> = decoded.stdout.chunks_exact(2).map(|s| i16::from_le_bytes([s[0], s[1]]) as i32).collect();
    for second in [1usize, 2] {
        let window = &samples[second * 48_000 - 12_000..second * 48_000 + 12_000];
        let peak = window.iter().map(|s| s.abs()).max().unwrap();
        assert!(peak > 1000, "no beep near {second} s");
        let onset = window.iter().position(|s| s.abs() > peak / 10).unwrap();
        let offset_ms = (onset as f64 - 12_000.0) / 48.0;
        assert!(offset_ms.abs() <= 1.0, "the beep at {second} s starts {offset_ms:.2} ms off its second");
    }
}

/// Decoded audio of `path`: 48 kHz stereo, as 16-bit samples (interleaved).
fn decoded_audio(path: &std::path::Path) -> Vec<i16> {
    let out =
        Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(path).args(["-vn", "-ac", "2", "-ar", "48000", "-f", "s16le", "-"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout.chunks_exact(2).map(|s| i16::from_le_bytes([s[0], s[1]])).collect()
}

/// Power ratio, in dB, of `reference` to its difference from `other` over the samples `range`.
fn snr_db(reference: &[i16], other: &[i16], range: std::ops::Range<usize>) -> f64 {
    let (mut signal, mut noise) = (0f64, 0f64);
    for i in range {
        let (a, b) = (reference[i] as f64, other[i] as f64);
        signal += a * a;
        noise += (a - b) * (a - b);
    }
    10.0 * (signal / noise.max(1.0)).log10()
}

/// A recording transcoded in chunks and joined has the audio of the one-piece transcode: the same
/// length, every sound in its place, and no click where two chunks meet (each chunk encodes its own
/// AAC frames with a pre- and post-roll; the join only lays them end to end).
#[test]
fn chunked_audio_joins_into_the_one_piece_audio() {
    fleet_pipelines::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tracks, recorded_ns, _) = capture(&dir.path().join("raw"), 2, 7000, 0);
    let whole = dir.path().join("whole.mp4");
    // The fleet's CPU encoder: its chunks' streams follow on from each other.
    let spec = |tracks, duration_ns, output| transcode::TranscodeSpec { encoder: "x264enc".into(), ..spec(tracks, duration_ns, output) };
    transcode::run(&spec(tracks.clone(), recorded_ns, whole.clone()), |_| {}).unwrap();
    let reference = decoded_audio(&whole);
    // Seams inside two tones (a click shows there, not in silence), on the 30 fps frame grid: 40 ms
    // into the first tone after 1 s, and into the next one at least 1 s later.
    let onset_after = |from_s: f64| -> f64 {
        let from = (from_s * 48_000.0) as usize * 2;
        let at = reference[from..].iter().position(|s| s.unsigned_abs() > 2000).expect("a tone") + from;
        (at / 2) as f64 / 48_000.0
    };
    // (Frame starts as the compositor stamps them: k * 1e9 / 30 rounded down.)
    let on_grid = |s: f64| (s * 30.0).floor() as u64 * 1_000_000_000 / 30;
    let first = on_grid(onset_after(1.0) + 0.04);
    let second = on_grid(onset_after(first as f64 / 1e9 + 1.0) + 0.04);
    let seams = [first, second];
    let mut chunks = Vec::new();
    for (start_ns, end_ns) in [(0, first), (first, second), (second, recorded_ns)] {
        let path = dir.path().join(format!("chunk-{}.mp4", chunks.len()));
        let window = Some(transcode::Window { start_ns, end_ns });
        transcode::run(&transcode::TranscodeSpec { video_window: window, ..spec(tracks.clone(), recorded_ns, path.clone()) }, |_| {}).unwrap();
        chunks.push(path);
    }
    let joined = dir.path().join("joined.mp4");
    fleet_pipelines::join::concat::run(&chunks, &joined).unwrap();
    assert_eq!(decode_errors(&joined), "");
    assert!(fleet_pipelines::mp4_info::read(&joined).unwrap().faststart, "the joined MP4 is not faststart");
    // Box by box, the chunks join into what the GStreamer remux makes of them: packet for packet.
    let remuxed = dir.path().join("remuxed.mp4");
    fleet_pipelines::join::remux::run(&chunks, &remuxed).unwrap();
    // (Each stream in decode order; the two interleave the streams differently in the file.)
    let (concat_packets, remux_packets) = (packets(&joined), packets(&remuxed));
    assert!(concat_packets.len() > 300, "few packets: {concat_packets:?}");
    let differing: Vec<_> = concat_packets.iter().zip(&remux_packets).filter(|(a, b)| a != b).take(5).collect();
    assert!(differing.is_empty() && concat_packets.len() == remux_packets.len(), "concat vs remux packets differ: {differing:?}");

    let audio_duration = |path: &std::path::Path| {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "a", "-show_entries", "stream=duration,nb_frames", "-of", "csv=p=0"])
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(audio_duration(&joined), audio_duration(&whole), "the audio track's length and frames, chunked vs one piece");
    let chunked = decoded_audio(&joined);
    println!("samples: one piece {}, chunked {}", reference.len() / 2, chunked.len() / 2);
    assert!(reference.len().abs_diff(chunked.len()) <= 2 * 1024 * 2, "lengths differ by more than a frame: {} vs {}", reference.len(), chunked.len());
    let len = reference.len().min(chunked.len());
    let overall = snr_db(&reference, &chunked, 0..len);
    // Around each seam (two frames each side of it), against the one-piece audio.
    let at_seams: Vec<f64> = seams
        .iter()
        .map(|&ns| {
            let centre = (ns as u128 * 48_000 / 1_000_000_000) as usize * 2;
            snr_db(&reference, &chunked, centre - 2 * 2048..(centre + 2 * 2048).min(len))
        })
        .collect();
    println!("chunked vs one-piece audio: {overall:.1} dB overall, at the seams {at_seams:.1?} dB");
    // Measured 36-71 dB overall and 38-90 dB at the seams over runs (each run captures anew); without the
    // pre-roll 15 dB overall and 8-10 dB at the seams.
    assert!(overall >= 25.0, "the chunked audio differs from the one-piece audio: {overall:.1} dB");
    assert!(at_seams.iter().all(|&db| db >= 20.0), "a seam differs from the one-piece audio: {at_seams:.1?} dB");
}

/// Every packet of the file: stream, timestamps, duration, size, flags and a hash of its bytes.
/// Stream by stream, each in decode order.
fn packets(path: &std::path::Path) -> Vec<String> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_data_hash",
            "CRC32",
            "-show_entries",
            "packet=stream_index,pts,dts,duration,size,flags,data_hash",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    lines.sort_by_key(|line| line.split(',').next().unwrap_or_default().to_string());
    lines
}

fn decode_errors(path: &std::path::Path) -> String {
    let out = Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(path).args(["-f", "null", "-"]).output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Chunks made by different encoders (a GPU node's and a CPU node's, or a fallback) join box by box:
/// each keeps its own H.264 parameter sets (the track gets one sample description per encoder) and its
/// frames stay in place though the encoders delay them differently (x264 reorders, OpenH264 does not).
#[test]
fn chunks_from_two_encoders_join_into_one_playable_track() {
    fleet_pipelines::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tracks, recorded_ns, _) = capture(&dir.path().join("raw"), 1, 4500, 0);
    let seams = [1_500_000_000, 3_000_000_000];
    let windows = [(0, seams[0], "x264enc"), (seams[0], seams[1], "openh264enc"), (seams[1], recorded_ns, "x264enc")];
    let mut chunks = Vec::new();
    for (start_ns, end_ns, encoder) in windows {
        let path = dir.path().join(format!("chunk-{}.mp4", chunks.len()));
        let window = Some(transcode::Window { start_ns, end_ns });
        let spec = transcode::TranscodeSpec { encoder: encoder.into(), video_window: window, ..spec(tracks.clone(), recorded_ns, path.clone()) };
        transcode::run(&spec, |_| {}).unwrap();
        chunks.push(path);
    }
    let joined = dir.path().join("joined.mp4");
    fleet_pipelines::join::concat::run(&chunks, &joined).unwrap();
    assert_eq!(decode_errors(&joined), "");
    let video = |path: &std::path::Path| -> Vec<f64> {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v", "-show_entries", "frame=best_effort_timestamp_time", "-of", "csv=p=0"])
            .arg(path)
            .output()
            .unwrap();
        // (A frame with side data gets a second column, and a line of its own.)
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split(',').next().unwrap_or_default().trim().parse().unwrap_or_else(|_| panic!("frame line {l:?}")))
            .collect()
    };
    let frames = video(&joined);
    let per_chunk: Vec<usize> = chunks.iter().map(|c| video(c).len()).collect();
    println!("frames: joined {}, chunks {per_chunk:?}", frames.len());
    assert_eq!(frames.len(), per_chunk.iter().sum::<usize>(), "every chunk's frames are in the joined track");
    // Shown one frame period (1/30 s) apart, from 0, with no frame moved by the other encoder's delay.
    let steps: Vec<f64> = frames.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(frames[0].abs() < 0.001, "the first frame shows at {} s", frames[0]);
    assert!(steps.iter().all(|s| (s - 1.0 / 30.0).abs() < 0.002), "frames not evenly spaced: {steps:?}");
    // The moov comes first (faststart) and holds one avcC per distinct parameter set.
    let bytes = std::fs::read(&joined).unwrap();
    let moov = &bytes[..bytes.windows(4).position(|w| w == b"mdat").unwrap()];
    assert_eq!(moov.windows(4).filter(|w| w == b"avcC").count(), 2, "two sample descriptions for the video");
}

/// The remux (the join's fallback) finishes when each chunk's audio outlasts its video: one demuxer
/// feeds both streams, so they drift apart by the difference at every chunk, and a bounded queue that
/// filled with one stream while the muxer waited for the other stopped the join for good (an hour of
/// 10 s chunks with 5 ms of extra audio each stalled after about 1 s of drift). Here 2 s per chunk.
#[test]
fn remux_joins_chunks_whose_audio_outlasts_their_video() {
    fleet_pipelines::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let chunk = dir.path().join("chunk.mp4");
    // 1 s of video, about 3 s of audio (141 AAC frames).
    let description = format!(
        "videotestsrc num-buffers=30 ! video/x-raw,width=320,height=240,framerate=30/1 ! x264enc ! h264parse ! \
         mp4mux name=mux faststart=true ! filesink location={} \
         audiotestsrc num-buffers=141 samplesperbuffer=1024 ! audioconvert ! audio/x-raw,rate=48000,channels=2 ! \
         avenc_aac ! aacparse ! mux.",
        chunk.display()
    );
    let pipeline = gstreamer::parse::launch(&description).unwrap();
    use gstreamer::prelude::*;
    pipeline.set_state(gstreamer::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let end = bus.timed_pop_filtered(gstreamer::ClockTime::from_seconds(60), &[gstreamer::MessageType::Eos, gstreamer::MessageType::Error]);
    assert!(matches!(end.as_ref().map(|m| m.view()), Some(gstreamer::MessageView::Eos(_))), "encoding the chunk: {end:?}");
    pipeline.set_state(gstreamer::State::Null).unwrap();

    let chunks = vec![chunk.clone(), chunk.clone(), chunk];
    let remuxed = dir.path().join("remuxed.mp4");
    let (done, finished) = mpsc::channel();
    let (from, to) = (chunks.clone(), remuxed.clone());
    std::thread::spawn(move || done.send(fleet_pipelines::join::remux::run(&from, &to)));
    let result = finished.recv_timeout(Duration::from_secs(60)).expect("the remux stalled");
    result.unwrap();
    assert_eq!(decode_errors(&remuxed), "");
    let counts = |path: &std::path::Path| -> Vec<u64> {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-count_packets", "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().trim_end_matches(',').parse().ok()).collect()
    };
    let per_chunk = counts(&chunks[0]);
    assert_eq!(counts(&remuxed), per_chunk.iter().map(|c| c * 3).collect::<Vec<_>>(), "every chunk's packets in the remux");
}
