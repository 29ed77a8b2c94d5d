//! Every GStreamer graph of the fleet. The roles' crates never build elements themselves: they describe
//! what they want (a synthetic room to capture, tracks to composite, files to re-encode) and this crate builds
//! and runs it.

pub mod aac_frames;
pub mod avc;
pub mod clip;
pub mod cuts;
pub mod encoders;
pub mod file_transcode;
pub mod join;
pub mod layout;
pub mod live;
pub mod look;
pub mod markers;
pub mod mp4_info;
pub mod poster;
pub mod segment_reader;
pub mod segment_writer;
pub mod synthetic_room;
pub mod track_writer;
pub mod transcode;

use gstreamer as gst;
use gstreamer::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),
    #[error("element {0} is missing (install the GStreamer plugin that provides it)")]
    MissingElement(String),
    #[error("building the pipeline failed: {0}")]
    Build(String),
    #[error("pipeline error from {source_name}: {message}")]
    Runtime { source_name: String, message: String },
    /// A write failed for want of space: the disk is full, not the media bad.
    #[error("the disk is full: {source_name}: {message}")]
    DiskFull { source_name: String, message: String },
    #[error("pipeline stalled: no progress for {0} s")]
    Stalled(u64),
    #[error("input: {0}")]
    Input(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<gst::glib::BoolError> for PipelineError {
    fn from(err: gst::glib::BoolError) -> Self {
        PipelineError::Build(err.to_string())
    }
}

impl From<gst::StateChangeError> for PipelineError {
    fn from(err: gst::StateChangeError) -> Self {
        PipelineError::Build(format!("state change failed: {err}"))
    }
}

/// Initialises GStreamer once per process; safe to call repeatedly.
pub fn init() -> Result<(), PipelineError> {
    gst::init().map_err(|e| PipelineError::Init(e.to_string()))
}

/// `ElementFactory::make` with a clear error naming the missing plugin element.
pub(crate) fn make(factory: &str) -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make(factory).build().map_err(|_| PipelineError::MissingElement(factory.to_string()))
}

/// Turns an error message from the bus into our error, naming the element that failed.
pub(crate) fn runtime_error(err: &gst::message::Error) -> PipelineError {
    let source_name = err.src().map(|s| s.path_string().to_string()).unwrap_or_else(|| "pipeline".into());
    let mut message = err.error().to_string();
    if let Some(debug) = err.debug() {
        message.push_str(&format!(" ({debug})"));
    }
    if err.error().matches(gst::ResourceError::NoSpaceLeft) {
        return PipelineError::DiskFull { source_name, message };
    }
    PipelineError::Runtime { source_name, message }
}
