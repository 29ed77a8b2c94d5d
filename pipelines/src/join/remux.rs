//! The join as a GStreamer remux (demux, parse, concat, mux): slower than the box-level concat (every
//! sample passes through the elements), kept for chunks that concat refuses.

use crate::{PipelineError, make, mp4_info, runtime_error};
use gstreamer as gst;
use gstreamer::prelude::*;
use std::path::{Path, PathBuf};

/// `chunks`: MP4 files holding one H.264 and one AAC track each, in time order.
pub fn run(chunks: &[PathBuf], output: &Path) -> Result<(), PipelineError> {
    if chunks.is_empty() {
        return Err(PipelineError::Input("no chunks to join".into()));
    }
    // A chunk without both tracks would stall its stream's concat: refused before anything runs.
    for (index, chunk) in chunks.iter().enumerate() {
        let info = mp4_info::read(chunk).map_err(|e| PipelineError::Input(format!("chunk {index}: {e}")))?;
        for (entry, what) in [("avc", "H.264 video"), ("mp4a", "AAC audio")] {
            if !info.sample_entries.iter().any(|e| e.starts_with(entry)) {
                return Err(PipelineError::Input(format!("chunk {index} has no {what} track (made by an older transcoder?)")));
            }
        }
    }
    let pipeline = gst::Pipeline::with_name("join");
    let mux = make("mp4mux")?;
    mux.set_property("faststart", true);
    if let Some(dir) = output.parent() {
        mux.set_property("faststart-file", dir.join(".join-faststart.tmp").to_string_lossy().to_string());
    }
    let sink = make("filesink")?;
    sink.set_property("location", output.to_string_lossy().to_string());
    pipeline.add_many([&mux, &sink])?;
    mux.link(&sink)?;
    // `concat` plays its inputs one after the other, each continuing the running time of the last.
    let video = concat_into(&pipeline, &mux, "video_%u")?;
    let audio = concat_into(&pipeline, &mux, "audio_%u")?;
    for chunk in chunks {
        let video_parse = parse_into(&pipeline, &video, "h264parse")?;
        let audio_parse = parse_into(&pipeline, &audio, "aacparse")?;
        add_demuxed_file(&pipeline, chunk, vec![("video/", video_parse), ("audio/", audio_parse)])?;
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

/// concat → queue → a new `template` pad of the mux; returns the concat.
fn concat_into(pipeline: &gst::Pipeline, mux: &gst::Element, template: &str) -> Result<gst::Element, PipelineError> {
    let concat = make("concat")?;
    let queue = make("queue")?;
    // Unbounded: one demuxer feeds both concats, and where a chunk's audio outlasts its video (or the
    // reverse) the streams drift apart by that much per chunk; a queue that filled up with one stream
    // while the mux waited for the other would stop the join for good (an hour of 10 s chunks whose
    // audio was 5 ms longer than their video did, after about 1 s of drift). The mux takes both in
    // time order, so a queue holds at most the drift.
    for limit in ["max-size-buffers", "max-size-bytes"] {
        queue.set_property(limit, 0u32);
    }
    queue.set_property("max-size-time", 0u64);
    pipeline.add_many([&concat, &queue])?;
    concat.link(&queue)?;
    link_to_mux(&queue, mux, template)?;
    Ok(concat)
}

/// A new `parser` feeding a new sink pad of `concat` (pads are played in the order they were made).
fn parse_into(pipeline: &gst::Pipeline, concat: &gst::Element, parser: &str) -> Result<gst::Element, PipelineError> {
    let parse = make(parser)?;
    pipeline.add(&parse)?;
    let concat_pad = concat.request_pad_simple("sink_%u").ok_or_else(|| PipelineError::Build("concat pad".into()))?;
    parse.static_pad("src").expect("src pad").link(&concat_pad).map_err(|e| PipelineError::Build(format!("{e:?}")))?;
    Ok(parse)
}

fn link_to_mux(from: &gst::Element, mux: &gst::Element, template: &str) -> Result<(), PipelineError> {
    let pad = mux.request_pad_simple(template).ok_or_else(|| PipelineError::Build(format!("mp4mux {template} pad")))?;
    from.static_pad("src").expect("src pad").link(&pad).map_err(|e| PipelineError::Build(format!("{e:?}")))?;
    Ok(())
}

/// filesrc → qtdemux, its first stream of each media type linked to that type's element once it appears.
fn add_demuxed_file(pipeline: &gst::Pipeline, path: &Path, streams: Vec<(&'static str, gst::Element)>) -> Result<(), PipelineError> {
    if !path.exists() {
        return Err(PipelineError::Input(format!("{} does not exist", path.display())));
    }
    let source = make("filesrc")?;
    source.set_property("location", path.to_string_lossy().to_string());
    let demux = make("qtdemux")?;
    pipeline.add_many([&source, &demux])?;
    source.link(&demux)?;
    let sinks: Vec<(&'static str, gst::Pad)> = streams.into_iter().map(|(media, to)| (media, to.static_pad("sink").expect("sink pad"))).collect();
    demux.connect_pad_added(move |_, pad| {
        let Some(name) = pad.current_caps().and_then(|c| c.structure(0).map(|s| s.name().to_string())) else { return };
        let Some((_, sink)) = sinks.iter().find(|(media, sink)| name.starts_with(media) && !sink.is_linked()) else { return };
        if let Err(err) = pad.link(sink) {
            tracing::warn!(?err, "demuxed pad did not link");
        }
    });
    Ok(())
}
