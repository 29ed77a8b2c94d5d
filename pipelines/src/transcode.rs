//! The composite transcode: every shown track's segments decoded, videos laid out as the layout
//! schedule says over a black background, audios mixed over silence, encoded to H.264 High + AAC-LC in a
//! faststart MP4. The black and silent base layers span the whole recording, so gaps never collapse the
//! timeline.
//!
//! Layout changes are exact to the output frame: the compositor announces each output frame's inputs
//! (`samples-selected`) and the scene for that instant is applied to its pads there. Each track is also
//! scaled to its tile in its own branch (its own thread), ahead of time, so the compositor only blends;
//! a frame that reaches it at another size is scaled there, which is slower but still right.

use crate::aac_frames::{self, ChunkFrames};
use crate::cuts::Cuts;
use crate::layout::{self, Layer, Schedule, Tile};
use crate::look::{self, Look};
use crate::segment_reader::{self, Problems, TrackInput};
use crate::{PipelineError, encoders, make, runtime_error};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AUDIO_RATE: i32 = 48_000;
const AUDIO_CHANNELS: i32 = 2;
/// avenc_aac's encoder delay: 1024 samples at 48 kHz.
const AAC_PRIMING_NS: i64 = 1024 * 1_000_000_000 / AUDIO_RATE as i64;

#[derive(Debug, Clone)]
pub struct TranscodeSpec {
    pub tracks: Vec<TrackInput>,
    /// The input recording's length: the output covers exactly this, less the cuts.
    pub duration_ns: u64,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_kbps: u32,
    pub audio_bps: u32,
    pub audio_only: bool,
    /// What is shown when; `None` puts every video track in one static grid.
    pub schedule: Option<Schedule>,
    /// Names, outline, background, logo, title.
    pub look: Look,
    /// Spans of the input left out of the output (pauses): the output is shorter by them. Only for a
    /// transcode in one piece (a chunk's window is on the output's timeline).
    pub cuts: Cuts,
    /// Only this part of the recording, its timestamps starting at zero: one chunk of a chunked
    /// transcode, with its video frames and its share of the AAC frames ([`crate::aac_frames`]). Its ends
    /// must sit on the output's frame grid, as frames are stamped (`k * 1e9 / fps` ns, rounded down).
    pub video_window: Option<Window>,
    /// Encoder element name (see [`encoders`]).
    pub encoder: String,
    /// x264enc's speed preset (other encoders ignore it).
    pub speed_preset: encoders::SpeedPreset,
    pub output: PathBuf,
    /// No progress for this long fails the transcode instead of hanging.
    pub stall_timeout: Duration,
}

impl TranscodeSpec {
    /// The default output preset: 1280x720 30 fps H.264 at 3000 kbps with AAC at 128 kbps.
    pub fn hd720(tracks: Vec<TrackInput>, duration_ns: u64, encoder: &str, output: PathBuf) -> Self {
        Self {
            tracks,
            duration_ns,
            width: 1280,
            height: 720,
            fps: 30,
            video_kbps: 3000,
            audio_bps: 128_000,
            audio_only: false,
            schedule: None,
            look: Look::default(),
            cuts: Cuts::default(),
            video_window: None,
            encoder: encoder.to_string(),
            speed_preset: encoders::SpeedPreset::default(),
            output,
            stall_timeout: Duration::from_secs(120),
        }
    }
}

/// A part of the recording, in nanoseconds from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl TranscodeSpec {
    /// The part of the recording this transcode covers.
    fn window(&self) -> Window {
        self.video_window.unwrap_or(Window { start_ns: 0, end_ns: self.output_duration_ns() })
    }

    /// The output's length: the input's, less the cuts.
    pub fn output_duration_ns(&self) -> u64 {
        self.cuts.output_duration(self.duration_ns)
    }

    /// The input a video track is read over: a chunk's (with its pre-roll), else all of it.
    fn video_input_range(&self) -> std::ops::Range<u64> {
        match self.video_window {
            Some(window) => self.composite_start_ns()..window.end_ns,
            None => 0..self.duration_ns,
        }
    }

    /// Frames fed and decoded are compared up to here: a chunk's pipeline ends with its window, while the
    /// frames fed just before the end may still be in a decoder; a second before it, they are through.
    fn counted_until_ns(&self) -> u64 {
        match self.video_window {
            Some(window) => window.end_ns.saturating_sub(1_000_000_000),
            None => u64::MAX,
        }
    }

    /// Where the composite starts: a chunk's window, less a second of pre-roll. The compositor's first
    /// output frames can come before every input has delivered (a chunk's first frame came out black
    /// now and then), so a chunk composites from a second earlier and keeps only its window.
    fn composite_start_ns(&self) -> u64 {
        let start = self.window().start_ns;
        start - start.min(CHUNK_PRE_ROLL_NS)
    }
}

/// See [`TranscodeSpec::composite_start_ns`]; whole frames at any integer frame rate.
const CHUNK_PRE_ROLL_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Default)]
pub struct TranscodeReport {
    pub video_tracks: usize,
    pub audio_tracks: usize,
    /// Inputs that were unreadable in part or whole.
    pub problems: Vec<String>,
}

/// Runs the transcode to completion on the calling thread. `on_progress` gets media seconds written.
pub fn run(spec: &TranscodeSpec, on_progress: impl Fn(f64)) -> Result<TranscodeReport, PipelineError> {
    let problems: Problems = Arc::new(Mutex::new(Vec::new()));
    let pipeline = gst::Pipeline::with_name("transcode");
    let mux = make("mp4mux")?;
    mux.set_property("faststart", true);
    if let Some(dir) = spec.output.parent() {
        mux.set_property("faststart-file", dir.join(".faststart.tmp").to_string_lossy().to_string());
    }
    let sink = make("filesink")?;
    sink.set_property("location", spec.output.to_string_lossy().to_string());
    pipeline.add_many([&mux, &sink])?;
    mux.link(&sink)?;

    // Sort inputs by kind, learning each track's caps from its first frame.
    let mut videos = Vec::new();
    let mut audios = Vec::new();
    for input in &spec.tracks {
        match segment_reader::probe_caps(input) {
            Some(caps) if media_type(&caps).starts_with("video/") => videos.push((input.clone(), caps)),
            Some(caps) if media_type(&caps).starts_with("audio/") => audios.push((input.clone(), caps)),
            Some(caps) => problems.lock().unwrap().push(format!("{}: unsupported media {caps}", input.name)),
            None => problems.lock().unwrap().push(format!("{}: no readable segment", input.name)),
        }
    }
    if spec.audio_only {
        videos.clear();
    }

    let mut feeders = Vec::new();
    // Per video track: frames fed in, frames decoded.
    let mut frame_counts = Vec::new();
    if !spec.audio_only {
        let names: Vec<String> = videos.iter().map(|(input, _)| input.name.clone()).collect();
        let schedule = spec.schedule.clone().unwrap_or_else(|| Schedule::static_grid(&names, spec.width, spec.height));
        let schedule = Arc::new(spec.cuts.schedule(&schedule));
        let compositor = build_video_output(spec, &pipeline, &mux)?;
        let mut pads = BTreeMap::new();
        for layer in schedule.layers() {
            match &layer {
                Layer::Track(name) => {
                    // A track the schedule shows but that has no readable video is simply not there.
                    let Some((input, caps)) = videos.iter().find(|(input, _)| &input.name == name) else { continue };
                    let branch = VideoBranch { compositor: compositor.clone(), layer: layer.clone(), schedule: schedule.clone(), fps: spec.fps };
                    let name = spec.look.names.then(|| look::name_overlay(&spec.look, &schedule.label(&layer), spec.height)).transpose()?;
                    let (appsrc, decoded, pad) = add_video_input(&pipeline, caps, branch, name, &spec.cuts)?;
                    let counted_until = spec.counted_until_ns();
                    let fed = count_frames(appsrc.static_pad("src").expect("appsrc src"), counted_until);
                    frame_counts.push((input.name.clone(), fed, count_frames(decoded, counted_until)));
                    feeders.push(segment_reader::spawn_feeder(appsrc, input.clone(), spec.video_input_range(), problems.clone())?);
                    pads.insert(layer, pad);
                }
                Layer::Placeholder(_) => {
                    let pad = if spec.look.names {
                        let branch = VideoBranch { compositor: compositor.clone(), layer: layer.clone(), schedule: schedule.clone(), fps: spec.fps };
                        add_named_placeholder(&pipeline, spec, branch)?
                    } else {
                        add_placeholder(&pipeline, &compositor, spec)?
                    };
                    pads.insert(layer, pad);
                }
            }
        }
        let outline = match spec.look.highlight_argb {
            Some(argb) => add_outline(&pipeline, &compositor, spec, argb)?,
            None => Vec::new(),
        };
        if let Some(logo) = &spec.look.logo {
            let frame = (spec.width as i32, spec.height as i32);
            look::add_logo(&pipeline, &compositor, logo, Some(frames_for(spec.window().end_ns, spec.fps as u64, 1)), spec.fps, frame)?;
        }
        let frame = (spec.width, spec.height);
        shift_compositor_inputs(&compositor, spec.composite_start_ns());
        follow_schedule(&compositor, schedule, Pads { layers: pads, outline, frame }, spec.composite_start_ns());
    }
    let audio = AudioSpan::of(spec);
    let mixer = build_audio_output(spec, &audio, &pipeline, &mux)?;
    for (input, caps) in &audios {
        let appsrc = add_audio_input(&pipeline, caps, &mixer, &spec.cuts)?;
        feeders.push(segment_reader::spawn_feeder(appsrc, input.clone(), audio.input_range(spec), problems.clone())?);
    }

    let result = run_to_eos(&pipeline, spec, &on_progress);
    let _ = pipeline.set_state(gst::State::Null);
    for feeder in feeders {
        let _ = feeder.join();
    }
    result?;
    // A decoder drops what it cannot decode without a word (VP8 garbage, a broken reference): a track that
    // lost more than half a second of frames so is named.
    for (name, fed, decoded) in &frame_counts {
        let (fed, decoded) = (fed.load(Ordering::Relaxed), decoded.load(Ordering::Relaxed));
        if fed.saturating_sub(decoded) >= spec.fps as u64 / 2 {
            problems.lock().unwrap().push(format!("{name}: {} of its {fed} video frames could not be decoded", fed - decoded));
        }
    }
    let problems = problems.lock().unwrap().clone();
    Ok(TranscodeReport { video_tracks: videos.len(), audio_tracks: audios.len(), problems })
}

/// Counts the buffers passing `pad` stamped before `until_ns`.
fn count_frames(pad: gst::Pad, until_ns: u64) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let before = info.buffer().and_then(|b| b.pts()).is_none_or(|pts| pts.nseconds() < until_ns);
        if before {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        gst::PadProbeReturn::Ok
    });
    count
}

fn media_type(caps: &gst::Caps) -> String {
    caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default()
}

fn frames_for(duration_ns: u64, per_second: u64, per_buffer: u64) -> i32 {
    (duration_ns as u128 * per_second as u128).div_ceil(1_000_000_000u128 * per_buffer as u128) as i32
}

/// Black base layer → compositor → encoder → mux. Returns the compositor for track tiles.
fn build_video_output(spec: &TranscodeSpec, pipeline: &gst::Pipeline, mux: &gst::Element) -> Result<gst::Element, PipelineError> {
    let raw_caps = |format: Option<&str>| {
        let mut caps = gst::Caps::builder("video/x-raw")
            .field("width", spec.width as i32)
            .field("height", spec.height as i32)
            .field("framerate", gst::Fraction::new(spec.fps as i32, 1))
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .field("colorimetry", COLORIMETRY);
        if let Some(format) = format {
            caps = caps.field("format", format);
        }
        caps.build()
    };
    // The base layer only sets the output's timing (frame grid and length): it is tiny and fully
    // transparent, so the compositor paints its own black background and never blends a full frame.
    // A chunk's frames start at its window: the compositor starts there too, and drops what came before
    // (the frames from the keyframe before the window, fed so the decoders can start).
    let window = spec.window();
    // A coloured background is the base layer made opaque: one full-frame blend per frame, paid only
    // when the background is not black.
    let coloured = spec.look.background_argb & 0xffffff != 0;
    let (background, background_caps) = tiny_solid_source(spec, spec.look.background_argb)?;
    let compositor = make("compositor")?;
    compositor.set_property_from_str("background", "black");
    let on_compositor_clock = Window { start_ns: window.start_ns - spec.composite_start_ns(), end_ns: window.end_ns - spec.composite_start_ns() };
    keep_video_window(&compositor.static_pad("src").expect("compositor src"), on_compositor_clock, spec.fps);
    // A chunk's compositor runs on the chunk's own clock: zero at its pre-roll (see
    // `shift_compositor_inputs`), so it makes no frame of the recording before it. The chunk's file starts
    // at zero; the joiner puts it back in its place.
    let origin = spec.composite_start_ns();
    if window.start_ns > origin {
        compositor.static_pad("src").expect("compositor src").set_offset(-((window.start_ns - origin) as i64));
    }
    let title = spec.look.title.as_deref().map(|t| look::title_overlay(&spec.look, t, spec.height)).transpose()?;
    let convert = make("videoconvert")?;
    let output_caps = make("capsfilter")?;
    output_caps.set_property("caps", raw_caps(Some("I420")));
    let encoder = encoders::make_h264(&spec.encoder, spec.video_kbps, spec.fps, spec.speed_preset)?;
    let profile = make("capsfilter")?;
    profile.set_property("caps", gst::Caps::builder("video/x-h264").field("profile", "high").build());
    let parse = make("h264parse")?;
    let queue = make("queue")?;
    let mut chain = vec![background, background_caps.clone(), compositor.clone()];
    chain.extend(title);
    chain.extend([convert, output_caps, encoder, profile, parse, queue.clone()]);
    pipeline.add_many(&chain)?;
    gst::Element::link_many(&chain)?;
    if let Some(base_pad) = background_caps.static_pad("src").and_then(|p| p.peer()) {
        base_pad.set_property("alpha", if coloured { 1.0f64 } else { 0.0 });
        base_pad.set_property("width", spec.width as i32);
        base_pad.set_property("height", spec.height as i32);
    }
    let mux_pad = mux.request_pad_simple("video_%u").ok_or_else(|| PipelineError::Build("mp4mux video pad".into()))?;
    queue.static_pad("src").expect("queue src").link(&mux_pad).map_err(|e| PipelineError::Build(format!("video to mux: {e:?}")))?;
    Ok(compositor)
}

/// Keeps the composite video to `window` exactly: frames of a chunk's pre-roll are dropped, and the
/// compositor, which goes on while any input still has a frame to show (the last frames reach a little
/// past the end), is cut at the first frame at or past the end with an end-of-stream in its place.
fn keep_video_window(pad: &gst::Pad, window: Window, fps: u32) {
    let half_frame = 500_000_000 / fps as u64;
    let first_start = window.start_ns.saturating_sub(half_frame);
    let last_start = window.end_ns.saturating_sub(half_frame);
    let ended = std::sync::atomic::AtomicBool::new(false);
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(pts) = info.buffer().and_then(|b| b.pts()).map(|p| p.nseconds()) else { return gst::PadProbeReturn::Ok };
        if pts < first_start {
            return gst::PadProbeReturn::Drop;
        }
        if pts < last_start {
            return gst::PadProbeReturn::Ok;
        }
        if !ended.swap(true, std::sync::atomic::Ordering::SeqCst)
            && let Some(peer) = pad.peer()
        {
            peer.send_event(gst::event::Eos::new());
        }
        gst::PadProbeReturn::Drop
    });
}

const SAMPLES_PER_BUFFER: u64 = 960;

/// The audio a transcode encodes, in samples of the mixer's timeline (the output's, less the AAC
/// priming): all of it, or for a chunk its frames with their pre- and post-roll.
struct AudioSpan {
    start_sample: u64,
    end_sample: u64,
    /// A chunk's frames, kept after the encoder; `None` keeps everything.
    chunk: Option<ChunkFrames>,
}

impl AudioSpan {
    fn of(spec: &TranscodeSpec) -> Self {
        let rate = AUDIO_RATE as u64;
        let whole_end = frames_for(spec.output_duration_ns(), rate, SAMPLES_PER_BUFFER) as u64 * SAMPLES_PER_BUFFER;
        let Some(window) = spec.video_window else { return AudioSpan { start_sample: 0, end_sample: whole_end, chunk: None } };
        // A window reaching the output's end is the last chunk, whatever `whole_end`'s rounding says.
        let end_ns = (window.end_ns < spec.output_duration_ns()).then_some(window.end_ns);
        let chunk = ChunkFrames::for_window(window.start_ns, end_ns, whole_end, rate);
        let start_sample = chunk.encode_from() * aac_frames::FRAME_SAMPLES;
        let end_sample = chunk.encode_until_sample(whole_end).max(start_sample);
        AudioSpan { start_sample, end_sample, chunk: Some(chunk) }
    }

    fn start_ns(&self) -> u64 {
        aac_frames::samples_to_ns(self.start_sample, AUDIO_RATE as u64)
    }

    /// What the audio tracks are read over: the span on the recording's timeline (tracks are fed a
    /// priming ahead, see [`add_audio_input`]), with half a second before a chunk for the decoders to settle.
    fn input_range(&self, spec: &TranscodeSpec) -> std::ops::Range<u64> {
        match self.chunk {
            None => 0..spec.duration_ns,
            Some(_) => {
                let end_ns = aac_frames::samples_to_ns(self.end_sample, AUDIO_RATE as u64) + AAC_PRIMING_NS as u64;
                (self.start_ns() + AAC_PRIMING_NS as u64).saturating_sub(AUDIO_DECODER_LEAD_NS)..end_ns.min(spec.duration_ns)
            }
        }
    }
}

/// See [`AudioSpan::input_range`].
const AUDIO_DECODER_LEAD_NS: u64 = 500_000_000;

/// Silent base layer → mixer → AAC encoder → mux. Returns the mixer for track inputs.
fn build_audio_output(spec: &TranscodeSpec, span: &AudioSpan, pipeline: &gst::Pipeline, mux: &gst::Element) -> Result<gst::Element, PipelineError> {
    let silence = make("audiotestsrc")?;
    silence.set_property_from_str("wave", "silence");
    // The base layer ends exactly at the span's end (the encoder's last frame is as long as the
    // one-piece transcode's): whole buffers of a size that divides the span (a multiple of 64 samples,
    // as starts sit on 1024 and ends on 960 or 1024).
    let samples = span.end_sample - span.start_sample;
    let per_buffer = [SAMPLES_PER_BUFFER, 1024, 512, 320, 256, 192, 128].into_iter().find(|b| samples.is_multiple_of(*b)).unwrap_or(64);
    silence.set_property("samplesperbuffer", per_buffer as i32);
    silence.set_property("num-buffers", samples.div_ceil(per_buffer) as i32);
    silence.set_property("timestamp-offset", span.start_ns() as i64);
    let silence_caps = make("capsfilter")?;
    silence_caps.set_property("caps", mixer_caps());
    let mixer = make("audiomixer")?;
    // Inputs are decoded from files whose timestamps say where each packet belongs, so the mixer follows
    // them at once. Left at its defaults it counts samples from a track's first buffer and tolerates 40 ms
    // of drift for a second: an encoder's first Opus packet stamped 6 ms off put that whole second 6 ms
    // off. The threshold stays above the container's 1 ms timestamp rounding.
    mixer.set_property("alignment-threshold", 3_000_000u64);
    mixer.set_property("discont-wait", 0u64);
    if span.chunk.is_some() {
        // A chunk's mix starts at its pre-roll; the tracks' frames before it (fed to settle the
        // decoders) are dropped.
        mixer.set_property_from_str("start-time-selection", "set");
        mixer.set_property("start-time", span.start_ns());
    }
    let convert = make("audioconvert")?;
    let encoder = make("avenc_aac")?;
    encoder.set_property("bitrate", spec.audio_bps as i32);
    let parse = make("aacparse")?;
    let queue = make("queue")?;
    pipeline.add_many([&silence, &silence_caps, &mixer, &convert, &encoder, &parse, &queue])?;
    gst::Element::link_many([&silence, &silence_caps, &mixer, &convert, &encoder, &parse, &queue])?;
    let mux_pad = mux.request_pad_simple("audio_%u").ok_or_else(|| PipelineError::Build("mp4mux audio pad".into()))?;
    queue.static_pad("src").expect("queue src").link(&mux_pad).map_err(|e| PipelineError::Build(format!("audio to mux: {e:?}")))?;
    if let Some(chunk) = span.chunk {
        keep_chunk_frames(&parse.static_pad("src").expect("aacparse src"), chunk);
    }
    Ok(mixer)
}

/// Keeps a chunk's own AAC frames (its pre- and post-roll are dropped), stamped from zero, so the
/// join lays the chunks' frames end to end.
fn keep_chunk_frames(pad: &gst::Pad, chunk: ChunkFrames) {
    let rate = AUDIO_RATE as u64;
    pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        match info.data.as_mut() {
            Some(gst::PadProbeData::Buffer(buffer)) => {
                let Some(pts) = buffer.pts() else { return gst::PadProbeReturn::Drop };
                let frame = aac_frames::nearest_frame(pts.nseconds(), rate);
                if !chunk.keeps(frame) {
                    return gst::PadProbeReturn::Drop;
                }
                let buffer = buffer.make_mut();
                let ns = |frame: u64| aac_frames::samples_to_ns(frame * aac_frames::FRAME_SAMPLES, rate);
                buffer.set_pts(gst::ClockTime::from_nseconds(ns(frame - chunk.first)));
                buffer.set_dts(gst::ClockTime::from_nseconds(ns(frame - chunk.first)));
                gst::PadProbeReturn::Ok
            }
            // The chunk's frames are on a timeline of their own, from zero.
            Some(gst::PadProbeData::Event(event)) if event.type_() == gst::EventType::Segment => {
                *event = gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new());
                gst::PadProbeReturn::Ok
            }
            _ => gst::PadProbeReturn::Ok,
        }
    });
}

pub(crate) fn mixer_caps() -> gst::Caps {
    gst::Caps::builder("audio/x-raw")
        .field("format", "F32LE")
        .field("layout", "interleaved")
        .field("rate", AUDIO_RATE)
        .field("channels", AUDIO_CHANNELS)
        .build()
}

/// A video track's way into the compositor: the layer it is in the schedule.
struct VideoBranch {
    compositor: gst::Element,
    layer: Layer,
    schedule: Arc<Schedule>,
    fps: u32,
}

/// appsrc → decodebin → `tail` (linked once the decoder's pad appears) → `sink_pad`. Decoded frames
/// leave `tail[0]` on the output's timeline: inside a cut they are dropped, after one moved up.
fn add_decoded_input(
    pipeline: &gst::Pipeline,
    caps: &gst::Caps,
    tail: &[gst::Element],
    sink_pad: &gst::Pad,
) -> Result<gst_app::AppSrc, PipelineError> {
    let appsrc = gst_app::AppSrc::builder().caps(caps).format(gst::Format::Time).is_live(false).block(true).max_bytes(4 * 1024 * 1024).build();
    let decode = make("decodebin")?;
    pipeline.add_many([appsrc.upcast_ref(), &decode])?;
    pipeline.add_many(tail)?;
    appsrc.link(&decode)?;
    gst::Element::link_many(tail)?;
    tail.last().expect("a tail").static_pad("src").expect("src pad").link(sink_pad).map_err(|e| PipelineError::Build(format!("{e:?}")))?;
    link_when_decoded(&decode, tail[0].static_pad("sink").expect("sink pad"));
    Ok(appsrc)
}

/// Drops the decoded frames inside a cut and moves the rest back over it. On a pad after the decoder
/// (which needs every frame of a cut for the ones after it), before anything that places frames in time.
fn cut_frames(pad: &gst::Pad, cuts: &Cuts) {
    on_timed_buffers(pad, cuts, |cuts, buffer, pts_ns| match cuts.map(pts_ns) {
        None => gst::PadProbeReturn::Drop,
        Some(output) => {
            buffer.make_mut().set_pts(gst::ClockTime::from_nseconds(output));
            gst::PadProbeReturn::Ok
        }
    });
}

/// Runs `apply` on every timestamped buffer through `pad`, unless there are no cuts.
fn on_timed_buffers(pad: &gst::Pad, cuts: &Cuts, apply: impl Fn(&Cuts, &mut gst::Buffer, u64) -> gst::PadProbeReturn + Send + Sync + 'static) {
    if cuts.is_empty() {
        return;
    }
    let cuts = cuts.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() else { return gst::PadProbeReturn::Ok };
        let Some(pts) = buffer.pts() else { return gst::PadProbeReturn::Ok };
        apply(&cuts, buffer, pts.nseconds())
    });
}

/// [`cut_frames`] for interleaved audio of `frame_bytes` per sample frame at `rate`: buffers at a cut's
/// edge keep exactly their samples outside it.
fn cut_samples(pad: &gst::Pad, cuts: &Cuts, rate: u32, frame_bytes: usize) {
    on_timed_buffers(pad, cuts, move |cuts, buffer, pts_ns| {
        let count = buffer.size() / frame_bytes;
        let Some((output_ns, kept)) = cuts.kept_samples(pts_ns, count, rate) else { return gst::PadProbeReturn::Drop };
        if kept.len() == 1 && kept[0] == (0..count) {
            buffer.make_mut().set_pts(gst::ClockTime::from_nseconds(output_ns));
            return gst::PadProbeReturn::Ok;
        }
        let Ok(map) = buffer.map_readable() else { return gst::PadProbeReturn::Drop };
        let bytes: Vec<u8> = kept.iter().flat_map(|range| &map[range.start * frame_bytes..range.end * frame_bytes]).copied().collect();
        drop(map);
        let samples = (bytes.len() / frame_bytes) as u64;
        let mut trimmed = gst::Buffer::from_mut_slice(bytes);
        {
            let trimmed = trimmed.get_mut().expect("a new buffer is writable");
            trimmed.set_pts(gst::ClockTime::from_nseconds(output_ns));
            trimmed.set_duration(gst::ClockTime::from_nseconds(samples * 1_000_000_000 / rate as u64));
            trimmed.set_flags(gst::BufferFlags::DISCONT);
        }
        *buffer = trimmed;
        gst::PadProbeReturn::Ok
    });
}

/// Links `decode`'s first decoded pad to `first` once it appears.
pub(crate) fn link_when_decoded(decode: &gst::Element, first: gst::Pad) {
    decode.connect_pad_added(move |_, pad| {
        if !first.is_linked()
            && let Err(err) = pad.link(&first)
        {
            tracing::warn!(?err, "decoded pad did not link");
        }
    });
}

/// A new compositor input, shown only once a scene places it.
fn hidden_pad(compositor: &gst::Element) -> Result<gst::Pad, PipelineError> {
    let pad = compositor.request_pad_simple("sink_%u").ok_or_else(|| PipelineError::Build("compositor pad".into()))?;
    pad.set_property("alpha", 0.0f64);
    Ok(pad)
}

/// Every video inside the composite is declared BT.709, like the HD output. Left unsaid, GStreamer
/// guesses by size (BT.601 below 720 lines), and a mismatch makes the scaler and the compositor convert
/// colours on every frame through their slow generic path: 3x the cost of the plain scaling.
const COLORIMETRY: &str = "bt709";

pub(crate) fn tile_caps(tile: Tile) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", tile.width)
        .field("height", tile.height)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .field("colorimetry", COLORIMETRY)
        .build()
}

/// decoded video → convert → scale (letterboxed) to the layer's current tile → compositor pad. Returns
/// the branch's source, the pad decoded frames enter by, and its compositor pad.
fn add_video_input(
    pipeline: &gst::Pipeline,
    caps: &gst::Caps,
    branch: VideoBranch,
    name: Option<gst::Element>,
    cuts: &Cuts,
) -> Result<(gst_app::AppSrc, gst::Pad, gst::Pad), PipelineError> {
    let convert = make("videoconvert")?;
    let scale = make("videoscale")?;
    scale.set_property("add-borders", true);
    let filter = make("capsfilter")?;
    let pad = hidden_pad(&branch.compositor)?;
    pad.set_property_from_str("sizing-policy", "keep-aspect-ratio");
    // The compositor shows the latest frame that starts before the output frame ends, i.e. up to a
    // frame early; half an output frame of offset makes that the frame nearest in time.
    // (videorate would do it too, but it swallows the GAP events that blank long holes.)
    let half_frame = 500_000_000 / branch.fps as i64;
    pad.set_offset(half_frame);
    follow_tile(&scale, &filter, &branch, half_frame as u64);
    let decoded = convert.static_pad("sink").expect("videoconvert sink");
    let mut tail = vec![convert, scale, filter];
    tail.extend(name);
    tail.push(make("queue")?);
    cut_frames(&tail[0].static_pad("src").expect("videoconvert src"), cuts);
    let appsrc = add_decoded_input(pipeline, caps, &tail, &pad)?;
    Ok((appsrc, decoded, pad))
}

/// Resize ahead of the compositor: before a frame enters `scale`, aim it (through `filter`) at the tile
/// the frame will be shown in, `lookahead_ns` after its timestamp. Changing the filter makes the scaler
/// renegotiate on that very frame.
fn follow_tile(scale: &gst::Element, filter: &gst::Element, branch: &VideoBranch, lookahead_ns: u64) {
    let first_tile = branch.schedule.scenes().iter().find_map(|s| s.layers.iter().find(|(l, _)| *l == branch.layer).map(|(_, t)| *t));
    let first_tile = first_tile.unwrap_or(Tile { x: 0, y: 0, width: 320, height: 180 });
    filter.set_property("caps", tile_caps(first_tile));
    let current = Mutex::new(first_tile);
    let (layer, schedule, target) = (branch.layer.clone(), branch.schedule.clone(), filter.clone());
    scale.static_pad("sink").expect("videoscale sink").add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(pts) = info.buffer().and_then(|b| b.pts())
            && let Some(tile) = schedule.tile_at(&layer, pts.nseconds() + lookahead_ns)
        {
            let mut current = current.lock().unwrap();
            if (tile.width, tile.height) != (current.width, current.height) {
                *current = tile;
                target.set_property("caps", tile_caps(tile));
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// A participant's stand-in with their initials and name: a flat dark 16:9 frame with the initials,
/// scaled to the tile it is shown in (as a track's branch is), then named.
fn add_named_placeholder(pipeline: &gst::Pipeline, spec: &TranscodeSpec, branch: VideoBranch) -> Result<gst::Pad, PipelineError> {
    let label = branch.schedule.label(&branch.layer);
    let (source, size) = solid_source(spec, PLACEHOLDER_ARGB, PLACEHOLDER_FRAME)?;
    let initials = look::initials_overlay(&spec.look, &layout::initials(&label))?;
    let scale = make("videoscale")?;
    let filter = make("capsfilter")?;
    let name = look::name_overlay(&spec.look, &label, spec.height)?;
    let queue = make("queue")?;
    let chain = [source, size, initials, scale.clone(), filter.clone(), name, queue.clone()];
    pipeline.add_many(&chain)?;
    gst::Element::link_many(&chain)?;
    follow_tile(&scale, &filter, &branch, 0);
    let pad = hidden_pad(&branch.compositor)?;
    queue.static_pad("src").expect("src pad").link(&pad).map_err(|e| PipelineError::Build(format!("placeholder: {e:?}")))?;
    Ok(pad)
}

/// The size a named placeholder is drawn at before it is scaled to its tile.
const PLACEHOLDER_FRAME: (i32, i32) = (640, 360);

/// The active speaker's outline: four thin bars of one colour, placed on the tile's edges by the schedule.
fn add_outline(pipeline: &gst::Pipeline, compositor: &gst::Element, spec: &TranscodeSpec, argb: u32) -> Result<Vec<gst::Pad>, PipelineError> {
    let mut pads = Vec::with_capacity(4);
    for _ in 0..4 {
        let (source, filter) = tiny_solid_source(spec, argb)?;
        pipeline.add_many([&source, &filter])?;
        source.link(&filter)?;
        let pad = hidden_pad(compositor)?;
        pad.set_property("zorder", look::OUTLINE_ZORDER);
        filter.static_pad("src").expect("src pad").link(&pad).map_err(|e| PipelineError::Build(format!("outline: {e:?}")))?;
        pads.push(pad);
    }
    Ok(pads)
}

/// A participant's stand-in: a flat dark tile, made tiny and scaled by the compositor to its tile.
fn add_placeholder(pipeline: &gst::Pipeline, compositor: &gst::Element, spec: &TranscodeSpec) -> Result<gst::Pad, PipelineError> {
    let (source, filter) = tiny_solid_source(spec, PLACEHOLDER_ARGB)?;
    pipeline.add_many([&source, &filter])?;
    source.link(&filter)?;
    let pad = hidden_pad(compositor)?;
    filter.static_pad("src").expect("src pad").link(&pad).map_err(|e| PipelineError::Build(format!("placeholder: {e:?}")))?;
    Ok(pad)
}

/// A 16x16 frame of one colour for every output frame of the transcode's window (the compositor scales
/// it where it is shown): source and caps filter, not yet in a pipeline.
fn tiny_solid_source(spec: &TranscodeSpec, argb: u32) -> Result<(gst::Element, gst::Element), PipelineError> {
    solid_source(spec, argb, (16, 16))
}

/// A frame of one colour, `width`×`height`, for every output frame of the transcode's window.
fn solid_source(spec: &TranscodeSpec, argb: u32, size: (i32, i32)) -> Result<(gst::Element, gst::Element), PipelineError> {
    let (source, filter) = solid_colour(argb, size, spec.fps)?;
    let window = spec.window();
    let start = spec.composite_start_ns();
    source.set_property("num-buffers", frames_for(window.end_ns - start, spec.fps as u64, 1));
    source.set_property("timestamp-offset", start as i64);
    Ok((source, filter))
}

/// A source of one colour, `width`×`height` at `fps`, and its caps filter (not yet in a pipeline).
pub(crate) fn solid_colour(argb: u32, (width, height): (i32, i32), fps: u32) -> Result<(gst::Element, gst::Element), PipelineError> {
    let source = make("videotestsrc")?;
    source.set_property_from_str("pattern", "solid-color");
    source.set_property("foreground-color", argb);
    let filter = make("capsfilter")?;
    filter.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", width)
            .field("height", height)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .field("framerate", gst::Fraction::new(fps as i32, 1))
            .field("colorimetry", COLORIMETRY)
            .build(),
    );
    Ok((source, filter))
}

/// The placeholder tile's colour (ARGB): a dark slate that reads as "camera off", not as a gap.
pub const PLACEHOLDER_ARGB: u32 = 0xff3a4150;

/// The compositor pads a scene positions.
struct Pads {
    layers: BTreeMap<Layer, gst::Pad>,
    /// The speaker outline's four bars (none without an outline).
    outline: Vec<gst::Pad>,
    /// The output's width and height.
    frame: (u32, u32),
}

/// Puts the compositor on a clock that starts at `origin_ns` of the recording: every input's running
/// time moves back by it. A chunk's compositor then starts at its pre-roll instead of making (and
/// dropping) a black frame for every frame of the recording before it, which made a chunk near the end
/// of an hour cost twice one at its start. `origin_ns` is whole seconds, so the output frames fall on
/// the one-piece transcode's grid, and each shows the input frame the one-piece transcode shows there
/// (a compositor started with `start-time-selection=set` picked, for some input phases, the frame
/// before it).
fn shift_compositor_inputs(compositor: &gst::Element, origin_ns: u64) {
    if origin_ns == 0 {
        return;
    }
    for pad in compositor.sink_pads() {
        pad.set_offset(pad.offset() - origin_ns as i64);
        // What comes before the new zero (a track's frames from the keyframe before the chunk) has no
        // running time, which the compositor does not take: it is dropped here.
        pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM, |pad, info| {
            let pts = match &info.data {
                Some(gst::PadProbeData::Buffer(buffer)) => buffer.pts(),
                Some(gst::PadProbeData::Event(event)) => match event.view() {
                    gst::EventView::Gap(gap) => Some(gap.get().0),
                    _ => return gst::PadProbeReturn::Ok,
                },
                _ => return gst::PadProbeReturn::Ok,
            };
            let Some(pts) = pts else { return gst::PadProbeReturn::Ok };
            // The pad's segment has the offset applied: before the new zero, no running time.
            let Some(event) = pad.sticky_event::<gst::event::Segment>(0) else { return gst::PadProbeReturn::Ok };
            let Some(segment) = event.segment().downcast_ref::<gst::ClockTime>().cloned() else { return gst::PadProbeReturn::Ok };
            if segment.to_running_time(pts).is_none() { gst::PadProbeReturn::Drop } else { gst::PadProbeReturn::Ok }
        });
    }
}

/// Applies the scene of each output frame to the compositor's pads, just before the frame is blended.
/// `origin_ns`: where on the recording the compositor's clock starts (see [`shift_compositor_inputs`]).
fn follow_schedule(compositor: &gst::Element, schedule: Arc<Schedule>, pads: Pads, origin_ns: u64) {
    // The first frame's scene is set before the pipeline runs: the signal is not emitted for every
    // first frame (a chunk's first frame came out black without this).
    let first = schedule.index_at(origin_ns);
    apply_scene(&schedule, first, &pads);
    compositor.set_property("emit-signals", true);
    let shown = Mutex::new(first);
    compositor.connect("samples-selected", false, move |args| {
        let pts = args.get(2).and_then(|v| v.get::<u64>().ok())?;
        let index = schedule.index_at(pts + origin_ns);
        let mut shown = shown.lock().unwrap();
        if *shown != index {
            *shown = index;
            apply_scene(&schedule, index, &pads);
        }
        None
    });
}

fn apply_scene(schedule: &Schedule, index: Option<usize>, pads: &Pads) {
    let scene = index.map(|i| &schedule.scenes()[i]);
    let highlight = scene.and_then(|s| s.highlight);
    let (width, height) = pads.frame;
    match highlight {
        Some(tile) if !pads.outline.is_empty() => {
            let by = (look::OUTLINE_PX * height as i32 / 720).max(1);
            for (pad, bar) in pads.outline.iter().zip(layout::outline(tile, by, width, height)) {
                place(pad, bar, look::OUTLINE_ZORDER);
            }
        }
        _ => pads.outline.iter().for_each(|pad| pad.set_property("alpha", 0.0f64)),
    }
    {
        let layers = scene.map(|s| s.layers.as_slice()).unwrap_or_default();
        for (layer, pad) in &pads.layers {
            match layers.iter().position(|(l, _)| l == layer) {
                Some(order) => place(pad, layers[order].1, order as u32 + 1),
                None => pad.set_property("alpha", 0.0f64),
            }
        }
    }
}

/// Shows `pad` at `tile`, stacked at `zorder`.
pub(crate) fn place(pad: &gst::Pad, tile: Tile, zorder: u32) {
    pad.set_property("xpos", tile.x);
    pad.set_property("ypos", tile.y);
    pad.set_property("width", tile.width);
    pad.set_property("height", tile.height);
    pad.set_property("zorder", zorder);
    pad.set_property("alpha", 1.0f64);
}

/// decoded audio → the mix format → mixer pad.
fn add_audio_input(pipeline: &gst::Pipeline, caps: &gst::Caps, mixer: &gst::Element, cuts: &Cuts) -> Result<gst_app::AppSrc, PipelineError> {
    let filter = make("capsfilter")?;
    filter.set_property("caps", mixer_caps());
    let pad = mixer.request_pad_simple("sink_%u").ok_or_else(|| PipelineError::Build("mixer pad".into()))?;
    // The AAC encoder delays its output by its priming samples and mp4mux 1.22 does not hide them with an
    // edit list, so players would present the audio 21.3 ms late. Feeding the tracks that much earlier
    // puts every sound back on its instant.
    pad.set_offset(-AAC_PRIMING_NS);
    cut_samples(&filter.static_pad("src").expect("capsfilter src"), cuts, AUDIO_RATE as u32, 4 * AUDIO_CHANNELS as usize);
    add_decoded_input(pipeline, caps, &[make("audioconvert")?, make("audioresample")?, filter, make("queue")?], &pad)
}

fn run_to_eos(pipeline: &gst::Pipeline, spec: &TranscodeSpec, on_progress: &impl Fn(f64)) -> Result<(), PipelineError> {
    let bus = pipeline.bus().expect("pipelines have a bus");
    pipeline.set_state(gst::State::Playing)?;
    let mut last_position = 0u64;
    let mut last_change = Instant::now();
    loop {
        if let Some(message) = bus.timed_pop(gst::ClockTime::from_mseconds(500)) {
            match message.view() {
                gst::MessageView::Eos(_) => {
                    let window = spec.window();
                    on_progress((window.end_ns - window.start_ns) as f64 / 1e9);
                    return Ok(());
                }
                gst::MessageView::Error(err) => return Err(runtime_error(err)),
                _ => {}
            }
        }
        let position = pipeline.query_position::<gst::ClockTime>().map(|p| p.nseconds()).unwrap_or(0);
        if position > last_position {
            last_position = position;
            last_change = Instant::now();
            on_progress(position as f64 / 1e9);
        } else if last_change.elapsed() > spec.stall_timeout {
            return Err(PipelineError::Stalled(spec.stall_timeout.as_secs()));
        }
    }
}
