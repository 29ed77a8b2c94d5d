//! The `test` capture source: a synthetic room of N participants, each with a camera (VP8) and a
//! microphone (Opus) encoded as a real room's tracks are, with a flash and a beep once a second.
//! Written to per-track Matroska segments exactly as a LiveKit capture is, so it exercises the whole fleet.

use crate::markers;
use crate::segment_writer::{self, FragmentMessage, TrackKind};
use crate::{PipelineError, make, runtime_error};
use gstreamer as gst;
use gstreamer::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct SyntheticRoomConfig {
    pub participants: u8,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_bitrate_bps: u32,
    /// Segment length; segments are cut on the next keyframe after this.
    pub segment_ns: u64,
    /// Segments go to `<out_dir>/<participant>/<track>/NNNNN.mkv`.
    pub out_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSpec {
    pub participant: String,
    pub track: String,
    pub kind: TrackKind,
    pub dir: PathBuf,
}

#[derive(Debug)]
pub enum CaptureEvent {
    /// A segment file was opened (media is being written) or closed (complete, safe to upload).
    Fragment {
        track: usize,
        fragment: FragmentMessage,
    },
    /// Every track reached end of stream: all segments are closed.
    Finished,
    Failed(PipelineError),
}

pub struct SyntheticRoom {
    pipeline: gst::Pipeline,
    tracks: Vec<TrackSpec>,
    wall_ms_at_zero: u64,
    bus_thread: Option<std::thread::JoinHandle<()>>,
}

impl SyntheticRoom {
    /// Builds and starts the room. `on_event` is called from a GStreamer bus thread.
    pub fn start(config: &SyntheticRoomConfig, on_event: impl Fn(CaptureEvent) + Send + Sync + 'static) -> Result<Self, PipelineError> {
        let pipeline = gst::Pipeline::with_name("synthetic-room");
        let mut tracks = Vec::new();
        for index in 0..config.participants as usize {
            let participant = format!("participant-{}", index + 1);
            for kind in [TrackKind::Video, TrackKind::Audio] {
                let track = match kind {
                    TrackKind::Video => "camera",
                    TrackKind::Audio => "microphone",
                };
                let dir = config.out_dir.join(&participant).join(track);
                let (sink, sink_pad) = segment_writer::segment_sink(&dir, config.segment_ns, kind)?;
                sink.set_property("name", format!("segments-{}", tracks.len()));
                let chain = match kind {
                    TrackKind::Video => video_chain(config, index)?,
                    TrackKind::Audio => audio_chain(index)?,
                };
                pipeline.add_many(chain.iter().chain([&sink]))?;
                gst::Element::link_many(&chain)?;
                chain
                    .last()
                    .expect("chains are not empty")
                    .static_pad("src")
                    .expect("src pad")
                    .link(&sink_pad)
                    .map_err(|e| PipelineError::Build(format!("linking {participant}/{track} to its segment sink: {e:?}")))?;
                tracks.push(TrackSpec { participant: participant.clone(), track: track.into(), kind, dir });
            }
        }

        let on_event = Arc::new(on_event);
        let bus = pipeline.bus().expect("pipelines have a bus");
        pipeline.set_state(gst::State::Playing)?;
        let wall_ms_at_zero = wall_ms_at_running_zero(&pipeline);
        let bus_thread = std::thread::Builder::new().name("synthetic-room-bus".into()).spawn(move || {
            for message in bus.iter_timed(gst::ClockTime::NONE) {
                if let Some(fragment) = segment_writer::parse_fragment_message(&message) {
                    let track = fragment.sink_name.strip_prefix("segments-").and_then(|n| n.parse().ok());
                    if let Some(track) = track {
                        on_event(CaptureEvent::Fragment { track, fragment });
                    }
                    continue;
                }
                match message.view() {
                    gst::MessageView::Eos(_) => {
                        on_event(CaptureEvent::Finished);
                        break;
                    }
                    gst::MessageView::Error(err) => {
                        on_event(CaptureEvent::Failed(runtime_error(err)));
                        break;
                    }
                    _ => {}
                }
            }
        })?;
        Ok(Self { pipeline, tracks, wall_ms_at_zero, bus_thread: Some(bus_thread) })
    }

    pub fn tracks(&self) -> &[TrackSpec] {
        &self.tracks
    }

    /// Unix time (ms) of media running time 0.
    pub fn wall_ms_at_zero(&self) -> u64 {
        self.wall_ms_at_zero
    }

    pub fn running_time_ns(&self) -> u64 {
        running_time(&self.pipeline).unwrap_or(0)
    }

    /// Asks every source to finish: the segment sinks close their last files, then `Finished` arrives.
    pub fn stop(&self) {
        self.pipeline.send_event(gst::event::Eos::new());
    }
}

impl Drop for SyntheticRoom {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        if let Some(bus) = self.pipeline.bus() {
            // Wake the bus thread if it is still waiting.
            let _ = bus.post(gst::message::Eos::new());
        }
        if let Some(thread) = self.bus_thread.take() {
            let _ = thread.join();
        }
    }
}

fn running_time(pipeline: &gst::Pipeline) -> Option<u64> {
    let clock = pipeline.clock()?;
    let base = pipeline.base_time()?;
    Some(clock.time().checked_sub(base)?.nseconds())
}

fn wall_ms_at_running_zero(pipeline: &gst::Pipeline) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64;
    // Playing is reached asynchronously for live sources; wait briefly for the base time to exist.
    for _ in 0..100 {
        if let Some(running) = running_time(pipeline) {
            return now.saturating_sub(running / 1_000_000);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    now
}

fn video_chain(config: &SyntheticRoomConfig, index: usize) -> Result<Vec<gst::Element>, PipelineError> {
    let mut chain = markers::video_source(index, config.width, config.height, config.fps, None)?;
    let encoder = make("vp8enc")?;
    encoder.set_property("deadline", 1i64);
    encoder.set_property("cpu-used", 8i32);
    encoder.set_property("target-bitrate", config.video_bitrate_bps as i32);
    encoder.set_property("keyframe-max-dist", config.fps as i32);
    encoder.set_property_from_str("end-usage", "cbr");
    chain.push(encoder);
    Ok(chain)
}

fn audio_chain(index: usize) -> Result<Vec<gst::Element>, PipelineError> {
    let mut chain = markers::audio_source(index, None)?;
    let encoder = make("opusenc")?;
    encoder.set_property("bitrate", 64_000i32);
    chain.push(encoder);
    Ok(chain)
}
