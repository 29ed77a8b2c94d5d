//! A recording's poster: one JPEG frame of the finished MP4, decoded at a chosen instant (the list
//! views and players show it before playback).

use crate::{PipelineError, make, runtime_error};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::path::Path;

/// Where the poster is taken: a quarter in (past the joins of the first seconds), at most a minute in.
pub fn poster_instant_ns(duration_ns: u64) -> u64 {
    (duration_ns / 4).min(60_000_000_000)
}

/// Writes the frame of `mp4` shown at `at_ns` as a JPEG to `out`; returns its size in bytes.
pub fn write(mp4: &Path, at_ns: u64, out: &Path) -> Result<u64, PipelineError> {
    let pipeline = gst::Pipeline::with_name("poster");
    let source = make("filesrc")?;
    source.set_property("location", mp4.to_string_lossy().to_string());
    let decode = make("decodebin")?;
    let convert = make("videoconvert")?;
    let encode = make("jpegenc")?;
    encode.set_property("quality", 85i32);
    let sink = gst_app::AppSink::builder().sync(false).max_buffers(1).build();
    pipeline.add_many([&source, &decode, &convert, &encode, sink.upcast_ref()])?;
    source.link(&decode)?;
    gst::Element::link_many([&convert, &encode, sink.upcast_ref()])?;
    // Video to the encoder; any other stream (the audio) to a sink of its own, so it never blocks.
    let (video_in, pipeline_weak) = (convert.static_pad("sink").expect("sink pad"), pipeline.downgrade());
    decode.connect_pad_added(move |_, pad| {
        let is_video = pad.current_caps().and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/"))).unwrap_or(false);
        if is_video && !video_in.is_linked() {
            let _ = pad.link(&video_in);
        } else if let Some(pipeline) = pipeline_weak.upgrade()
            && let Ok(drain) = make("fakesink")
        {
            drain.set_property("sync", false);
            let _ = pipeline.add(&drain);
            let _ = drain.sync_state_with_parent();
            let _ = pad.link(&drain.static_pad("sink").expect("sink pad"));
        }
    });
    let result = frame_at(&pipeline, &sink, at_ns);
    let _ = pipeline.set_state(gst::State::Null);
    let jpeg = result?;
    std::fs::write(out, &jpeg)?;
    Ok(jpeg.len() as u64)
}

/// Prerolls, seeks to `at_ns` (accurate: the frame shown then, not the keyframe before it) and takes
/// the prerolled frame.
fn frame_at(pipeline: &gst::Pipeline, sink: &gst_app::AppSink, at_ns: u64) -> Result<Vec<u8>, PipelineError> {
    pipeline.set_state(gst::State::Paused)?;
    wait_for_preroll(pipeline)?;
    let flags = gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE;
    pipeline.seek_simple(flags, gst::ClockTime::from_nseconds(at_ns)).map_err(|e| PipelineError::Input(format!("poster seek: {e}")))?;
    wait_for_preroll(pipeline)?;
    let sample = sink.pull_preroll().map_err(|_| PipelineError::Input("no video frame for the poster".into()))?;
    let buffer = sample.buffer().ok_or_else(|| PipelineError::Input("an empty poster frame".into()))?;
    let map = buffer.map_readable().map_err(|_| PipelineError::Input("unreadable poster frame".into()))?;
    Ok(map.as_slice().to_vec())
}

fn wait_for_preroll(pipeline: &gst::Pipeline) -> Result<(), PipelineError> {
    let bus = pipeline.bus().expect("pipelines have a bus");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let Some(message) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) else { continue };
        match message.view() {
            gst::MessageView::AsyncDone(_) => return Ok(()),
            gst::MessageView::Error(err) => return Err(runtime_error(err)),
            gst::MessageView::Eos(_) => return Err(PipelineError::Input("the recording ended before the poster's instant".into())),
            _ => {}
        }
    }
    Err(PipelineError::Stalled(30))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_poster_is_a_quarter_in_and_at_most_a_minute() {
        assert_eq!(super::poster_instant_ns(20_000_000_000), 5_000_000_000);
        assert_eq!(super::poster_instant_ns(3_600_000_000_000), 60_000_000_000);
    }
}
