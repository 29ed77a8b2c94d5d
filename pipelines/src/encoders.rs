//! H.264 encoder choice. Hardware encoders are probed by encoding a few frames for real: their plugins
//! load on machines without the hardware and only fail when used.

use crate::{PipelineError, make};
use gstreamer as gst;
use gstreamer::prelude::*;

/// Best first: GPU (NVIDIA, VA, legacy VA-API), then CPU.
pub const PREFERENCE: [&str; 5] = ["nvh264enc", "vah264enc", "vaapih264enc", "x264enc", "openh264enc"];

pub fn is_hardware(name: &str) -> bool {
    matches!(name, "nvh264enc" | "vah264enc" | "vaapih264enc")
}

/// The encoders that actually encode on this machine, best first.
pub fn probe() -> Vec<String> {
    PREFERENCE.iter().filter(|name| works(name)).map(|name| name.to_string()).collect()
}

fn works(name: &str) -> bool {
    if gst::ElementFactory::find(name).is_none() {
        return false;
    }
    let launch = format!("videotestsrc num-buffers=5 ! video/x-raw,width=320,height=240 ! videoconvert ! {name} ! fakesink");
    let Ok(pipeline) = gst::parse::launch(&launch) else { return false };
    let Some(bus) = pipeline.bus() else { return false };
    if pipeline.set_state(gst::State::Playing).is_err() {
        let _ = pipeline.set_state(gst::State::Null);
        return false;
    }
    let deadline = gst::ClockTime::from_seconds(10);
    let ok =
        matches!(bus.timed_pop_filtered(deadline, &[gst::MessageType::Eos, gst::MessageType::Error]).map(|m| m.type_()), Some(gst::MessageType::Eos));
    let _ = pipeline.set_state(gst::State::Null);
    ok
}

/// x264's speed presets, fastest first: each step trades compression (quality at the set bitrate) for
/// speed. Only the CPU encoder x264enc has them; the others ignore the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpeedPreset {
    Ultrafast,
    Superfast,
    #[default]
    Veryfast,
    Faster,
    Fast,
    Medium,
}

impl SpeedPreset {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ultrafast => "ultrafast",
            Self::Superfast => "superfast",
            Self::Veryfast => "veryfast",
            Self::Faster => "faster",
            Self::Fast => "fast",
            Self::Medium => "medium",
        }
    }

    const ALL: [SpeedPreset; 6] = [Self::Ultrafast, Self::Superfast, Self::Veryfast, Self::Faster, Self::Fast, Self::Medium];
}

/// A speed preset name x264 does not have (of those offered).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown x264 speed preset {0:?}")]
pub struct UnknownSpeedPreset(pub String);

impl std::str::FromStr for SpeedPreset {
    type Err = UnknownSpeedPreset;

    fn from_str(name: &str) -> Result<Self, UnknownSpeedPreset> {
        Self::ALL.into_iter().find(|p| p.as_str() == name).ok_or_else(|| UnknownSpeedPreset(name.into()))
    }
}

/// An encoder element set up for the given bitrate and keyframe interval (2 s).
pub fn make_h264(name: &str, kbps: u32, fps: u32, preset: SpeedPreset) -> Result<gst::Element, PipelineError> {
    let encoder = make(name)?;
    let gop = (fps * 2) as i64;
    match name {
        "x264enc" => {
            encoder.set_property("bitrate", kbps);
            encoder.set_property_from_str("speed-preset", preset.as_str());
            encoder.set_property("key-int-max", gop as u32);
        }
        "openh264enc" => {
            encoder.set_property("bitrate", kbps * 1000);
            encoder.set_property("gop-size", gop as u32);
        }
        "nvh264enc" => {
            encoder.set_property("bitrate", kbps);
            encoder.set_property("gop-size", gop as i32);
        }
        "vah264enc" => {
            encoder.set_property("bitrate", kbps);
            encoder.set_property("key-int-max", gop as u32);
        }
        "vaapih264enc" => {
            encoder.set_property("bitrate", kbps);
            encoder.set_property("keyframe-period", gop as u32);
        }
        _ => {}
    }
    Ok(encoder)
}
