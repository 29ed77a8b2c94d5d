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
