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
/// Placeholder bins are named this plus their participant.
const PLACEHOLDER_PREFIX: &str = "live-placeholder-";
/// A placeholder that failed this often is not made again (its tile stays empty).
const PLACEHOLDER_ATTEMPTS: u32 = 3;

struct Input {
    bin: gst::Bin,
    source: gst_app::AppSrc,
    /// The compositor's or mixer's pad the bin feeds.
    pad: gst::Pad,
    /// A video input's size filter (its tile); `None` for audio.
    tile_filter: Option<gst::Element>,
    /// Its publisher (identity) and the name shown for them.
    participant: String,
    name: String,
    /// A muted camera is not shown: its participant gets a placeholder.
    muted: bool,
}

/// A participant without a camera shown: their initials on a flat tile, and their name.
struct Placeholder {
    bin: gst::Bin,
    pad: gst::Pad,
    tile_filter: gst::Element,
}

/// What fills one grid tile.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// A video input, by track.
    Video(String),
    /// A participant's placeholder.
    Placeholder(String),
}

/// The grid's slots in order: each participant (by identity) with their shown cameras, or their
/// placeholder when they have none shown but are heard. `tracks`: (track, participant, is video, muted).
fn plan_slots<'a>(tracks: impl IntoIterator<Item = (&'a str, &'a str, bool, bool)>) -> Vec<Slot> {
    let mut by_participant: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (track, participant, video, muted) in tracks {
        let cameras = by_participant.entry(participant).or_default();
        if video && !muted {
            cameras.push(track);
        }
    }
    let mut slots = Vec::new();
    for (participant, mut cameras) in by_participant {
        cameras.sort_unstable();
        if cameras.is_empty() {
            slots.push(Slot::Placeholder(participant.to_string()));
        } else {
            slots.extend(cameras.into_iter().map(|t| Slot::Video(t.to_string())));
        }
    }
    slots
}

pub(super) struct Inputs {
    pipeline: gst::Pipeline,
    compositor: gst::Element,
    mixer: gst::Element,
    spec: LiveSpec,
    by_track: BTreeMap<String, Input>,
    placeholders: BTreeMap<String, Placeholder>,
    /// The active speaker's outline: four bars (none when the look has no outline).
    outline: Vec<gst::Pad>,
    speaker: Option<String>,
    /// Placeholders that failed, by participant: how often.
    failed_placeholders: BTreeMap<String, u32>,
}

impl Inputs {
    pub(super) fn new(pipeline: gst::Pipeline, compositor: gst::Element, mixer: gst::Element, spec: LiveSpec) -> Result<Inputs, PipelineError> {
        let mut outline = Vec::new();
        if let Some(argb) = spec.look.highlight_argb {
            for _ in 0..4 {
                outline.push(live_solid_pad(&pipeline, &compositor, argb, (16, 16), spec.fps)?);
            }
        }
        Ok(Inputs {
            pipeline,
            compositor,
            mixer,
            spec,
            by_track: BTreeMap::new(),
            placeholders: BTreeMap::new(),
            outline,
            speaker: None,
            failed_placeholders: BTreeMap::new(),
        })
    }

    pub(super) fn add(&mut self, track: &str, participant: &str, name: &str, codec: TrackCodec) -> Result<(), PipelineError> {
        self.remove(track);
        let mut input = match codec {
            TrackCodec::Opus => self.audio_input(track)?,
            video => self.video_input(track, name, video)?,
        };
        input.participant = participant.to_string();
        input.name = name.to_string();
        input.bin.sync_state_with_parent()?;
        self.by_track.insert(track.into(), input);
        self.lay_out();
        // The new branch's latency counts from now (see `watch_bus`).
        super::recalculate_latency(&self.pipeline);
        Ok(())
    }

    /// A camera muted (or unmuted): shown as its participant's placeholder meanwhile.
    pub(super) fn set_muted(&mut self, track: &str, muted: bool) {
        if let Some(input) = self.by_track.get_mut(track)
            && input.muted != muted
        {
            input.muted = muted;
            self.lay_out();
        }
    }

    /// The participant whose tile is outlined (none: no outline).
    pub(super) fn set_speaker(&mut self, participant: Option<&str>) {
        if self.speaker.as_deref() != participant {
            self.speaker = participant.map(str::to_string);
            self.lay_out();
        }
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
        self.drop_branch(&input.bin, &input.pad);
        self.lay_out();
    }

    /// An even grid of the slots (cameras and placeholders, by participant), the speaker outlined.
    fn lay_out(&mut self) {
        let slots = plan_slots(self.by_track.iter().map(|(track, i)| (track.as_str(), i.participant.as_str(), i.tile_filter.is_some(), i.muted)));
        self.keep_placeholders(&slots);
        let tiles = layout::with_gap(layout::grid(slots.len(), self.spec.width, self.spec.height), self.spec.look.gap_px(self.spec.height));
        for input in self.by_track.values().filter(|i| i.tile_filter.is_some()) {
            input.pad.set_property("alpha", 0.0f64);
        }
        let mut speaker_tile = None;
        for (order, (slot, tile)) in slots.iter().zip(tiles).enumerate() {
            let (pad, filter, participant) = match slot {
                Slot::Video(track) => {
                    let input = &self.by_track[track];
                    (&input.pad, input.tile_filter.as_ref(), input.participant.as_str())
                }
                Slot::Placeholder(participant) => match self.placeholders.get(participant) {
                    Some(placeholder) => (&placeholder.pad, Some(&placeholder.tile_filter), participant.as_str()),
                    None => continue,
                },
            };
            if let Some(filter) = filter {
                filter.set_property("caps", tile_caps(tile));
            }
            place(pad, tile, order as u32 + 1);
            if speaker_tile.is_none() && self.speaker.as_deref() == Some(participant) {
                speaker_tile = Some(tile);
            }
        }
        match speaker_tile {
            Some(tile) => {
                let by = (look::OUTLINE_PX * self.spec.height as i32 / 720).max(1);
                for (pad, bar) in self.outline.iter().zip(layout::outline(tile, by, self.spec.width, self.spec.height)) {
                    place(pad, bar, look::OUTLINE_ZORDER);
                }
            }
            None => self.outline.iter().for_each(|pad| pad.set_property("alpha", 0.0f64)),
        }
    }

    /// A placeholder's branch failed: it goes, and is made again (a few times at most).
    pub(super) fn placeholder_failed(&mut self, participant: &str) {
        if let Some(placeholder) = self.placeholders.remove(participant) {
            self.drop_branch(&placeholder.bin, &placeholder.pad);
        }
        *self.failed_placeholders.entry(participant.to_string()).or_default() += 1;
        self.lay_out();
    }

    /// Placeholders come and go with the slots that need them.
    fn keep_placeholders(&mut self, slots: &[Slot]) {
        let wanted: Vec<&str> = slots.iter().filter_map(|s| if let Slot::Placeholder(p) = s { Some(p.as_str()) } else { None }).collect();
        let gone: Vec<String> = self.placeholders.keys().filter(|p| !wanted.contains(&p.as_str())).cloned().collect();
        for participant in gone {
            if let Some(placeholder) = self.placeholders.remove(&participant) {
                self.drop_branch(&placeholder.bin, &placeholder.pad);
            }
        }
        for participant in wanted {
            if self.placeholders.contains_key(participant) || self.failed_placeholders.get(participant) >= Some(&PLACEHOLDER_ATTEMPTS) {
                continue;
            }
            let name = self.by_track.values().find(|i| i.participant == participant).map_or(participant, |i| i.name.as_str()).to_string();
            match self.placeholder(participant, &name) {
                Ok(placeholder) => {
                    self.placeholders.insert(participant.to_string(), placeholder);
                }
                Err(err) => tracing::warn!(participant, %err, "the live placeholder could not be made"),
            }
        }
    }

    /// A branch leaves the running composite: stopped, removed, its aggregator pad released.
    fn drop_branch(&self, bin: &gst::Bin, pad: &gst::Pad) {
        let _ = bin.set_state(gst::State::Null);
        let _ = self.pipeline.remove(bin);
        if let Some(aggregator) = pad.parent_element() {
            aggregator.release_request_pad(pad);
        }
    }

    /// A live flat tile with the participant's initials, scaled to its tile, then named.
    fn placeholder(&self, participant: &str, name: &str) -> Result<Placeholder, PipelineError> {
        let (source, size) = live_solid_source(crate::transcode::PLACEHOLDER_ARGB, (640, 360), self.spec.fps)?;
        let mut chain = vec![source, size, look::initials_overlay(&self.spec.look, &layout::initials(name))?];
        let tile_filter = make("capsfilter")?;
        tile_filter.set_property("caps", tile_caps(Tile { x: 0, y: 0, width: 320, height: 180 }));
        chain.extend([make("videoconvert")?, make("videoscale")?, tile_filter.clone()]);
        if self.spec.look.names {
            chain.push(look::name_overlay(&self.spec.look, name, self.spec.height)?);
        }
        chain.push(make("queue")?);
        let bin = gst::Bin::with_name(&format!("{PLACEHOLDER_PREFIX}{participant}"));
        bin.add_many(&chain)?;
        gst::Element::link_many(&chain)?;
        let ghost = gst::GhostPad::with_target(&chain.last().expect("a chain").static_pad("src").expect("src pad"))?;
        bin.add_pad(&ghost)?;
        self.pipeline.add(&bin)?;
        let pad = self.compositor.request_pad_simple("sink_%u").ok_or_else(|| PipelineError::Build("compositor pad".into()))?;
        pad.set_property("alpha", 0.0f64);
        ghost.link(&pad).map_err(|e| PipelineError::Build(format!("linking a placeholder: {e:?}")))?;
        bin.sync_state_with_parent()?;
        Ok(Placeholder { bin, pad, tile_filter })
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
        Ok(Input { bin, source, pad, tile_filter: Some(filter), participant: String::new(), name: String::new(), muted: false })
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
        Ok(Input { bin, source, pad, tile_filter: None, participant: String::new(), name: String::new(), muted: false })
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
    bin_named(object, BIN_PREFIX)
}

/// The participant whose placeholder bin holds `object`, if any.
pub(super) fn placeholder_of(object: &gst::Object) -> Option<String> {
    bin_named(object, PLACEHOLDER_PREFIX)
}

fn bin_named(object: &gst::Object, prefix: &str) -> Option<String> {
    let mut at = Some(object.clone());
    while let Some(object) = at {
        if let Some(key) = object.name().strip_prefix(prefix) {
            return Some(key.to_string());
        }
        at = object.parent();
    }
    None
}

/// A live source of one colour, `width`×`height` at `fps`: source and caps filter, not yet added.
fn live_solid_source(argb: u32, size: (i32, i32), fps: u32) -> Result<(gst::Element, gst::Element), PipelineError> {
    let (source, filter) = crate::transcode::solid_colour(argb, size, fps)?;
    source.set_property("is-live", true);
    Ok((source, filter))
}

/// A live solid-colour frame on its own hidden compositor pad (scaled there to where it is placed).
fn live_solid_pad(pipeline: &gst::Pipeline, compositor: &gst::Element, argb: u32, size: (i32, i32), fps: u32) -> Result<gst::Pad, PipelineError> {
    let (source, filter) = live_solid_source(argb, size, fps)?;
    pipeline.add_many([&source, &filter])?;
    source.link(&filter)?;
    let pad = compositor.request_pad_simple("sink_%u").ok_or_else(|| PipelineError::Build("compositor pad".into()))?;
    pad.set_property("alpha", 0.0f64);
    filter.static_pad("src").expect("src pad").link(&pad).map_err(|e| PipelineError::Build(format!("outline: {e:?}")))?;
    Ok(pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participants_show_their_cameras_or_a_placeholder_when_heard_only() {
        let slots = plan_slots([
            ("TR_b2", "bob", true, false),
            ("TR_a1", "alice", true, false),
            ("TR_a0", "alice", false, false),
            ("TR_c0", "carol", false, false),
            ("TR_d1", "dana", true, true),
            ("TR_b1", "bob", true, false),
        ]);
        let video = |t: &str| Slot::Video(t.into());
        let placeholder = |p: &str| Slot::Placeholder(p.into());
        assert_eq!(slots, vec![video("TR_a1"), video("TR_b1"), video("TR_b2"), placeholder("carol"), placeholder("dana")]);
        assert!(plan_slots([]).is_empty());
    }
}
