//! The live composite: a room's tracks decoded as they arrive, laid out in a grid, mixed, encoded once
//! (H.264 at low latency + AAC) and fanned out to outputs (RTMP servers, live HLS segments), each in its
//! own small pipeline so a server that drops or refuses touches neither the composite nor the other
//! outputs. Snapshots (JPEG) of the composite can be taken every few seconds.
//!
//! Time: frames carry the capture session's running time; the composite runs on the system clock with
//! its running time 0 at the session time it started (`session_ns_at_start`), and waits
//! [`LiveSpec::latency_ms`] for late inputs before it outputs a frame.

mod inputs;
mod output;
mod snapshots;

use crate::look::Look;
use crate::track_writer::TrackCodec;
use crate::{PipelineError, encoders, make, runtime_error};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use inputs::Inputs;
use output::EncodedOutput;
pub use output::OutputTarget;
pub use snapshots::{SnapshotClock, SnapshotSpec};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct LiveSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_kbps: u32,
    pub audio_bps: u32,
    /// Encoder element name (see [`encoders`]): x264enc runs with `tune=zerolatency`.
    pub encoder: String,
    pub look: Look,
    /// How long the composite waits for a late input frame.
    pub latency_ms: u32,
    /// JPEG snapshots of the composite every so often ([`LiveEvent::Snapshot`]).
    pub snapshots: Option<SnapshotSpec>,
}

impl LiveSpec {
    /// 1280x720 at 30 fps, 3000 kbps H.264 + 128 kbps AAC, 300 ms latency.
    pub fn hd720(encoder: &str) -> LiveSpec {
        LiveSpec {
            width: 1280,
            height: 720,
            fps: 30,
            video_kbps: 3000,
            audio_bps: 128_000,
            encoder: encoder.into(),
            look: Look::default(),
            latency_ms: 300,
            snapshots: None,
        }
    }
}

/// What the live composite tells its owner, from its streaming threads.
#[derive(Debug)]
pub enum LiveEvent {
    /// The output has sent [`output::UP_AFTER_NS`] of media: its server took the stream.
    OutputUp { id: String },
    /// The output's pipeline failed (could not connect, refused, dropped); it is stopped and gone.
    OutputFailed { id: String, error: String },
    /// One track's input failed (undecodable): it is dropped from the composite, the rest go on.
    InputFailed { track: String, error: String },
    /// An HLS output closed a segment file (complete, ready to upload) holding `duration_ns` of media.
    SegmentClosed { id: String, path: std::path::PathBuf, duration_ns: u64 },
    /// A JPEG snapshot of the composite at its running time `pts_ns`.
    Snapshot { pts_ns: u64, jpeg: Vec<u8> },
    /// The composite itself failed: every output is stopped.
    Failed(PipelineError),
}

type OnEvent = Arc<dyn Fn(LiveEvent) + Send + Sync>;

/// The latest encoded caps: an output that starts later needs them before its first buffer.
#[derive(Default)]
struct Encoded {
    video_caps: Option<gst::Caps>,
    audio_caps: Option<gst::Caps>,
}

/// Locked in this order: `encoded`, then `outputs`.
struct Shared {
    /// Encoded buffers that came out of the composite (video and audio).
    encoded_buffers: std::sync::atomic::AtomicU64,
    outputs: Mutex<BTreeMap<String, EncodedOutput>>,
    encoded: Mutex<Encoded>,
    on_event: OnEvent,
}

pub struct LiveComposite {
    pipeline: gst::Pipeline,
    inputs: Arc<Mutex<Inputs>>,
    shared: Arc<Shared>,
    session_ns_at_start: u64,
}

impl LiveComposite {
    /// Starts the composite (black and silent until tracks come). `session_ns_now`: the capture session's
    /// running time now.
    pub fn start(spec: LiveSpec, session_ns_now: u64, on_event: impl Fn(LiveEvent) + Send + Sync + 'static) -> Result<LiveComposite, PipelineError> {
        crate::init()?;
        let pipeline = gst::Pipeline::with_name("live");
        let shared = Arc::new(Shared {
            encoded_buffers: 0.into(),
            outputs: Mutex::new(BTreeMap::new()),
            encoded: Mutex::new(Encoded::default()),
            on_event: Arc::new(on_event),
        });
        let compositor = build_video(&pipeline, &spec, &shared)?;
        let mixer = build_audio(&pipeline, &spec, &shared)?;
        let inputs = Arc::new(Mutex::new(Inputs::new(pipeline.clone(), compositor, mixer, spec)?));
        watch_bus(&pipeline, &shared, &inputs);
        pipeline.set_state(gst::State::Playing)?;
        // Inputs join the running pipeline: before it is PLAYING, a bin added during the state change
        // could leave the pipeline paused for good (seen: every task parked, nothing encoded).
        let (reached, state, _) = pipeline.state(gst::ClockTime::from_seconds(5));
        if reached.is_err() || state != gst::State::Playing {
            let _ = pipeline.set_state(gst::State::Null);
            return Err(PipelineError::Build(format!("the live composite did not start playing (it is {state:?})")));
        }
        recalculate_latency(&pipeline);
        Ok(LiveComposite { pipeline, inputs, shared, session_ns_at_start: session_ns_now })
    }

    /// A track of `participant` (identity) joins the composite; `name` labels their tile. Encrypted
    /// tracks cannot be decoded here.
    pub fn add_track(&self, track: &str, participant: &str, name: &str, codec: TrackCodec) {
        let mut inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = inputs.add(track, participant, name, codec) {
            (self.shared.on_event)(LiveEvent::InputFailed { track: track.into(), error: err.to_string() });
        }
    }

    /// One frame of a track, at the session's running time `pts_ns`.
    pub fn push(&self, track: &str, pts_ns: u64, duration_ns: u64, data: &[u8], keyframe: bool) {
        let Some(pts) = pts_ns.checked_sub(self.session_ns_at_start) else { return };
        let inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        inputs.push(track, pts, duration_ns, data, keyframe);
    }

    /// A camera turned off (or on again): its participant's placeholder stands in meanwhile.
    pub fn set_track_muted(&self, track: &str, muted: bool) {
        self.inputs.lock().unwrap_or_else(|p| p.into_inner()).set_muted(track, muted);
    }

    /// The loudest speaker (identity), outlined; `None`: nobody speaks.
    pub fn set_speaker(&self, participant: Option<&str>) {
        self.inputs.lock().unwrap_or_else(|p| p.into_inner()).set_speaker(participant);
    }

    pub fn remove_track(&self, track: &str) {
        self.inputs.lock().unwrap_or_else(|p| p.into_inner()).remove(track);
    }

    /// Starts an output (an RTMP server, HLS segments). Its outcome comes as events.
    pub fn add_output(&self, id: &str, target: &OutputTarget) -> Result<(), PipelineError> {
        let output = EncodedOutput::start(id, target, self.shared.on_event.clone())?;
        // Held until the output is listed: caps that change meanwhile reach it either way.
        let encoded = self.shared.encoded.lock().unwrap_or_else(|p| p.into_inner());
        output.set_caps(encoded.video_caps.as_ref(), encoded.audio_caps.as_ref());
        let replaced = self.shared.outputs.lock().unwrap_or_else(|p| p.into_inner()).insert(id.into(), output);
        drop(encoded);
        if let Some(replaced) = replaced {
            replaced.stop(false);
        }
        Ok(())
    }

    /// Stops streaming to that output (sending the server its end of stream first).
    pub fn remove_output(&self, id: &str) {
        let removed = self.shared.outputs.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        if let Some(output) = removed {
            output.stop(false);
        }
    }

    /// The composite's state and how many encoded buffers it has put out: for a watchdog and logs.
    pub fn health(&self) -> (gst::State, u64) {
        (self.pipeline.current_state(), self.shared.encoded_buffers.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn output_ids(&self) -> Vec<String> {
        self.shared.outputs.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// Ends every output and the composite. Blocks until each output has finished (its last segment
    /// closed, its server told), a few seconds at most: their last events are sent before it returns.
    pub fn stop(&self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        let outputs = std::mem::take(&mut *self.shared.outputs.lock().unwrap_or_else(|p| p.into_inner()));
        let finishing: Vec<_> = outputs.into_values().map(|output| std::thread::spawn(move || output.stop(true))).collect();
        for thread in finishing {
            let _ = thread.join();
        }
    }
}

impl Drop for LiveComposite {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An input's failure is its own (the owner removes that track); a placeholder's is mended here (it is
/// made again); any other error fails the composite.
/// A latency change (an input joining) is applied at once: until the aggregators have answered a latency
/// query they are not live, and a non-live compositor waits for every input's next frame instead of the
/// clock (seen: the composite slowed to a few frames a second, or its audio never started).
fn watch_bus(pipeline: &gst::Pipeline, shared: &Arc<Shared>, inputs: &Arc<Mutex<Inputs>>) {
    let bus = pipeline.bus().expect("pipelines have a bus");
    let shared = Arc::downgrade(shared);
    let weak_inputs = Arc::downgrade(inputs);
    let weak_pipeline = pipeline.downgrade();
    bus.set_sync_handler(move |_, message| {
        match message.view() {
            gst::MessageView::Error(err) => {
                if let Some(participant) = err.src().and_then(inputs::placeholder_of) {
                    tracing::warn!(participant, error = %runtime_error(err), "a live placeholder failed; making it again");
                    // Not from the streaming thread that posted it: dropping the branch stops that thread.
                    let inputs = weak_inputs.clone();
                    std::thread::spawn(move || {
                        if let Some(inputs) = inputs.upgrade() {
                            inputs.lock().unwrap_or_else(|p| p.into_inner()).placeholder_failed(&participant);
                        }
                    });
                } else if let Some(shared) = shared.upgrade() {
                    let event = match err.src().and_then(inputs::input_of) {
                        Some(track) => LiveEvent::InputFailed { track, error: runtime_error(err).to_string() },
                        None => LiveEvent::Failed(runtime_error(err)),
                    };
                    (shared.on_event)(event);
                }
            }
            // Posted from a streaming thread, which must not run the query itself.
            gst::MessageView::Latency(_) => {
                let pipeline = weak_pipeline.clone();
                std::thread::spawn(move || {
                    if let Some(pipeline) = pipeline.upgrade() {
                        recalculate_latency(&pipeline);
                    }
                });
            }
            _ => {}
        }
        gst::BusSyncReply::Drop
    });
}

/// Queries the pipeline's latency again; retried a few times while elements are still starting (a
/// failed query leaves the aggregators as they were).
fn recalculate_latency(pipeline: &gst::Pipeline) {
    for _ in 0..20 {
        if pipeline.recalculate_latency().is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    tracing::warn!("the live composite's latency could not be recalculated");
}

/// Background → compositor → encoder → appsink (and the snapshots' branch); returns the compositor.
fn build_video(pipeline: &gst::Pipeline, spec: &LiveSpec, shared: &Arc<Shared>) -> Result<gst::Element, PipelineError> {
    let background = make("videotestsrc")?;
    background.set_property("is-live", true);
    background.set_property_from_str("pattern", "solid-color");
    background.set_property("foreground-color", spec.look.background_argb);
    let background_caps = make("capsfilter")?;
    background_caps.set_property("caps", raw_video_caps(spec));
    let compositor = make("compositor")?;
    compositor.set_property("latency", spec.latency_ms as u64 * 1_000_000);
    compositor.set_property_from_str("background", "black");
    // No `ignore-inactive-pads`: in 1.22 an aggregator that runs before any pad has data counts its
    // inactive pads as ended and ends the stream (seen: the audio or video branch stopped at start, now
    // and then). Live, the clock times inputs without data out anyway.
    let out_caps = make("capsfilter")?;
    // An opaque output format offers the inputs no alpha: a logo's transparency then could not link. With
    // a logo the compositor picks its format (converted for the encoder after); without, I420 throughout.
    let mut composite_caps = raw_video_caps(spec);
    if spec.look.logo.is_some() {
        composite_caps.make_mut().structure_mut(0).expect("one structure").remove_field("format");
    }
    out_caps.set_property("caps", composite_caps);
    let convert = make("videoconvert")?;
    let queue = make("queue")?;
    let encoder = encoders::make_h264(&spec.encoder, spec.video_kbps, spec.fps, encoders::SpeedPreset::Veryfast)?;
    if spec.encoder == "x264enc" {
        encoder.set_property_from_str("tune", "zerolatency");
    }
    let parse = make("h264parse")?;
    let avc = make("capsfilter")?;
    avc.set_property("caps", gst::Caps::builder("video/x-h264").field("stream-format", "avc").field("alignment", "au").build());
    let sink = encoded_sink(shared.clone(), Stream::Video);
    pipeline.add_many([
        &background,
        &background_caps,
        &compositor,
        &out_caps,
        &convert,
        &queue,
        &encoder,
        &parse,
        &avc,
        sink.upcast_ref::<gst::Element>(),
    ])?;
    gst::Element::link_many([&background, &background_caps])?;
    let base = compositor.request_pad_simple("sink_%u").ok_or_else(|| PipelineError::Build("compositor gave no pad".into()))?;
    base.set_property("zorder", 0u32);
    background_caps.static_pad("src").expect("src").link(&base).map_err(|e| PipelineError::Build(format!("background: {e:?}")))?;
    let tee = make("tee")?;
    pipeline.add(&tee)?;
    let mut branded = vec![compositor.clone(), out_caps];
    if let Some(title) = &spec.look.title {
        let overlay = crate::look::title_overlay(&spec.look, title, spec.height)?;
        pipeline.add(&overlay)?;
        branded.push(overlay);
    }
    branded.extend([tee.clone(), queue, convert, encoder, parse, avc, sink.upcast()]);
    gst::Element::link_many(&branded)?;
    if let Some(logo) = &spec.look.logo {
        crate::look::add_logo(pipeline, &compositor, logo, None, spec.fps, (spec.width as i32, spec.height as i32))?;
    }
    if let Some(snapshots) = spec.snapshots {
        snapshots::add_branch(pipeline, &tee, snapshots, shared.on_event.clone())?;
    }
    Ok(compositor)
}

/// Silence → audiomixer → AAC → appsink; returns the mixer.
fn build_audio(pipeline: &gst::Pipeline, spec: &LiveSpec, shared: &Arc<Shared>) -> Result<gst::Element, PipelineError> {
    let silence = make("audiotestsrc")?;
    silence.set_property("is-live", true);
    silence.set_property_from_str("wave", "silence");
    let silence_caps = make("capsfilter")?;
    silence_caps.set_property("caps", crate::transcode::mixer_caps());
    let mixer = make("audiomixer")?;
    mixer.set_property("latency", spec.latency_ms as u64 * 1_000_000);
    let convert = make("audioconvert")?;
    let encoder = make("avenc_aac")?;
    encoder.set_property("bitrate", spec.audio_bps as i32);
    let parse = make("aacparse")?;
    let sink = encoded_sink(shared.clone(), Stream::Audio);
    pipeline.add_many([&silence, &silence_caps, &mixer, &convert, &encoder, &parse, sink.upcast_ref()])?;
    gst::Element::link_many([&silence, &silence_caps, &mixer, &convert, &encoder, &parse, sink.upcast_ref()])?;
    Ok(mixer)
}

fn raw_video_caps(spec: &LiveSpec) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", spec.width as i32)
        .field("height", spec.height as i32)
        .field("framerate", gst::Fraction::new(spec.fps as i32, 1))
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Stream {
    Video,
    Audio,
}

/// The end of the composite's encoded stream: every sample goes to every output.
fn encoded_sink(shared: Arc<Shared>, stream: Stream) -> gst_app::AppSink {
    // Nothing prerolls in a live pipeline: an async sink would only hold the state change up.
    let sink = gst_app::AppSink::builder().sync(false).max_buffers(64).drop(true).build();
    sink.set_property("async", false);
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                // Never an error back into the encoder: a flow error stops its branch for good, silently.
                let Ok(sample) = sink.pull_sample() else {
                    tracing::warn!(?stream, "the composite's encoded sample could not be pulled; skipped");
                    return Ok(gst::FlowSuccess::Ok);
                };
                let (Some(buffer), Some(caps)) = (sample.buffer_owned(), sample.caps_owned()) else { return Ok(gst::FlowSuccess::Ok) };
                let mut buffer = in_running_time(buffer, sample.segment());
                if stream == Stream::Audio {
                    buffer = earlier_by(buffer, AAC_PRIMING_NS);
                }
                shared.encoded_buffers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                {
                    let mut encoded = shared.encoded.lock().unwrap_or_else(|p| p.into_inner());
                    let known = match stream {
                        Stream::Video => &mut encoded.video_caps,
                        Stream::Audio => &mut encoded.audio_caps,
                    };
                    if known.as_ref() != Some(&caps) {
                        tracing::debug!(?stream, %caps, "encoded caps");
                        *known = Some(caps.clone());
                        let outputs = shared.outputs.lock().unwrap_or_else(|p| p.into_inner());
                        for output in outputs.values() {
                            output.set_stream_caps(stream, &caps);
                        }
                    }
                }
                let outputs = shared.outputs.lock().unwrap_or_else(|p| p.into_inner());
                for output in outputs.values() {
                    output.push(stream, &buffer);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    sink
}

/// The AAC encoder's priming (1024 samples at 48 kHz): decoders play that much silence before the first
/// sample, and neither FLV nor MPEG-TS tells them to skip it, so the audio would reach viewers this much
/// after the video shown with it.
const AAC_PRIMING_NS: u64 = 1024 * 1_000_000_000 / 48_000;

/// The buffer `by_ns` earlier (not before zero).
fn earlier_by(mut buffer: gst::Buffer, by_ns: u64) -> gst::Buffer {
    let (pts, dts) = (buffer.pts(), buffer.dts());
    let buffer_mut = buffer.make_mut();
    buffer_mut.set_pts(pts.map(|t| gst::ClockTime::from_nseconds(t.nseconds().saturating_sub(by_ns))));
    buffer_mut.set_dts(dts.map(|t| gst::ClockTime::from_nseconds(t.nseconds().saturating_sub(by_ns))));
    buffer
}

/// The buffer with its timestamps in running time: encoders offset theirs (x264enc by 1000 hours, so
/// decode times never go negative), and outputs share one timeline.
fn in_running_time(mut buffer: gst::Buffer, segment: Option<&gst::Segment>) -> gst::Buffer {
    let Some(segment) = segment.and_then(|s| s.downcast_ref::<gst::ClockTime>()) else { return buffer };
    let (pts, dts) = (buffer.pts(), buffer.dts());
    let buffer_mut = buffer.make_mut();
    buffer_mut.set_pts(pts.and_then(|t| segment.to_running_time(t)));
    buffer_mut.set_dts(dts.and_then(|t| segment.to_running_time(t)));
    buffer
}

/// Makes sure the element exists before a job relies on it (`rtmp2sink` is in gst-plugins-bad).
pub fn check_elements() -> Result<(), PipelineError> {
    crate::init()?;
    for factory in ["compositor", "audiomixer", "flvmux", "rtmp2sink", "avenc_aac", "opusdec", "vp8dec", "splitmuxsink", "mpegtsmux", "jpegenc"] {
        make(factory)?;
    }
    Ok(())
}
