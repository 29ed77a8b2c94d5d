//! The live composite's inputs: one bin per track (`appsrc → decoder → … → compositor or mixer pad`),
//! added and removed while the composite runs, and the grid the video tiles are laid out in.

use super::LiveSpec;
use crate::layout::{self, Tile};
use crate::look;
use crate::track_writer::TrackCodec;
use crate::transcode::{mixer_caps, place, tile_caps};
use crate::{PipelineError, make};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::collections::BTreeMap;

/// Input bins are named this plus their track's key, so a failure is traced to its track.
const BIN_PREFIX: &str = "live-input-";

struct Input {
    bin: gst::Bin,
    source: gst_app::AppSrc,
    /// The compositor's or mixer's pad the bin feeds.
    pad: gst::Pad,
    /// A video input's size filter (its tile); `None` for audio.
    tile_filter: Option<gst::Element>,
}

pub(super) struct Inputs {
    pipeline: gst::Pipeline,
    compositor: gst::Element,
    mixer: gst::Element,
    spec: LiveSpec,
    by_track: BTreeMap<String, Input>,
}

impl Inputs {
    pub(super) fn new(pipeline: gst::Pipeline, compositor: gst::Element, mixer: gst::Element, spec: LiveSpec) -> Inputs {
        Inputs { pipeline, compositor, mixer, spec, by_track: BTreeMap::new() }
    }

    pub(super) fn add(&mut self, track: &str, name: &str, codec: TrackCodec) -> Result<(), PipelineError> {
        self.remove(track);
        let input = match codec {
            TrackCodec::Opus => self.audio_input(track)?,
            video => self.video_input(track, name, video)?,
        };
        input.bin.sync_state_with_parent()?;
        self.by_track.insert(track.into(), input);
        self.lay_out();
        // The new branch's latency counts from now (see `watch_bus`).
        super::recalculate_latency(&self.pipeline);
        Ok(())
    }

    pub(super) fn push(&self, track: &str, pts_ns: u64, duration_ns: u64, data: &[u8], keyframe: bool) {
        let Some(input) = self.by_track.get(track) else { return };
        let mut buffer = gst::Buffer::from_mut_slice(data.to_vec());
        {
            let buffer = buffer.get_mut().expect("a new buffer is writable");
            buffer.set_pts(gst::ClockTime::from_nseconds(pts_ns));
            buffer.set_duration(gst::ClockTime::from_nseconds(duration_ns.max(1_000_000)));
            if !keyframe {
                buffer.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        // A refused frame means the branch failed or is going: its error is on the bus.
        let _ = input.source.push_buffer(buffer);
    }

    pub(super) fn remove(&mut self, track: &str) {
        let Some(input) = self.by_track.remove(track) else { return };
        let _ = input.bin.set_state(gst::State::Null);
        let _ = self.pipeline.remove(&input.bin);
        let parent = input.pad.parent_element();
        if let Some(aggregator) = parent {
            aggregator.release_request_pad(&input.pad);
        }
        self.lay_out();
    }

    /// An even grid of the video inputs in track order.
    fn lay_out(&self) {
        let videos: Vec<&Input> = self.by_track.values().filter(|i| i.tile_filter.is_some()).collect();
        let tiles = layout::grid(videos.len(), self.spec.width, self.spec.height);
        for (order, (input, tile)) in videos.iter().zip(tiles).enumerate() {
            if let Some(filter) = &input.tile_filter {
                filter.set_property("caps", tile_caps(tile));
            }
            place(&input.pad, tile, order as u32 + 1);
        }
    }

    fn video_input(&self, track: &str, name: &str, codec: TrackCodec) -> Result<Input, PipelineError> {
        let caps = match codec {
            TrackCodec::Vp8 => gst::Caps::builder("video/x-vp8").build(),
            TrackCodec::Vp9 => gst::Caps::builder("video/x-vp9").build(),
            _ => gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream").field("alignment", "au").build(),
        };
        let mut chain = match codec {
            TrackCodec::Vp8 => vec![make("vp8dec")?],
            TrackCodec::Vp9 => vec![make("vp9dec")?],
            _ => vec![make("h264parse")?, make("avdec_h264")?],
        };
        let scale = make("videoscale")?;
        scale.set_property("add-borders", true);
        let filter = make("capsfilter")?;
        filter.set_property("caps", tile_caps(Tile { x: 0, y: 0, width: 320, height: 180 }));
        chain.extend([make("videoconvert")?, scale, filter.clone()]);
        if self.spec.look.names && !name.is_empty() {
            chain.push(look::name_overlay(&self.spec.look, name, self.spec.height)?);
        }
        chain.push(make("queue")?);
        let pad = self.compositor.request_pad_simple("sink_%u").ok_or_else(|| PipelineError::Build("compositor pad".into()))?;
        pad.set_property_from_str("sizing-policy", "keep-aspect-ratio");
        let (bin, source) = self.input_bin(track, &caps, &chain, &pad)?;
        Ok(Input { bin, source, pad, tile_filter: Some(filter) })
    }

    fn audio_input(&self, track: &str) -> Result<Input, PipelineError> {
        let caps = gst::Caps::builder("audio/x-opus").field("rate", 48_000i32).field("channels", 2i32).field("channel-mapping-family", 0i32).build();
        let decoder = make("opusdec")?;
        // Lost packets are concealed rather than left as gaps the mixer fills with silence.
        decoder.set_property("plc", true);
        let filter = make("capsfilter")?;
        filter.set_property("caps", mixer_caps());
        let chain = [decoder, make("audioconvert")?, make("audioresample")?, filter, make("queue")?];
        let pad = self.mixer.request_pad_simple("sink_%u").ok_or_else(|| PipelineError::Build("mixer pad".into()))?;
        let (bin, source) = self.input_bin(track, &caps, &chain, &pad)?;
        Ok(Input { bin, source, pad, tile_filter: None })
    }

    /// `appsrc → chain` in a bin named after the track, its end linked to `pad`.
    fn input_bin(&self, track: &str, caps: &gst::Caps, chain: &[gst::Element], pad: &gst::Pad) -> Result<(gst::Bin, gst_app::AppSrc), PipelineError> {
        let source =
            gst_app::AppSrc::builder().caps(caps).format(gst::Format::Time).is_live(true).do_timestamp(false).max_bytes(8 << 20).block(false).build();
        let bin = gst::Bin::with_name(&format!("{BIN_PREFIX}{track}"));
        bin.add(&source)?;
        bin.add_many(chain)?;
        source.link(&chain[0])?;
        gst::Element::link_many(chain)?;
        let last = chain.last().expect("a chain").static_pad("src").expect("src pad");
        let ghost = gst::GhostPad::with_target(&last)?;
        bin.add_pad(&ghost)?;
        self.pipeline.add(&bin)?;
        ghost.link(pad).map_err(|e| PipelineError::Build(format!("linking input {track}: {e:?}")))?;
        Ok((bin, source))
    }
}

/// The track whose input bin holds `object`, if any.
pub(super) fn input_of(object: &gst::Object) -> Option<String> {
    let mut at = Some(object.clone());
    while let Some(object) = at {
        if let Some(track) = object.name().strip_prefix(BIN_PREFIX) {
            return Some(track.to_string());
        }
        at = object.parent();
    }
    None
}
