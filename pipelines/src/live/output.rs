//! One RTMP output: `appsrc (H.264) + appsrc (AAC) → flvmux → rtmp2sink`, its own pipeline. It starts
//! at the composite's next keyframe, its timestamps from zero there; it reports itself up once
//! [`UP_AFTER_NS`] of media went through to the sink (rtmp2sink blocks until it is connected and
//! publishing, so media past it means the server took the stream), and failed on any error.

use super::{LiveEvent, OnEvent, Stream};
use crate::{PipelineError, make, runtime_error};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Media that must have reached the sink before the output counts as up.
pub const UP_AFTER_NS: u64 = 2_000_000_000;
/// What an output may queue while its server is slow: beyond it the oldest goes.
const QUEUE_BYTES: u64 = 8 << 20;

pub(super) struct RtmpOutput {
    pipeline: gst::Pipeline,
    video: gst_app::AppSrc,
    audio: gst_app::AppSrc,
    /// The composite's timestamp this output's zero is at: its first keyframe's.
    zero_ns: Mutex<Option<u64>>,
    failed: Arc<AtomicBool>,
}

impl RtmpOutput {
    pub(super) fn start(id: &str, url: &str, on_event: OnEvent) -> Result<RtmpOutput, PipelineError> {
        let pipeline = gst::Pipeline::with_name(&format!("rtmp-{id}"));
        let source =
            || gst_app::AppSrc::builder().format(gst::Format::Time).is_live(false).do_timestamp(false).max_bytes(QUEUE_BYTES).block(false).build();
        let (video, audio) = (source(), source());
        video.set_property_from_str("leaky-type", "downstream");
        audio.set_property_from_str("leaky-type", "downstream");
        let mux = make("flvmux")?;
        mux.set_property("streamable", true);
        let sink = make("rtmp2sink")?;
        sink.set_property("location", url);
        sink.set_property("sync", false);
        sink.set_property("async", false);
        pipeline.add_many([video.upcast_ref(), audio.upcast_ref(), &mux, &sink])?;
        video.link_pads(None, &mux, Some("video"))?;
        audio.link_pads(None, &mux, Some("audio"))?;
        mux.link(&sink)?;

        let failed = Arc::new(AtomicBool::new(false));
        report_up(id, &sink, on_event.clone());
        let bus = pipeline.bus().expect("pipelines have a bus");
        let (id_owned, reported) = (id.to_string(), failed.clone());
        bus.set_sync_handler(move |_, message| match message.view() {
            // Left on the bus for `stop`, which waits for it.
            gst::MessageView::Eos(_) => gst::BusSyncReply::Pass,
            gst::MessageView::Error(err) => {
                if !reported.swap(true, Ordering::SeqCst) {
                    on_event(LiveEvent::OutputFailed { id: id_owned.clone(), error: server_reason(&runtime_error(err)) });
                }
                gst::BusSyncReply::Drop
            }
            _ => gst::BusSyncReply::Drop,
        });
        pipeline.set_state(gst::State::Playing)?;
        Ok(RtmpOutput { pipeline, video, audio, zero_ns: Mutex::new(None), failed })
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

    /// Ends the stream: the server gets its end, then the pipeline stops (at most a second later).
    pub(super) fn stop(self) {
        let pipeline = self.pipeline;
        if self.failed.load(Ordering::SeqCst) {
            let _ = pipeline.set_state(gst::State::Null);
            return;
        }
        let _ = self.video.end_of_stream();
        let _ = self.audio.end_of_stream();
        std::thread::spawn(move || {
            let bus = pipeline.bus().expect("pipelines have a bus");
            let _ = bus.timed_pop_filtered(gst::ClockTime::from_seconds(1), &[gst::MessageType::Eos]);
            let _ = pipeline.set_state(gst::State::Null);
        });
    }
}

/// Counts the media reaching the sink; `OutputUp` once it passed [`UP_AFTER_NS`].
fn report_up(id: &str, sink: &gst::Element, on_event: OnEvent) {
    let first = AtomicU64::new(u64::MAX);
    let id = id.to_string();
    let pad = sink.static_pad("sink").expect("sink pad");
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
