//! Join benchmark (`deploy/dev.sh bench`), written to `target/bench/join.json` with the machine it ran
//! on: the chunks of an N-minute recording (10 s chunks, the default; 1280x720 30 fps H.264 from the transcoder's own
//! encoder settings at its default 3000 kb/s, AAC 128 kb/s) joined into one faststart MP4, box by box (the
//! fleet's join) and by the GStreamer remux (the join before it, and still its fallback), alternately,
//! in the same run. Reports each one's medians and the ratio; both outputs are checked to hold every
//! chunk's packets.
//!
//! One chunk is encoded (noise, so x264 spends the whole bitrate) and the others are links to it: the
//! join reads them as it would the downloaded chunks of a recording.

use fleet_pipelines::encoders::{SpeedPreset, make_h264};
use fleet_tests::bench::{machine, median};
use gstreamer as gst;
use gstreamer::prelude::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

struct Options {
    minutes: u64,
    chunk_seconds: u64,
    repeats: usize,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = Options { minutes: 60, chunk_seconds: 10, repeats: 3 };
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--minutes", Some(v)) => o.minutes = v,
            ("--chunk-seconds", Some(v)) => o.chunk_seconds = v,
            ("--repeats", Some(v)) => o.repeats = v as usize,
            _ => panic!("usage: join_bench [--minutes M] [--chunk-seconds S] [--repeats R]"),
        }
    }
    o
}

fn main() {
    let o = options();
    fleet_pipelines::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("chunk-00000.mp4");
    eprintln!("encoding one {} s chunk", o.chunk_seconds);
    encode_chunk(&first, o.chunk_seconds);
    let count = (o.minutes * 60).div_ceil(o.chunk_seconds) as usize;
    let mut chunks = vec![first.clone()];
    for index in 1..count {
        let link = dir.path().join(format!("chunk-{index:05}.mp4"));
        std::fs::hard_link(&first, &link).unwrap();
        chunks.push(link);
    }
    let chunk_packets = packet_count(&first);

    let (mut concat_s, mut remux_s) = (Vec::new(), Vec::new());
    let (joined, remuxed) = (dir.path().join("joined.mp4"), dir.path().join("remuxed.mp4"));
    for round in 0..o.repeats {
        let started = Instant::now();
        fleet_pipelines::join::concat::run(&chunks, &joined).unwrap();
        concat_s.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        fleet_pipelines::join::remux::run(&chunks, &remuxed).unwrap();
        remux_s.push(started.elapsed().as_secs_f64());
        eprintln!("round {round}: concat {:.2} s, remux {:.2} s", concat_s[round], remux_s[round]);
    }
    let expected = chunk_packets * count as u64;
    for path in [&joined, &remuxed] {
        let found = packet_count(path);
        assert_eq!(found, expected, "{}: {found} packets, {count} chunks of {chunk_packets} expected", path.display());
        assert!(fleet_pipelines::mp4_info::read(path).unwrap().faststart, "{} is not faststart", path.display());
    }
    let (concat, remux) = (median(&mut concat_s), median(&mut remux_s));
    let report = json!({
        "machine": machine(),
        "what": format!("join the {count} chunks ({} s each) of a {}-minute recording into one faststart MP4: \
            box by box (fleet_pipelines::join::concat) vs the GStreamer remux (join::remux), alternately, {} rounds",
            o.chunk_seconds, o.minutes, o.repeats),
        "chunks": count,
        "chunk_bytes": std::fs::metadata(&first).unwrap().len(),
        "output_bytes": std::fs::metadata(&joined).unwrap().len(),
        "packets": expected,
        "concat_s": { "median": concat, "runs": concat_s },
        "remux_s": { "median": remux, "runs": remux_s },
        "remux_over_concat": remux / concat,
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/join.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

/// A chunk as a transcoder makes one: the fleet's H.264 encoder settings, AAC, faststart mp4mux.
fn encode_chunk(path: &Path, seconds: u64) {
    let pipeline = gst::Pipeline::new();
    let make = |name: &str| gst::ElementFactory::make(name).build().unwrap();
    let video = make("videotestsrc");
    video.set_property_from_str("pattern", "snow");
    video.set_property("num-buffers", (seconds * 30) as i32);
    let video_caps = make("capsfilter");
    video_caps.set_property(
        "caps",
        gst::Caps::builder("video/x-raw").field("width", 1280).field("height", 720).field("framerate", gst::Fraction::new(30, 1)).build(),
    );
    let encoder = make_h264("x264enc", 3000, 30, SpeedPreset::Veryfast).unwrap();
    let audio = make("audiotestsrc");
    audio.set_property("num-buffers", (seconds * 48_000 / 1024) as i32);
    audio.set_property("samplesperbuffer", 1024);
    let audio_caps = make("capsfilter");
    audio_caps.set_property("caps", gst::Caps::builder("audio/x-raw").field("rate", 48_000).field("channels", 2).build());
    let aac = make("avenc_aac");
    aac.set_property("bitrate", 128_000i32);
    let mux = make("mp4mux");
    mux.set_property("faststart", true);
    let sink = make("filesink");
    sink.set_property("location", path.to_string_lossy().to_string());
    let (h264parse, aacparse, convert) = (make("h264parse"), make("aacparse"), make("audioconvert"));
    pipeline.add_many([&video, &video_caps, &encoder, &h264parse, &audio, &audio_caps, &convert, &aac, &aacparse, &mux, &sink]).unwrap();
    gst::Element::link_many([&video, &video_caps, &encoder, &h264parse, &mux, &sink]).unwrap();
    gst::Element::link_many([&audio, &convert, &audio_caps, &aac, &aacparse, &mux]).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let message = bus.timed_pop_filtered(gst::ClockTime::NONE, &[gst::MessageType::Eos, gst::MessageType::Error]).unwrap();
    if let gst::MessageView::Error(err) = message.view() {
        panic!("encoding the chunk: {}", err.error());
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

fn packet_count(path: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().trim_end_matches(',').parse::<u64>().ok()).sum()
}
