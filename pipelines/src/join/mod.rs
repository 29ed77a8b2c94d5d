//! Joins the chunks of a chunked transcode, in order, into one faststart MP4 without re-encoding:
//! each chunk's video starts on a keyframe and was encoded with the same settings, so their H.264
//! streams follow on from each other; each chunk's audio is its share of the recording's AAC frames
//! (see [`crate::aac_frames`]), so those follow on too.
//!
//! Box by box first ([`concat`]: the media bytes copied, the sample tables laid end to end), and by a
//! GStreamer remux ([`remux`]) for chunks that do not follow on exactly.

mod boxes;
pub mod concat;
pub mod remux;
mod tables;

use crate::PipelineError;
use std::path::{Path, PathBuf};

/// `chunks`: MP4 files holding one H.264 and one AAC track each, in time order.
pub fn run(chunks: &[PathBuf], output: &Path) -> Result<(), PipelineError> {
    if chunks.is_empty() {
        return Err(PipelineError::Input("no chunks to join".into()));
    }
    match concat::run(chunks, output) {
        Ok(()) => Ok(()),
        Err(concat::ConcatError::Refused(reason)) => {
            tracing::warn!(%reason, "the chunks do not join box by box; remuxing them");
            remux::run(chunks, output)
        }
        Err(concat::ConcatError::Io(err)) => Err(err.into()),
    }
}
