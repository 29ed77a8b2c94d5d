//! The pre-encoded clips every synthetic participant replays, made once per participant and codec and
//! cached on disk (pipelines::clip).

use crate::scenario::{Scenario, VideoCodec};
use fleet_pipelines::clip::{Clip, ClipCodec, ClipSpec};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 720;
pub const FPS: u32 = 30;
const VIDEO_BITRATE_BPS: u32 = 1_500_000;
/// Loop length: whole seconds keep the markers one second apart across loops.
const SECONDS: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Video(VideoCodec),
    Audio,
}

#[derive(Default)]
pub struct ClipSet {
    clips: HashMap<(Kind, usize), Arc<Clip>>,
}

impl ClipSet {
    /// Encodes (or loads from `cache_dir`) every clip the scenario's participants need.
    pub fn prepare(scenario: &Scenario, cache_dir: &Path) -> anyhow::Result<ClipSet> {
        let mut set = ClipSet::default();
        for room in &scenario.rooms {
            for (index, participant) in room.participants.iter().enumerate() {
                set.ensure(Kind::Video(participant.video_codec), index, scenario.camera_like, cache_dir)?;
                if participant.switch_codec_at_s.is_some() {
                    set.ensure(Kind::Video(participant.video_codec.other()), index, scenario.camera_like, cache_dir)?;
                }
                set.ensure(Kind::Audio, index, false, cache_dir)?;
            }
        }
        Ok(set)
    }

    fn ensure(&mut self, kind: Kind, index: usize, camera_like: bool, cache_dir: &Path) -> anyhow::Result<()> {
        if self.clips.contains_key(&(kind, index)) {
            return Ok(());
        }
        let codec = match kind {
            Kind::Video(VideoCodec::Vp8) => ClipCodec::Vp8,
            Kind::Video(VideoCodec::H264) => ClipCodec::H264,
            Kind::Audio => ClipCodec::Opus,
        };
        let spec = ClipSpec {
            codec,
            participant_index: index,
            width: WIDTH,
            height: HEIGHT,
            fps: FPS,
            video_bitrate_bps: VIDEO_BITRATE_BPS,
            seconds: SECONDS,
            camera_like,
        };
        let started = std::time::Instant::now();
        let clip = Clip::load_or_encode(&spec, cache_dir)?;
        tracing::debug!(codec = codec.as_str(), index, frames = clip.frames.len(), ms = started.elapsed().as_millis() as u64, "clip ready");
        self.clips.insert((kind, index), Arc::new(clip));
        Ok(())
    }

    pub fn get(&self, kind: Kind, index: usize) -> Option<Arc<Clip>> {
        self.clips.get(&(kind, index)).cloned()
    }
}
