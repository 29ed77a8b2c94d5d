//! Re-encodes whole media files, one after another, into one faststart MP4 (H.264 High + AAC-LC 48 kHz
//! stereo): plugNmeet's post-recording transcode (one file) and merge (several). Every input is decoded
//! and scaled into the output's picture (letterboxed, square pixels, constant frame rate), so inputs of
//! different sizes and codecs join cleanly. Each kind is joined by its own lengths: an input without audio
//! adds no audio time, so the audio of the inputs after it comes that much early (plugNmeet's own merge,
//! a stream copy, behaves the same). A transcode that stops making output fails after `stall_timeout`.

use crate::{PipelineError, encoders, make, runtime_error};
use gstreamer as gst;
use gstreamer::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct FileTranscodeSpec {
    pub inputs: Vec<PathBuf>,
    pub output: PathBuf,
    pub encoder: String,
    /// x264enc's speed preset (other encoders ignore it).
    pub speed_preset: encoders::SpeedPreset,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_kbps: u32,
    pub audio_bps: u32,
    pub stall_timeout: Duration,
}

const AUDIO_RATE: i32 = 48_000;

pub fn run(spec: &FileTranscodeSpec) -> Result<(), PipelineError> {
    if spec.inputs.is_empty() {
        return Err(PipelineError::Input("no input files".into()));
    }
    for input in &spec.inputs {
        if !input.is_file() {
            return Err(PipelineError::Input(format!("{} does not exist", input.display())));
        }
    }
    let pipeline = gst::Pipeline::with_name("file-transcode");
    let mux = make("mp4mux")?;
    mux.set_property("faststart", true);
    // Beside the output and named after it: two transcodes into one folder must not share it.
    mux.set_property("faststart-file", format!("{}.faststart.tmp", spec.output.to_string_lossy()));
    let sink = make("filesink")?;
    sink.set_property("location", spec.output.to_string_lossy().to_string());
    pipeline.add_many([&mux, &sink])?;
    mux.link(&sink)?;

    // `concat` plays its inputs one after another, each continuing the running time of the last.
    let video_concat = make("concat")?;
    let audio_concat = make("concat")?;
    pipeline.add_many([&video_concat, &audio_concat])?;
    // Each input's buffers keep their own timestamps (concat moves only the segment), which the encoders
    // would see going backwards at every join: `single-segment` turns them into one running timeline.
    let rate_caps = make("capsfilter")?;
    rate_caps.set_property("caps", gst::Caps::builder("video/x-raw").field("framerate", gst::Fraction::new(spec.fps as i32, 1)).build());
    let encoder = encoders::make_h264(&spec.encoder, spec.video_kbps, spec.fps, spec.speed_preset)?;
    let video_tail = chain(
        &pipeline,
        &[single_segment()?, make("videorate")?, rate_caps, make("videoconvert")?, encoder, profile_high()?, make("h264parse")?, make("queue")?],
    )?;
    video_concat.link(&video_tail[0])?;
    link_to_mux(video_tail.last().expect("chain"), &mux, "video_%u")?;
    let aac = make("avenc_aac")?;
    aac.set_property("bitrate", spec.audio_bps as i32);
    let audio_tail = chain(&pipeline, &[single_segment()?, make("audiorate")?, make("audioconvert")?, aac, make("aacparse")?, make("queue")?])?;
    audio_concat.link(&audio_tail[0])?;
    link_to_mux(audio_tail.last().expect("chain"), &mux, "audio_%u")?;

    for input in &spec.inputs {
        add_input(&pipeline, spec, input, &video_concat, &audio_concat)?;
    }

    // Encoded buffers out, both kinds: the measure of progress for the stall check.
    let produced = Arc::new(AtomicU64::new(0));
    for tail in [&video_tail, &audio_tail] {
        let counter = produced.clone();
        tail.last().expect("chain").static_pad("src").expect("src pad").add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    }

    let bus = pipeline.bus().expect("pipelines have a bus");
    pipeline.set_state(gst::State::Playing)?;
    let (mut seen, mut since) = (0, Instant::now());
    let result = loop {
        match bus.timed_pop_filtered(gst::ClockTime::from_seconds(1), &[gst::MessageType::Eos, gst::MessageType::Error]) {
            Some(message) => match message.view() {
                gst::MessageView::Error(err) => break Err(runtime_error(err)),
                _ => break Ok(()),
            },
            None => {
                let now = produced.load(Ordering::Relaxed);
                if now != seen {
                    (seen, since) = (now, Instant::now());
                } else if since.elapsed() >= spec.stall_timeout {
                    break Err(PipelineError::Stalled(spec.stall_timeout.as_secs()));
                }
            }
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn single_segment() -> Result<gst::Element, PipelineError> {
    let identity = make("identity")?;
    identity.set_property("single-segment", true);
    Ok(identity)
}

fn profile_high() -> Result<gst::Element, PipelineError> {
    let caps = make("capsfilter")?;
    caps.set_property("caps", gst::Caps::builder("video/x-h264").field("profile", "high").build());
    Ok(caps)
}

/// Adds `elements` to the pipeline, linked in order.
fn chain(pipeline: &gst::Pipeline, elements: &[gst::Element]) -> Result<Vec<gst::Element>, PipelineError> {
    pipeline.add_many(elements)?;
    gst::Element::link_many(elements)?;
    Ok(elements.to_vec())
}

fn link_to_mux(from: &gst::Element, mux: &gst::Element, template: &str) -> Result<(), PipelineError> {
    let pad = mux.request_pad_simple(template).ok_or_else(|| PipelineError::Build(format!("mp4mux {template} pad")))?;
    from.static_pad("src").expect("src pad").link(&pad).map_err(|e| PipelineError::Build(format!("{e:?}")))?;
    Ok(())
}

/// filesrc → decodebin; its video and audio, normalised, into this input's pads on the two concats.
/// A kind the file lacks gets an end-of-stream on its concat pad, so the next input follows.
fn add_input(
    pipeline: &gst::Pipeline,
    spec: &FileTranscodeSpec,
    path: &Path,
    video: &gst::Element,
    audio: &gst::Element,
) -> Result<(), PipelineError> {
    let source = make("filesrc")?;
    source.set_property("location", path.to_string_lossy().to_string());
    let decode = make("decodebin")?;
    pipeline.add_many([&source, &decode])?;
    source.link(&decode)?;

    let video_caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", spec.width as i32)
        .field("height", spec.height as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build();
    let scale = make("videoscale")?;
    scale.set_property("add-borders", true);
    let video_filter = make("capsfilter")?;
    video_filter.set_property("caps", video_caps);
    let video_branch = [make("queue")?, make("videoconvert")?, scale, video_filter];
    let audio_filter = make("capsfilter")?;
    audio_filter
        .set_property("caps", gst::Caps::builder("audio/x-raw").field("format", "F32LE").field("rate", AUDIO_RATE).field("channels", 2i32).build());
    let audio_branch = [make("queue")?, make("audioconvert")?, make("audioresample")?, audio_filter];
    let video_pad = request_linked(pipeline, &video_branch, video)?;
    let audio_pad = request_linked(pipeline, &audio_branch, audio)?;

    let branches = Arc::new(Mutex::new([(video_branch[0].clone(), "video/", false), (audio_branch[0].clone(), "audio/", false)]));
    let linked = branches.clone();
    decode.connect_pad_added(move |_, pad| {
        let Some(name) = pad.current_caps().and_then(|c| c.structure(0).map(|s| s.name().to_string())) else { return };
        let mut branches = linked.lock().unwrap();
        if let Some(branch) = branches.iter_mut().find(|(_, kind, used)| !used && name.starts_with(kind)) {
            let sink = branch.0.static_pad("sink").expect("queue sink");
            if pad.link(&sink).is_ok() {
                branch.2 = true;
            }
        }
    });
    let ends = [(video_pad, 0usize), (audio_pad, 1usize)];
    decode.connect_no_more_pads(move |_| {
        let branches = branches.lock().unwrap();
        for (concat_pad, index) in &ends {
            if !branches[*index].2 {
                // concat holds an end-of-stream on a pad until that pad's turn: sent from this streaming
                // thread it would block it, and with it this input's other kind.
                let concat_pad = concat_pad.clone();
                std::thread::spawn(move || concat_pad.send_event(gst::event::Eos::new()));
            }
        }
    });
    Ok(())
}

/// Adds the branch, links it, and links its end to a new pad of `concat` (pads play in request order).
fn request_linked(pipeline: &gst::Pipeline, branch: &[gst::Element], concat: &gst::Element) -> Result<gst::Pad, PipelineError> {
    chain(pipeline, branch)?;
    let pad = concat.request_pad_simple("sink_%u").ok_or_else(|| PipelineError::Build("concat pad".into()))?;
    branch.last().expect("branch").static_pad("src").expect("src pad").link(&pad).map_err(|e| PipelineError::Build(format!("{e:?}")))?;
    Ok(pad)
}
