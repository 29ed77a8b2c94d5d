//! A/V sync markers of synthetic participants: once a second, at the same instant, a white flash on the
//! video and a tone burst on the audio. Each participant has its own colour and tone so a checker can tell
//! them apart. Applied as pad probes keyed on buffer timestamps, so markers sit exactly on whole seconds.

use gstreamer as gst;
use gstreamer::prelude::*;

/// How long each flash and beep lasts.
pub const MARKER_NS: u64 = 100_000_000;

/// Background colours (ARGB) and tone frequencies per participant index.
const COLOURS: [u32; 9] = [0xffc0392b, 0xff27ae60, 0xff2e86c1, 0xfff1c40f, 0xff8e44ad, 0xff16a085, 0xffe67e22, 0xff7f8c8d, 0xffd35400];

pub fn colour(index: usize) -> u32 {
    COLOURS[index % COLOURS.len()]
}

pub fn tone_hz(index: usize) -> f64 {
    440.0 + 110.0 * (index % 9) as f64
}

fn in_marker(ns: u64) -> bool {
    ns % 1_000_000_000 < MARKER_NS
}

/// Paints I420 frames white (Y=235, U=V=128) while a marker is on. A live source's frames have an
/// arbitrary phase against whole seconds, so a frame is judged by its centre: the flash starts on the
/// frame nearest the marker (at most half a frame off) rather than on the first frame after it.
pub fn add_flash_probe(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::BUFFER, |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() {
            let half_frame = buffer.duration().map(|d| d.nseconds() / 2).unwrap_or(0);
            if buffer.pts().is_some_and(|pts| in_marker(pts.nseconds() + half_frame)) {
                let buffer = buffer.make_mut();
                if let Ok(mut map) = buffer.map_writable() {
                    let data = map.as_mut_slice();
                    // I420: the luma plane is 2/3 of the frame, chroma the rest.
                    let luma = data.len() * 2 / 3;
                    data[..luma].fill(235);
                    data[luma..].fill(128);
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// Silences S16 interleaved audio outside the markers, leaving a tone burst at each whole second.
pub fn add_beep_probe(pad: &gst::Pad, rate: u32, channels: u32) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() {
            let Some(pts) = buffer.pts() else { return gst::PadProbeReturn::Ok };
            let start_ns = pts.nseconds();
            let buffer = buffer.make_mut();
            if let Ok(mut map) = buffer.map_writable() {
                let frame_bytes = 2 * channels as usize;
                for (i, frame) in map.as_mut_slice().chunks_exact_mut(frame_bytes).enumerate() {
                    let t = start_ns + i as u64 * 1_000_000_000 / rate as u64;
                    if !in_marker(t) {
                        frame.fill(0);
                    }
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// Audio of the marked sources: 48 kHz stereo S16, 20 ms buffers (one Opus packet each).
pub const AUDIO_RATE: u32 = 48_000;
pub const AUDIO_CHANNELS: u32 = 2;

/// A participant's camera: solid colour with a flash on every whole second. `frames`: stop after that
/// many (a clip); `None`: run live.
pub fn video_source(index: usize, width: u32, height: u32, fps: u32, frames: Option<u32>) -> Result<Vec<gst::Element>, crate::PipelineError> {
    let source = crate::make("videotestsrc")?;
    match frames {
        Some(frames) => source.set_property("num-buffers", frames as i32),
        None => source.set_property("is-live", true),
    }
    source.set_property_from_str("pattern", "solid-color");
    source.set_property("foreground-color", colour(index));
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", width as i32)
        .field("height", height as i32)
        .field("framerate", gst::Fraction::new(fps as i32, 1))
        .build();
    let filter = crate::make("capsfilter")?;
    filter.set_property("caps", &caps);
    add_flash_probe(&filter.static_pad("src").expect("capsfilter src"));
    Ok(vec![source, filter])
}

/// A participant's microphone: silence with a tone burst on every whole second. `buffers`: stop after
/// that many 20 ms buffers; `None`: run live.
pub fn audio_source(index: usize, buffers: Option<u32>) -> Result<Vec<gst::Element>, crate::PipelineError> {
    let source = crate::make("audiotestsrc")?;
    match buffers {
        Some(buffers) => source.set_property("num-buffers", buffers as i32),
        None => source.set_property("is-live", true),
    }
    source.set_property("samplesperbuffer", (AUDIO_RATE / 50) as i32);
    source.set_property("freq", tone_hz(index));
    source.set_property("volume", 0.5f64);
    let caps = gst::Caps::builder("audio/x-raw")
        .field("format", "S16LE")
        .field("layout", "interleaved")
        .field("rate", AUDIO_RATE as i32)
        .field("channels", AUDIO_CHANNELS as i32)
        .build();
    let filter = crate::make("capsfilter")?;
    filter.set_property("caps", &caps);
    add_beep_probe(&filter.static_pad("src").expect("capsfilter src"), AUDIO_RATE, AUDIO_CHANNELS);
    Ok(vec![source, filter])
}
