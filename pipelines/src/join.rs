//! Joins the video chunks of a chunked transcode, in order, with the recording's audio into one
//! faststart MP4, without re-encoding: each chunk starts on a keyframe and was encoded with the same
//! settings, so their H.264 streams follow on from each other.

use crate::{PipelineError, make, runtime_error};
use gstreamer as gst;
use gstreamer::prelude::*;
use std::path::{Path, PathBuf};

/// `chunks`: MP4 files holding one H.264 track each, in time order. `audio`: an M4A as long as the
/// whole recording (absent for no audio).
pub fn run(chunks: &[PathBuf], audio: Option<&Path>, output: &Path) -> Result<(), PipelineError> {
    if chunks.is_empty() {
        return Err(PipelineError::Input("no chunks to join".into()));
    }
    let pipeline = gst::Pipeline::with_name("join");
    let mux = make("mp4mux")?;
    mux.set_property("faststart", true);
    if let Some(dir) = output.parent() {
        mux.set_property("faststart-file", dir.join(".join-faststart.tmp").to_string_lossy().to_string());
    }
    let sink = make("filesink")?;
    sink.set_property("location", output.to_string_lossy().to_string());
    // `concat` plays its inputs one after the other, each continuing the running time of the last.
    let concat = make("concat")?;
    let video_queue = make("queue")?;
    pipeline.add_many([&mux, &sink, &concat, &video_queue])?;
    mux.link(&sink)?;
    concat.link(&video_queue)?;
    link_to_mux(&video_queue, &mux, "video_%u")?;

    for chunk in chunks {
        let parse = make("h264parse")?;
        pipeline.add(&parse)?;
        let concat_pad = concat.request_pad_simple("sink_%u").ok_or_else(|| PipelineError::Build("concat pad".into()))?;
        parse.static_pad("src").expect("src pad").link(&concat_pad).map_err(|e| PipelineError::Build(format!("{e:?}")))?;
        add_demuxed_file(&pipeline, chunk, "video/", &parse)?;
    }
    if let Some(audio) = audio {
        let parse = make("aacparse")?;
        let queue = make("queue")?;
        pipeline.add_many([&parse, &queue])?;
        parse.link(&queue)?;
        link_to_mux(&queue, &mux, "audio_%u")?;
        add_demuxed_file(&pipeline, audio, "audio/", &parse)?;
    }

    let bus = pipeline.bus().expect("pipelines have a bus");
    pipeline.set_state(gst::State::Playing)?;
    let result = match bus.timed_pop_filtered(gst::ClockTime::NONE, &[gst::MessageType::Eos, gst::MessageType::Error]) {
        Some(message) => match message.view() {
            gst::MessageView::Error(err) => Err(runtime_error(err)),
            _ => Ok(()),
        },
        None => Err(PipelineError::Build("the join pipeline's bus closed".into())),
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn link_to_mux(from: &gst::Element, mux: &gst::Element, template: &str) -> Result<(), PipelineError> {
    let pad = mux.request_pad_simple(template).ok_or_else(|| PipelineError::Build(format!("mp4mux {template} pad")))?;
    from.static_pad("src").expect("src pad").link(&pad).map_err(|e| PipelineError::Build(format!("{e:?}")))?;
    Ok(())
}

/// filesrc → qtdemux, its first stream of `media` linked to `to` once it appears.
fn add_demuxed_file(pipeline: &gst::Pipeline, path: &Path, media: &'static str, to: &gst::Element) -> Result<(), PipelineError> {
    if !path.exists() {
        return Err(PipelineError::Input(format!("{} does not exist", path.display())));
    }
    let source = make("filesrc")?;
    source.set_property("location", path.to_string_lossy().to_string());
    let demux = make("qtdemux")?;
    pipeline.add_many([&source, &demux])?;
    source.link(&demux)?;
    let sink = to.static_pad("sink").expect("sink pad");
    demux.connect_pad_added(move |_, pad| {
        let wanted = pad.current_caps().and_then(|c| c.structure(0).map(|s| s.name().starts_with(media))).unwrap_or(false);
        if wanted
            && !sink.is_linked()
            && let Err(err) = pad.link(&sink)
        {
            tracing::warn!(?err, "demuxed pad did not link");
        }
    });
    Ok(())
}
