//! Crash-safe raw segments: one Matroska file per track, cut every few seconds on keyframes by
//! `splitmuxsink`. Encoded media goes in as it came; nothing is decoded here.

use crate::{PipelineError, make};
use gstreamer as gst;
use gstreamer::prelude::*;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Video,
    Audio,
}

impl TrackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Video => "video",
            TrackKind::Audio => "audio",
        }
    }
}

/// A `splitmuxsink` writing `<dir>/00000.mkv`, `00001.mkv`, ... Returns the element and the sink pad to
/// link the encoded stream to.
pub fn segment_sink(dir: &Path, segment_ns: u64, kind: TrackKind) -> Result<(gst::Element, gst::Pad), PipelineError> {
    std::fs::create_dir_all(dir)?;
    let muxer = make("matroskamux")?;
    // Small clusters bound what a killed writer can lose.
    muxer.set_property("max-cluster-duration", 1_000_000_000i64);
    // Unbuffered file writes: a killed recorder leaves every byte the muxer produced on disk, where spool
    // recovery finds it (filesink's default 64 KiB buffer holds seconds of low-bitrate media).
    let file_sink = make("filesink")?;
    file_sink.set_property_from_str("buffer-mode", "unbuffered");
    let sink = make("splitmuxsink")?;
    sink.set_property("muxer", &muxer);
    sink.set_property("sink", &file_sink);
    sink.set_property("max-size-time", segment_ns);
    sink.set_property("send-keyframe-requests", kind == TrackKind::Video);
    sink.set_property("location", dir.join("%05d.mkv").to_string_lossy().to_string());
    let pad_template = match kind {
        TrackKind::Video => "video",
        TrackKind::Audio => "audio_%u",
    };
    let pad = sink.request_pad_simple(pad_template).ok_or_else(|| PipelineError::Build(format!("splitmuxsink has no {pad_template} pad")))?;
    Ok((sink, pad))
}

/// Matroska's Cluster element ID: every frame of a segment is inside a cluster.
const CLUSTER_ID: [u8; 4] = [0x1F, 0x43, 0xB6, 0x75];

/// Whether a closed segment holds any media. A fragment can be opened and closed with no frame in it (seen
/// against livekit-server, at the end of a track whose publisher muted and left); matroskamux 1.22 then
/// leaves a header that demuxers reject as corrupt, with nothing in it to keep.
pub fn holds_media(bytes: &[u8]) -> bool {
    bytes.windows(CLUSTER_ID.len()).any(|w| w == CLUSTER_ID)
}

/// A segment file opened or closed by a segment sink, read from its bus message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentMessage {
    pub opened: bool,
    pub location: PathBuf,
    pub running_time_ns: u64,
    /// Name of the `splitmuxsink` element that wrote it.
    pub sink_name: String,
}

pub fn parse_fragment_message(message: &gst::Message) -> Option<FragmentMessage> {
    let gst::MessageView::Element(element) = message.view() else { return None };
    let structure = element.structure()?;
    let opened = match structure.name().as_str() {
        "splitmuxsink-fragment-opened" => true,
        "splitmuxsink-fragment-closed" => false,
        _ => return None,
    };
    Some(FragmentMessage {
        opened,
        location: PathBuf::from(structure.get::<String>("location").ok()?),
        running_time_ns: structure.get::<u64>("running-time").unwrap_or(0),
        sink_name: message.src()?.name().to_string(),
    })
}

/// The sequence number of a segment file named `NNNNN.mkv`.
pub fn segment_seq(path: &Path) -> Option<u32> {
    path.file_stem()?.to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::holds_media;
    use gstreamer as gst;
    use gstreamer::prelude::*;

    /// `frames` VP8 frames through matroskamux, as the file's bytes.
    fn matroska_of(frames: i32) -> Vec<u8> {
        crate::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.mkv");
        let description = format!(
            "videotestsrc num-buffers={frames} ! video/x-raw,width=64,height=64 ! vp8enc ! matroskamux ! filesink location={}",
            path.display()
        );
        let pipeline = gst::parse::launch(&description).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        bus.timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Eos, gst::MessageType::Error]).unwrap();
        pipeline.set_state(gst::State::Null).unwrap();
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn a_segment_without_frames_holds_no_media() {
        assert!(!holds_media(&matroska_of(0)));
        assert!(holds_media(&matroska_of(3)));
    }
}
