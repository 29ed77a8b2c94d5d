//! One output of the composite's encoded stream, its own pipeline: `appsrc (H.264) + appsrc (AAC) →`
//! a sink bin, either `flvmux → rtmp2sink` (an RTMP server) or `splitmuxsink` writing MPEG-TS segments
//! (live HLS; the owner uploads them and writes the playlists). It starts at the composite's next
//! keyframe, its timestamps from zero there; it reports itself up once [`UP_AFTER_NS`] of media went
//! through to the sink (rtmp2sink blocks until it is connected and publishing, so media past it means the
//! server took the stream), and failed on any error.

use super::{LiveEvent, OnEvent, Stream};
use crate::{PipelineError, make, runtime_error};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Media that must have reached the sink before the output counts as up.
pub const UP_AFTER_NS: u64 = 2_000_000_000;
/// What an output may queue while its server is slow: beyond it the oldest goes.
const QUEUE_BYTES: u64 = 8 << 20;

/// Where an output's stream goes.
#[derive(Debug, Clone)]
pub enum OutputTarget {
    /// An `rtmp://` or `rtmps://` URL.
    Rtmp(String),
    /// MPEG-TS segments of about `segment_ns` (cut at the next keyframe) written to `dir` as
    /// `NNNNN.ts`, numbered from `first_index`; each closed one comes as [`LiveEvent::SegmentClosed`].
    Hls { dir: PathBuf, segment_ns: u64, first_index: u32 },
}

pub(super) struct EncodedOutput {
    pipeline: gst::Pipeline,
    video: gst_app::AppSrc,
    audio: gst_app::AppSrc,
    /// The composite's timestamp this output's zero is at: its first keyframe's.
    zero_ns: Mutex<Option<u64>>,
    failed: Arc<AtomicBool>,
    /// How long `stop` waits for the sink to finish (a segment file's last bytes, an RTMP goodbye).
    finish_timeout: gst::ClockTime,
}

impl EncodedOutput {
    pub(super) fn start(id: &str, target: &OutputTarget, on_event: OnEvent) -> Result<EncodedOutput, PipelineError> {
        let pipeline = gst::Pipeline::with_name(&format!("output-{id}"));
        let source =
            || gst_app::AppSrc::builder().format(gst::Format::Time).is_live(false).do_timestamp(false).max_bytes(QUEUE_BYTES).block(false).build();
        let (video, audio) = (source(), source());
        video.set_property_from_str("leaky-type", "downstream");
        audio.set_property_from_str("leaky-type", "downstream");
        pipeline.add_many([video.upcast_ref::<gst::Element>(), audio.upcast_ref()])?;
        let (counted, finish_timeout) = match target {
            OutputTarget::Rtmp(url) => (rtmp_sink(&pipeline, &video, &audio, url)?, gst::ClockTime::from_seconds(1)),
            OutputTarget::Hls { dir, segment_ns, first_index } => {
                (segment_sink(&pipeline, &video, &audio, dir, *segment_ns, *first_index)?, gst::ClockTime::from_seconds(5))
            }
        };

        let failed = Arc::new(AtomicBool::new(false));
        report_up(id, &counted, on_event.clone());
        let bus = pipeline.bus().expect("pipelines have a bus");
        let (id_owned, reported) = (id.to_string(), failed.clone());
        let opened_at_ns = Mutex::new(None::<u64>);
        bus.set_sync_handler(move |_, message| match message.view() {
            // Left on the bus for `stop`, which waits for it.
            gst::MessageView::Eos(_) => gst::BusSyncReply::Pass,
            gst::MessageView::Error(err) => {
                if !reported.swap(true, Ordering::SeqCst) {
                    on_event(LiveEvent::OutputFailed { id: id_owned.clone(), error: server_reason(&runtime_error(err)) });
                }
                gst::BusSyncReply::Drop
            }
            gst::MessageView::Element(element) => {
                if let Some(s) = element.structure() {
                    let running_ns = s.get::<u64>("running-time").ok();
                    match s.name().as_str() {
                        "splitmuxsink-fragment-opened" => *opened_at_ns.lock().unwrap_or_else(|p| p.into_inner()) = running_ns,
                        "splitmuxsink-fragment-closed" => {
                            if let (Ok(path), Some(closed)) = (s.get::<String>("location"), running_ns) {
                                let duration_ns =
                                    closed.saturating_sub(opened_at_ns.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or(closed));
                                on_event(LiveEvent::SegmentClosed { id: id_owned.clone(), path: path.into(), duration_ns });
                            }
                        }
                        _ => {}
                    }
                }
                gst::BusSyncReply::Drop
            }
            _ => gst::BusSyncReply::Drop,
        });
        pipeline.set_state(gst::State::Playing)?;
        Ok(EncodedOutput { pipeline, video, audio, zero_ns: Mutex::new(None), failed, finish_timeout })
    }

    /// The encoded streams' caps as they are now (an output started mid-stream).
    pub(super) fn set_caps(&self, video: Option<&gst::Caps>, audio: Option<&gst::Caps>) {
        if let Some(caps) = video {
            self.set_stream_caps(Stream::Video, caps);
        }
        if let Some(caps) = audio {
            self.set_stream_caps(Stream::Audio, caps);
        }
    }

    pub(super) fn set_stream_caps(&self, stream: Stream, caps: &gst::Caps) {
        self.source(stream).set_caps(Some(caps));
    }

    fn source(&self, stream: Stream) -> &gst_app::AppSrc {
        match stream {
            Stream::Video => &self.video,
            Stream::Audio => &self.audio,
        }
    }

    /// One encoded buffer of the composite; nothing before the first keyframe.
    pub(super) fn push(&self, stream: Stream, buffer: &gst::Buffer) {
        if self.failed.load(Ordering::SeqCst) {
            return;
        }
        let Some(pts) = buffer.pts().map(|t| t.nseconds()) else { return };
        let mut zero = self.zero_ns.lock().unwrap_or_else(|p| p.into_inner());
        let zero_ns = match *zero {
            Some(zero) => zero,
            None if stream == Stream::Video && !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) => {
                tracing::debug!(pipeline = %self.pipeline.name(), pts, "output starts at this keyframe");
                *zero.insert(pts)
            }
            None => return,
        };
        drop(zero);
        let Some(at) = pts.checked_sub(zero_ns) else { return };
        let mut rebased = buffer.copy();
        {
            let rebased = rebased.make_mut();
            rebased.set_pts(gst::ClockTime::from_nseconds(at));
            rebased.set_dts(buffer.dts().and_then(|dts| dts.nseconds().checked_sub(zero_ns)).map(gst::ClockTime::from_nseconds));
        }
        if let Err(err) = self.source(stream).push_buffer(rebased) {
            tracing::debug!(pipeline = %self.pipeline.name(), ?stream, ?err, "output refused a buffer");
        }
    }

    /// Ends the stream: the sink gets its end of stream (the server its goodbye, the last segment its
    /// end), then the pipeline stops. With `wait`, returns once that is done (or timed out); else at once.
    pub(super) fn stop(self, wait: bool) {
        let pipeline = self.pipeline;
        if self.failed.load(Ordering::SeqCst) {
            let _ = pipeline.set_state(gst::State::Null);
            return;
        }
        let _ = self.video.end_of_stream();
        let _ = self.audio.end_of_stream();
        let timeout = self.finish_timeout;
        let finish = move || {
            let bus = pipeline.bus().expect("pipelines have a bus");
            let _ = bus.timed_pop_filtered(timeout, &[gst::MessageType::Eos]);
            let _ = pipeline.set_state(gst::State::Null);
        };
        if wait {
            finish();
        } else {
            std::thread::spawn(finish);
        }
    }
}

/// `flvmux → rtmp2sink`; returns the sink's pad (media past it reached the server).
fn rtmp_sink(pipeline: &gst::Pipeline, video: &gst_app::AppSrc, audio: &gst_app::AppSrc, url: &str) -> Result<gst::Pad, PipelineError> {
    let mux = make("flvmux")?;
    mux.set_property("streamable", true);
    let sink = make("rtmp2sink")?;
    sink.set_property("location", url);
    sink.set_property("sync", false);
    sink.set_property("async", false);
    pipeline.add_many([&mux, &sink])?;
    video.link_pads(None, &mux, Some("video"))?;
    audio.link_pads(None, &mux, Some("audio"))?;
    mux.link(&sink)?;
    Ok(sink.static_pad("sink").expect("sink pad"))
}

/// `h264parse → splitmuxsink (mpegtsmux)` and `aacparse →` it; returns the splitmuxsink's video pad.
fn segment_sink(
    pipeline: &gst::Pipeline,
    video: &gst_app::AppSrc,
    audio: &gst_app::AppSrc,
    dir: &std::path::Path,
    segment_ns: u64,
    first_index: u32,
) -> Result<gst::Pad, PipelineError> {
    std::fs::create_dir_all(dir).map_err(|e| PipelineError::Build(format!("segment directory {}: {e}", dir.display())))?;
    let video_parse = make("h264parse")?;
    // MPEG-TS carries H.264 as a byte stream with its parameter sets before every keyframe.
    video_parse.set_property("config-interval", -1i32);
    let byte_stream = make("capsfilter")?;
    byte_stream.set_property("caps", gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream").field("alignment", "au").build());
    let audio_parse = make("aacparse")?;
    let mux = make("mpegtsmux")?;
    let sink = make("splitmuxsink")?;
    sink.set_property("muxer", &mux);
    sink.set_property("location", dir.join("%05d.ts").to_string_lossy().to_string());
    sink.set_property("start-index", first_index as i32);
    sink.set_property("max-size-time", segment_ns);
    sink.set_property("send-keyframe-requests", false);
    sink.set_property("async-finalize", false);
    pipeline.add_many([&video_parse, &byte_stream, &audio_parse, &sink])?;
    video.link(&video_parse)?;
    video_parse.link(&byte_stream)?;
    byte_stream.link_pads(None, &sink, Some("video"))?;
    audio.link(&audio_parse)?;
    audio_parse.link_pads(None, &sink, Some("audio_%u"))?;
    Ok(byte_stream.static_pad("src").and_then(|pad| pad.peer()).expect("linked to the splitmuxsink"))
}

/// Counts the media reaching the sink's `pad`; `OutputUp` once it passed [`UP_AFTER_NS`].
fn report_up(id: &str, pad: &gst::Pad, on_event: OnEvent) {
    let first = AtomicU64::new(u64::MAX);
    let id = id.to_string();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(pts) = info.buffer().and_then(|b| b.pts()).map(|t| t.nseconds()) else { return gst::PadProbeReturn::Ok };
        let _ = first.compare_exchange(u64::MAX, pts, Ordering::SeqCst, Ordering::SeqCst);
        if pts.saturating_sub(first.load(Ordering::SeqCst)) >= UP_AFTER_NS {
            on_event(LiveEvent::OutputUp { id: id.clone() });
            return gst::PadProbeReturn::Remove;
        }
        gst::PadProbeReturn::Ok
    });
}

/// The server's or the network's words, without GStreamer's source-file debug trail.
fn server_reason(err: &PipelineError) -> String {
    match err {
        PipelineError::Runtime { message, .. } => message.split(" (").next().unwrap_or(message).to_string(),
        other => other.to_string(),
    }
}
