//! One received track into crash-safe segments: `appsrc ! [parser] ! splitmuxsink(matroskamux)`, one
//! small pipeline per track so a track that ends, stalls or fails touches no other. Frames go in
//! encoded, with the timestamps the caller computed; nothing is decoded.

use crate::segment_writer::{self, FragmentMessage, TrackKind};
use crate::{PipelineError, make, runtime_error};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackCodec {
    Vp8,
    Vp9,
    H264,
    Opus,
}

impl TrackCodec {
    /// From a WebRTC codec name (`VP8`, `video/H264`, `opus`, ...).
    pub fn from_name(name: &str) -> Option<TrackCodec> {
        let name = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
        match name.as_str() {
            "vp8" => Some(TrackCodec::Vp8),
            "vp9" => Some(TrackCodec::Vp9),
            "h264" => Some(TrackCodec::H264),
            "opus" => Some(TrackCodec::Opus),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TrackCodec::Vp8 => "vp8",
            TrackCodec::Vp9 => "vp9",
            TrackCodec::H264 => "h264",
            TrackCodec::Opus => "opus",
        }
    }

    pub fn kind(self) -> TrackKind {
        if self == TrackCodec::Opus { TrackKind::Audio } else { TrackKind::Video }
    }
}

#[derive(Debug)]
pub enum TrackWriterEvent {
    Fragment(FragmentMessage),
    /// The segment sink wants a keyframe to cut on: ask the sender (PLI).
    KeyframeWanted,
    /// All segments are closed after `finish`.
    Finished,
    Failed(PipelineError),
}

pub struct TrackWriter {
    pipeline: gst::Pipeline,
    source: gst_app::AppSrc,
    codec: TrackCodec,
    /// VP8's picture size (width << 16 | height) as the caps say: a keyframe of another size (a
    /// simulcast layer switch, a publisher lowering its resolution) brings new caps.
    vp8_size: std::sync::atomic::AtomicU32,
    /// An end-to-end encrypted track: frames are stored byte-exact, through no parser.
    encrypted: bool,
}

/// Video keyframes closer than this to the last one flagged are written as ordinary frames. splitmuxsink
/// cuts a segment on every flagged keyframe once a cut is due, and two keyframes in quick succession (a
/// browser answering two keyframe requests 98 ms apart) made a one-frame segment, whose header matroskamux
/// 1.22 writes corrupt. The frame is still a keyframe in its bitstream: decoders see it as one. Applied on
/// the segment sink's pad, after the parsers (vp9parse and h264parse flag keyframes from the bitstream).
const MIN_FLAGGED_KEYFRAME_SPACING_NS: u64 = 500_000_000;

/// Whether a frame at `pts_ns` is flagged a keyframe to the muxer, given the last one flagged.
fn flag_as_keyframe(kind: TrackKind, keyframe: bool, pts_ns: u64, last_flagged_ns: Option<u64>) -> bool {
    match (kind, keyframe, last_flagged_ns) {
        (_, false, _) => false,
        (TrackKind::Audio, true, _) | (_, true, None) => true,
        (TrackKind::Video, true, Some(last)) => pts_ns.saturating_sub(last) >= MIN_FLAGGED_KEYFRAME_SPACING_NS,
    }
}

impl TrackWriter {
    /// `first_frame` must be a keyframe for video: VP8's picture size is read from it. An `encrypted`
    /// track (LiveKit's end-to-end encryption) is stored byte-exact: no parser sees its frames (they would
    /// rewrite or reject ciphertext), and H.264 goes length-prefixed with the start codes' exact places
    /// kept, its decoder configuration taken from the first keyframe's parameter sets (sent in the clear).
    pub fn start(
        dir: &Path,
        segment_ns: u64,
        codec: TrackCodec,
        encrypted: bool,
        first_frame: &[u8],
        on_event: impl Fn(TrackWriterEvent) + Send + Sync + 'static,
    ) -> Result<TrackWriter, PipelineError> {
        crate::init()?;
        let caps = match codec {
            TrackCodec::Vp8 => {
                let (width, height) = vp8_size(first_frame).ok_or_else(|| PipelineError::Input("the first VP8 frame is not a keyframe".into()))?;
                gst::Caps::builder("video/x-vp8").field("width", width as i32).field("height", height as i32).build()
            }
            // The picture size of encrypted VP9 is in its ciphertext: the container's is nominal (Matroska
            // wants one), decoders take the bitstream's.
            TrackCodec::Vp9 if encrypted => gst::Caps::builder("video/x-vp9").field("width", 640i32).field("height", 360i32).build(),
            TrackCodec::Vp9 => gst::Caps::builder("video/x-vp9").build(),
            TrackCodec::H264 if encrypted => {
                let missing = || PipelineError::Input("the first frame of an encrypted H.264 track has no SPS and PPS".into());
                let config = crate::avc::decoder_config(first_frame).ok_or_else(missing)?;
                let (width, height) = crate::avc::h264_sps_size(first_frame).ok_or_else(missing)?;
                gst::Caps::builder("video/x-h264")
                    .field("stream-format", "avc3")
                    .field("alignment", "au")
                    .field("width", width as i32)
                    .field("height", height as i32)
                    .field("codec_data", gst::Buffer::from_mut_slice(config))
                    .build()
            }
            TrackCodec::H264 => gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream").field("alignment", "au").build(),
            TrackCodec::Opus => gst::Caps::builder("audio/x-opus")
                .field("rate", 48_000i32)
                .field("channels", 2i32)
                .field("channel-mapping-family", 0i32)
                .field("streamheader", gst::Array::new([opus_head(), opus_tags()]))
                .build(),
        };
        let source = gst_app::AppSrc::builder().caps(&caps).format(gst::Format::Time).is_live(false).do_timestamp(false).max_bytes(64 << 20).build();
        let mut chain: Vec<gst::Element> = vec![source.clone().upcast()];
        match codec {
            _ if encrypted => {}
            // Resolution changes are fine in VP8; H.264 needs avc3 (in-band parameter sets) for them.
            TrackCodec::H264 => {
                let parse = make("h264parse")?;
                let avc3 = make("capsfilter")?;
                avc3.set_property("caps", gst::Caps::builder("video/x-h264").field("stream-format", "avc3").field("alignment", "au").build());
                chain.extend([parse, avc3]);
            }
            TrackCodec::Vp9 => chain.push(make("vp9parse")?),
            // No opusparse: every packet already has its time and duration. Behind opusparse, a
            // participant's garbage made splitmuxsink fail ("Queued GOP time is negative"), and the rest
            // of the track went unrecorded.
            TrackCodec::Opus | TrackCodec::Vp8 => {}
        }
        let (sink, sink_pad) = segment_writer::segment_sink(dir, segment_ns, codec.kind())?;
        let pipeline = gst::Pipeline::with_name(&format!("track-{}", dir.display()));
        pipeline.add_many(chain.iter().chain([&sink]))?;
        gst::Element::link_many(&chain)?;
        chain
            .last()
            .expect("chain has the source")
            .static_pad("src")
            .expect("src pad")
            .link(&sink_pad)
            .map_err(|e| PipelineError::Build(format!("linking the track to its segment sink: {e:?}")))?;

        // Keyframe flags as the segment sink sees them, after any parser (which sets them from the
        // bitstream): see `MIN_FLAGGED_KEYFRAME_SPACING_NS`.
        if codec.kind() == TrackKind::Video {
            let last_flagged = std::sync::Mutex::new(None::<u64>);
            sink_pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() {
                    let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
                    let pts = buffer.pts().map(|t| t.nseconds()).unwrap_or(0);
                    let mut last = last_flagged.lock().unwrap_or_else(|p| p.into_inner());
                    if flag_as_keyframe(TrackKind::Video, keyframe, pts, *last) {
                        *last = Some(pts);
                    } else if keyframe {
                        buffer.make_mut().set_flags(gst::BufferFlags::DELTA_UNIT);
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }

        let on_event = std::sync::Arc::new(on_event);
        // Keyframe requests travel upstream from the segment sink to the source.
        let keyframe_events = on_event.clone();
        source.static_pad("src").expect("appsrc src").add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(event)) = &info.data
                && event.type_() == gst::EventType::CustomUpstream
            {
                keyframe_events(TrackWriterEvent::KeyframeWanted);
            }
            gst::PadProbeReturn::Ok
        });
        let bus = pipeline.bus().expect("pipelines have a bus");
        bus.set_sync_handler(move |_, message| {
            if let Some(fragment) = segment_writer::parse_fragment_message(message) {
                on_event(TrackWriterEvent::Fragment(fragment));
            } else {
                match message.view() {
                    gst::MessageView::Eos(_) => on_event(TrackWriterEvent::Finished),
                    gst::MessageView::Error(err) => on_event(TrackWriterEvent::Failed(runtime_error(err))),
                    _ => {}
                }
            }
            gst::BusSyncReply::Drop
        });
        // From here on the writer owns the pipeline: a failed start still sets it to NULL on drop.
        let vp8_size = vp8_size(first_frame).map_or(0, |(w, h)| (w as u32) << 16 | h as u32);
        let writer = TrackWriter { pipeline, source, codec, vp8_size: vp8_size.into(), encrypted };
        writer.pipeline.set_state(gst::State::Playing)?;
        Ok(writer)
    }

    /// Queues one encoded frame at `pts_ns` (running time of the capture session). `duration_ns` must
    /// not be zero: matroskamux 1.22 writes a corrupt header for a segment whose media lasts 0 ns (a
    /// single frame without duration, e.g. a fragment cut just before a mute).
    pub fn push(&self, pts_ns: u64, duration_ns: u64, data: &[u8], keyframe: bool) -> Result<(), PipelineError> {
        if keyframe && self.codec == TrackCodec::Vp8 {
            self.follow_vp8_size(data);
        }
        let data = if self.encrypted && self.codec == TrackCodec::H264 {
            crate::avc::annex_b_to_length_prefixed(data)
                .ok_or_else(|| PipelineError::Input("an encrypted H.264 frame without 4-byte start codes cannot be stored exactly".into()))?
        } else {
            data.to_vec()
        };
        let mut buffer = gst::Buffer::from_mut_slice(data);
        {
            let buffer = buffer.get_mut().expect("a new buffer is writable");
            buffer.set_pts(gst::ClockTime::from_nseconds(pts_ns));
            buffer.set_duration(gst::ClockTime::from_nseconds(duration_ns.max(1_000_000)));
            if !keyframe {
                buffer.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        self.source.push_buffer(buffer).map(|_| ()).map_err(|e| PipelineError::Build(format!("track writer refused a frame: {e:?}")))
    }

    fn follow_vp8_size(&self, keyframe: &[u8]) {
        use std::sync::atomic::Ordering;
        let Some((width, height)) = vp8_size(keyframe) else { return };
        let packed = (width as u32) << 16 | height as u32;
        if self.vp8_size.swap(packed, Ordering::Relaxed) != packed {
            let caps = gst::Caps::builder("video/x-vp8").field("width", width as i32).field("height", height as i32).build();
            self.source.set_caps(Some(&caps));
        }
    }

    /// Ends the track: the last segment is closed, then `Finished` arrives.
    pub fn finish(&self) {
        let _ = self.source.end_of_stream();
    }
}

impl Drop for TrackWriter {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Encoder delay of libopus at 48 kHz (its lookahead), which WebRTC senders have and RTP does not carry.
const OPUS_PRE_SKIP: u16 = 312;

/// The Ogg/Matroska Opus identification header (RFC 7845 section 5.1) for a WebRTC stereo stream. Its
/// pre-skip tells decoders to drop the encoder delay, so audio lines up with video as it did at the
/// sender (without it every recorded voice would sound 6.5 ms late).
fn opus_head() -> gst::Buffer {
    let mut head = b"OpusHead".to_vec();
    head.push(1); // version
    head.push(2); // channels
    head.extend_from_slice(&OPUS_PRE_SKIP.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // channel mapping family
    header_buffer(head)
}

fn opus_tags() -> gst::Buffer {
    let vendor = b"fleet-recorder";
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor);
    tags.extend_from_slice(&0u32.to_le_bytes()); // no comments
    header_buffer(tags)
}

fn header_buffer(bytes: Vec<u8>) -> gst::Buffer {
    let mut buffer = gst::Buffer::from_mut_slice(bytes);
    buffer.get_mut().expect("a new buffer is writable").set_flags(gst::BufferFlags::HEADER);
    buffer
}

/// Width and height from a VP8 keyframe header (RFC 6386 section 9.1), None for a delta frame.
pub fn vp8_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 10 || frame[0] & 1 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vp8_keyframe_size() {
        let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        frame.extend_from_slice(&1280u16.to_le_bytes());
        frame.extend_from_slice(&720u16.to_le_bytes());
        assert_eq!(vp8_size(&frame), Some((1280, 720)));
        frame[0] |= 1;
        assert_eq!(vp8_size(&frame), None);
    }

    #[test]
    fn keyframes_in_quick_succession_are_not_flagged() {
        let video = |pts_ms: u64, last_ms: Option<u64>| flag_as_keyframe(TrackKind::Video, true, pts_ms * 1_000_000, last_ms.map(|l| l * 1_000_000));
        assert!(video(0, None), "the first keyframe");
        assert!(!video(2_098, Some(2_000)), "98 ms after the last one");
        assert!(video(2_500, Some(2_000)));
        assert!(!flag_as_keyframe(TrackKind::Video, false, 9_000_000_000, None), "a delta frame stays one");
        assert!(flag_as_keyframe(TrackKind::Audio, true, 20_000_000, Some(0)), "every Opus packet stands alone");
    }

    #[test]
    fn codec_names() {
        assert_eq!(TrackCodec::from_name("video/H264"), Some(TrackCodec::H264));
        assert_eq!(TrackCodec::from_name("opus"), Some(TrackCodec::Opus));
        assert_eq!(TrackCodec::from_name("video/AV1"), None);
    }
}
