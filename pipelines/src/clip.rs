//! Pre-encoded clips for synthetic participants (tests/devroom): a few seconds of a participant's
//! camera or microphone with the A/V sync markers, encoded once and cached on disk, then replayed in a
//! loop. Live 720p encoding costs about two cores per participant on the build machines; a replayed
//! clip costs almost nothing.

use crate::{PipelineError, make, markers};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClipCodec {
    Vp8,
    H264,
    Opus,
}

impl ClipCodec {
    pub fn as_str(self) -> &'static str {
        match self {
            ClipCodec::Vp8 => "vp8",
            ClipCodec::H264 => "h264",
            ClipCodec::Opus => "opus",
        }
    }

    pub fn is_video(self) -> bool {
        self != ClipCodec::Opus
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClipSpec {
    pub codec: ClipCodec,
    /// Participant index: picks the colour and the tone (markers.rs).
    pub participant_index: usize,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_bitrate_bps: u32,
    /// Whole seconds, so markers stay one second apart across loops.
    pub seconds: u32,
    /// A noisy picture, so the encoder spends its whole bitrate as a camera's stream does (the flat
    /// colours otherwise encode to a fraction of it).
    pub camera_like: bool,
}

impl ClipSpec {
    fn cache_name(&self) -> String {
        format!(
            "clip-v4-{}-p{}-{}x{}-{}fps-{}bps-{}s{}.bin",
            self.codec.as_str(),
            self.participant_index,
            self.width,
            self.height,
            self.fps,
            self.video_bitrate_bps,
            self.seconds,
            if self.camera_like { "-camera" } else { "" }
        )
    }
}

/// One encoded frame: time from the clip's start, and whether a decoder can start on it.
#[derive(Debug, Clone)]
pub struct ClipFrame {
    pub pts_ns: u64,
    pub keyframe: bool,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Clip {
    pub spec: ClipSpec,
    pub frames: Vec<ClipFrame>,
    /// The loop length: the next loop's frames start this much later.
    pub duration_ns: u64,
}

impl Clip {
    /// The cached clip, or a freshly encoded one written to the cache.
    pub fn load_or_encode(spec: &ClipSpec, cache_dir: &Path) -> Result<Clip, PipelineError> {
        let path = cache_dir.join(spec.cache_name());
        if let Ok(clip) = read_clip(&path, spec) {
            return Ok(clip);
        }
        let clip = encode(spec)?;
        std::fs::create_dir_all(cache_dir)?;
        write_clip(&path, &clip)?;
        Ok(clip)
    }
}

fn encode(spec: &ClipSpec) -> Result<Clip, PipelineError> {
    crate::init()?;
    let duration_ns = spec.seconds as u64 * 1_000_000_000;
    let pipeline = gst::Pipeline::with_name("clip-encoder");
    let chain = if spec.codec.is_video() { video_chain(spec)? } else { audio_chain(spec)? };
    let sink = gst_app::AppSink::builder().sync(false).build();
    pipeline.add_many(chain.iter())?;
    pipeline.add(&sink)?;
    gst::Element::link_many(chain.iter().chain([sink.upcast_ref()]))?;
    pipeline.set_state(gst::State::Playing)?;

    let mut frames: Vec<ClipFrame> = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let Some(buffer) = sample.buffer() else { continue };
        let Some(pts) = buffer.pts() else { continue };
        let map = buffer.map_readable().map_err(|e| PipelineError::Build(e.to_string()))?;
        frames.push(ClipFrame {
            pts_ns: pts.nseconds(),
            keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
            data: map.as_slice().to_vec(),
        });
    }
    let errors = pipeline.bus().and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]));
    pipeline.set_state(gst::State::Null)?;
    if let Some(message) = errors
        && let gst::MessageView::Error(err) = message.view()
    {
        return Err(crate::runtime_error(err));
    }
    // Some video encoders shift every timestamp (x264enc adds 1000 hours so DTS never goes negative);
    // the first frame is the source's frame 0.
    if spec.codec.is_video() {
        let first = frames.first().map_or(0, |f| f.pts_ns);
        frames.iter_mut().for_each(|f| f.pts_ns -= first);
    } else {
        // opusenc's first packet is short (the encoder delay), so the rest sit off the 20 ms grid of
        // whole seconds (13.5 ms, 33.5 ms, ...). The signal repeats every second, so any run of
        // `seconds * 50` packets loops seamlessly: drop the short one and keep the next run, with its
        // own timestamps, so each packet's time is exactly the time of the sound it holds.
        if !frames.is_empty() {
            frames.remove(0);
        }
        frames.truncate((spec.seconds * 50) as usize);
    }
    // Drop frames past the loop length so loops never overlap.
    frames.retain(|f| f.pts_ns < duration_ns);
    if frames.is_empty() || !frames[0].keyframe {
        let first = frames.first().map(|f| format!("first frame at {} ns, keyframe {}", f.pts_ns, f.keyframe)).unwrap_or_default();
        return Err(PipelineError::Build(format!(
            "encoding a {} clip gave no usable frames ({} frames; {first})",
            spec.codec.as_str(),
            frames.len()
        )));
    }
    Ok(Clip { spec: spec.clone(), frames, duration_ns })
}

fn video_chain(spec: &ClipSpec) -> Result<Vec<gst::Element>, PipelineError> {
    let source = markers::video_source(spec.participant_index, spec.width, spec.height, spec.fps, Some(spec.seconds * spec.fps))?;
    if spec.camera_like {
        source[0].set_property_from_str("pattern", "snow");
    }
    // Short GOPs stand in for keyframe requests, which a replayed clip cannot honour: a subscriber that
    // joins or loses packets gets a keyframe within 0.1 s, about as fast as a live publisher answers a
    // PLI. Flat colours keep keyframes small (a few KB at 720p).
    let encoder = match spec.codec {
        ClipCodec::Vp8 => {
            let encoder = make("vp8enc")?;
            encoder.set_property("deadline", 1i64);
            encoder.set_property("cpu-used", 4i32);
            encoder.set_property("target-bitrate", spec.video_bitrate_bps as i32);
            encoder.set_property("keyframe-max-dist", (spec.fps / 10).max(1) as i32);
            encoder.set_property_from_str("end-usage", "cbr");
            vec![encoder]
        }
        ClipCodec::H264 => {
            let encoder = make("x264enc")?;
            encoder.set_property_from_str("speed-preset", "veryfast");
            encoder.set_property_from_str("tune", "zerolatency");
            encoder.set_property("bitrate", spec.video_bitrate_bps / 1000);
            encoder.set_property("key-int-max", (spec.fps / 10).max(1));
            encoder.set_property("bframes", 0u32);
            // Constrained baseline, byte-stream with parameter sets before every keyframe, as a
            // browser publishes it.
            let profile = make("capsfilter")?;
            profile.set_property(
                "caps",
                gst::Caps::builder("video/x-h264")
                    .field("profile", "constrained-baseline")
                    .field("stream-format", "byte-stream")
                    .field("alignment", "au")
                    .build(),
            );
            let parse = make("h264parse")?;
            parse.set_property("config-interval", -1i32);
            let out = make("capsfilter")?;
            out.set_property("caps", gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream").field("alignment", "au").build());
            vec![encoder, profile, parse, out]
        }
        ClipCodec::Opus => unreachable!("audio clips use audio_chain"),
    };
    Ok([source, encoder].concat())
}

fn audio_chain(spec: &ClipSpec) -> Result<Vec<gst::Element>, PipelineError> {
    // One second more than the clip: the first packet is dropped (see `encode`).
    let mut chain = markers::audio_source(spec.participant_index, Some((spec.seconds + 1) * 50))?;
    let encoder = make("opusenc")?;
    encoder.set_property("bitrate", 64_000i32);
    encoder.set_property_from_str("frame-size", "20");
    chain.push(encoder);
    Ok(chain)
}

/// Cache format: magic, frame count, then per frame pts (u64), keyframe (u8), length (u32), bytes.
const MAGIC: &[u8; 8] = b"FLTCLIP1";

fn write_clip(path: &Path, clip: &Clip) -> Result<(), PipelineError> {
    let temp = PathBuf::from(format!("{}.tmp{}", path.display(), std::process::id()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&temp)?);
    out.write_all(MAGIC)?;
    out.write_all(&(clip.frames.len() as u32).to_le_bytes())?;
    for frame in &clip.frames {
        out.write_all(&frame.pts_ns.to_le_bytes())?;
        out.write_all(&[frame.keyframe as u8])?;
        out.write_all(&(frame.data.len() as u32).to_le_bytes())?;
        out.write_all(&frame.data)?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&temp, path)?;
    Ok(())
}

fn read_clip(path: &Path, spec: &ClipSpec) -> Result<Clip, PipelineError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    let bad = || PipelineError::Input(format!("{} is not a clip file", path.display()));
    let mut cursor = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(bad)?;
    let mut take = |n: usize| -> Result<&[u8], PipelineError> {
        if cursor.len() < n {
            return Err(bad());
        }
        let (head, rest) = cursor.split_at(n);
        cursor = rest;
        Ok(head)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
    let mut frames = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let pts_ns = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        let keyframe = take(1)?[0] == 1;
        let len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        frames.push(ClipFrame { pts_ns, keyframe, data: take(len)?.to_vec() });
    }
    if frames.is_empty() {
        return Err(bad());
    }
    Ok(Clip { spec: spec.clone(), frames, duration_ns: spec.seconds as u64 * 1_000_000_000 })
}
