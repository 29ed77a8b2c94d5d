//! Reads a track's Matroska segments back, in order, as one continuous encoded stream with the
//! timestamps they were recorded with (plus a per-segment offset that places capture sessions on the
//! recording's timeline). `splitmuxsrc` is not used: it rebases every file set to start at zero, which
//! loses where a late track or a second session belongs.
//!
//! A corrupt or truncated segment is read as far as it goes; what was wrong is reported, never hidden.

use crate::PipelineError;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct SegmentFile {
    pub path: PathBuf,
    /// Added to every timestamp of this segment (the session's place on the recording's timeline).
    pub offset_ns: u64,
    /// Frames at or after this (recording time, offset applied) are dropped: a later capture session
    /// that overlapped this one (a hand-over) has the track from here on.
    pub until_ns: Option<u64>,
    /// Frames before this are not shown: the segment fills in for another capture's lost media from
    /// here. The video frames from the keyframe before it are still decoded (and not shown).
    pub from_ns: Option<u64>,
}

impl SegmentFile {
    /// The whole segment, placed `offset_ns` into the recording.
    pub fn whole(path: PathBuf, offset_ns: u64) -> SegmentFile {
        SegmentFile { path, offset_ns, until_ns: None, from_ns: None }
    }
}

#[derive(Debug, Clone)]
pub struct TrackInput {
    /// For logs and reports, e.g. `s1/participant-1/camera`.
    pub name: String,
    pub segments: Vec<SegmentFile>,
    /// Turns each stored frame into the one decoded (an end-to-end encrypted track's decryption).
    pub filter: Option<FrameFilter>,
}

impl TrackInput {
    pub fn new(name: String, segments: Vec<SegmentFile>) -> TrackInput {
        TrackInput { name, segments, filter: None }
    }
}

/// A stored frame in, the frame to decode out, or `None` to drop it (a frame that did not decrypt). Its
/// owner keeps whatever it counts.
#[derive(Clone)]
pub struct FrameFilter(pub Arc<FilterFn>);

/// See [`FrameFilter`].
pub type FilterFn = dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync;

impl std::fmt::Debug for FrameFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameFilter")
    }
}

impl FrameFilter {
    /// The frame's buffer with its bytes replaced by the filter's output (timestamps and flags kept).
    fn apply(&self, mut buffer: gst::Buffer) -> Option<gst::Buffer> {
        let filtered = {
            let map = buffer.map_readable().ok()?;
            (self.0)(map.as_slice())?
        };
        buffer.make_mut().replace_all_memory(gst::Memory::from_mut_slice(filtered));
        Some(buffer)
    }
}

/// The tracks of one capture session laid out on disk as `<dir>/<participant>/<track>/NNNNN.mkv`
/// (a recorder's spool, or a downloaded `raw/<session>`), each at offset 0. For offline tools.
pub fn session_tracks(dir: &Path) -> std::io::Result<Vec<TrackInput>> {
    let sorted = |dir: &Path| -> std::io::Result<Vec<PathBuf>> {
        let mut entries = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<Vec<_>, _>>()?;
        entries.sort();
        Ok(entries)
    };
    let mut tracks = Vec::new();
    for participant in sorted(dir)?.into_iter().filter(|p| p.is_dir()) {
        for track in sorted(&participant)?.into_iter().filter(|t| t.is_dir()) {
            let segments = sorted(&track)?.into_iter().map(|path| SegmentFile::whole(path, 0)).collect();
            let name = format!(
                "{}/{}",
                participant.file_name().unwrap_or_default().to_string_lossy(),
                track.file_name().unwrap_or_default().to_string_lossy()
            );
            tracks.push(TrackInput::new(name, segments));
        }
    }
    Ok(tracks)
}

/// Problems met while reading inputs; the job reports them.
pub type Problems = Arc<Mutex<Vec<String>>>;

/// Media read may fall this short of a segment's declared length before it counts as truncated
/// (frame durations are estimates).
const TRUNCATION_SLACK_NS: u64 = 300_000_000;

/// Reading one local file never legitimately pauses this long.
const DEMUX_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a segment's read ended before its end.
#[derive(Debug, thiserror::Error)]
enum ReadStopped {
    #[error("{0}")]
    Demuxer(String),
    #[error("the demuxer made no progress for {0} s")]
    Stalled(u64),
}

/// A one-file demuxer: `filesrc ! matroskademux ! appsink`.
struct SegmentDemuxer {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
}

impl SegmentDemuxer {
    fn open(path: &Path) -> Result<Self, PipelineError> {
        let source = crate::make("filesrc")?;
        source.set_property("location", path.to_string_lossy().to_string());
        let demux = crate::make("matroskademux")?;
        let sink = gst_app::AppSink::builder().sync(false).max_buffers(64).build();
        let pipeline = gst::Pipeline::new();
        pipeline.add_many([&source, &demux, sink.upcast_ref()])?;
        source.link(&demux)?;
        let sink_pad = sink.static_pad("sink").expect("appsink has a sink pad");
        demux.connect_pad_added(move |_, pad| {
            if !sink_pad.is_linked() {
                let _ = pad.link(&sink_pad);
            }
        });
        pipeline.set_state(gst::State::Playing)?;
        Ok(Self { pipeline, sink })
    }

    /// The next encoded frame, or `None` at the end; `Err` says why reading stopped early. Never waits
    /// forever: a demuxer that errors out without an end-of-stream, or that stops making progress on a
    /// damaged file, ends the read with the reason.
    fn next(&self) -> Result<Option<gst::Sample>, ReadStopped> {
        let started = std::time::Instant::now();
        loop {
            if let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) {
                return Ok(Some(sample));
            }
            if self.sink.is_eos() {
                return Ok(None);
            }
            if let Some(error) = self.bus_error() {
                return Err(ReadStopped::Demuxer(error));
            }
            if started.elapsed() > DEMUX_STALL {
                return Err(ReadStopped::Stalled(DEMUX_STALL.as_secs()));
            }
        }
    }

    /// The media length the file's header declares (Matroska `Duration`), once reading has started.
    fn declared_duration_ns(&self) -> Option<u64> {
        self.pipeline.query_duration::<gst::ClockTime>().map(|d| d.nseconds())
    }

    fn bus_error(&self) -> Option<String> {
        let bus = self.pipeline.bus()?;
        while let Some(message) = bus.pop() {
            if let gst::MessageView::Error(err) = message.view() {
                return Some(err.error().to_string());
            }
        }
        None
    }
}

impl Drop for SegmentDemuxer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The caps of a track's first readable frame: tells its kind and codec.
pub fn probe_caps(input: &TrackInput) -> Option<gst::Caps> {
    input.segments.iter().find_map(|segment| {
        let demuxer = SegmentDemuxer::open(&segment.path).ok()?;
        demuxer.next().ok().flatten()?.caps_owned()
    })
}

/// The longest a frame is shown when the next one is late: shorter holes (jitter, a dropped frame) are
/// bridged, longer ones (mute, a failover gap between sessions) show as empty, so the compositor paints
/// its background and the timeline keeps its length.
pub const MAX_FRAME_HOLD_NS: u64 = 500_000_000;

type Frame = (gst::Buffer, Option<gst::Caps>);

/// Pushes the frames of `input` within `range` into `appsrc` (blocking while it is full) on a thread of
/// its own, then sends end-of-stream. Frames at or after the range's end are dropped so the output ends
/// where the recording (or the chunk) does. Before the range's start only the frames from the last
/// keyframe on are fed, so a decoder can start there; the compositor drops those it does not show.
/// Each frame is given the duration up to the next one (at most [`MAX_FRAME_HOLD_NS`]): demuxed WebRTC
/// frames carry none, and a frame without a duration would be shown until the next one, however late.
pub fn spawn_feeder(
    appsrc: gst_app::AppSrc,
    input: TrackInput,
    range: std::ops::Range<u64>,
    problems: Problems,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("feed-{}", input.name)).spawn(move || {
        let mut held: Option<Frame> = None;
        // Frames before the range since the last keyframe.
        let mut lead_in: Vec<Frame> = Vec::new();
        // Frames of a filling-in segment before its `from_ns`, since the last keyframe.
        let mut fill_lead_in: Vec<Frame> = Vec::new();
        'segments: for segment in &input.segments {
            let demuxer = match SegmentDemuxer::open(&segment.path) {
                Ok(demuxer) => demuxer,
                Err(err) => {
                    report(&problems, format!("{}: {}: {err}", input.name, segment.path.display()));
                    continue;
                }
            };
            let mut frames = 0u64;
            // The span of media read (file timestamps), to tell a file cut short from a short file.
            let mut span: Option<(u64, u64)> = None;
            loop {
                let sample = match demuxer.next() {
                    Ok(Some(sample)) => sample,
                    Ok(None) => {
                        if let (Some((first, end)), Some(declared)) = (span, demuxer.declared_duration_ns())
                            && end.saturating_sub(first) + TRUNCATION_SLACK_NS < declared
                        {
                            let read_s = (end - first) as f64 / 1e9;
                            let declared_s = declared as f64 / 1e9;
                            report(
                                &problems,
                                format!(
                                    "{}: {} is truncated: media ends after {read_s:.2} s of the {declared_s:.2} s its header declares",
                                    input.name,
                                    file_name(&segment.path)
                                ),
                            );
                        }
                        break;
                    }
                    Err(reason) => {
                        report(&problems, format!("{}: {} read {frames} frames, then: {reason}", input.name, file_name(&segment.path)));
                        break;
                    }
                };
                if let Some(pts) = sample.buffer().and_then(|b| b.pts()) {
                    let end = pts.nseconds() + sample.buffer().and_then(|b| b.duration()).map(|d| d.nseconds()).unwrap_or(0);
                    span = Some(span.map_or((pts.nseconds(), end), |(first, last)| (first.min(pts.nseconds()), last.max(end))));
                }
                let Some(mut frame) = shift(&sample, segment.offset_ns) else { continue };
                let Some(pts) = frame.0.pts() else { continue };
                if pts.nseconds() >= range.end {
                    break 'segments;
                }
                if segment.until_ns.is_some_and(|until| pts.nseconds() >= until) {
                    frames += 1;
                    break;
                }
                frames += 1;
                // Read, but not for the decoder (a frame that did not decrypt: its owner counts it).
                if let Some(filter) = &input.filter {
                    match filter.apply(frame.0) {
                        Some(buffer) => frame.0 = buffer,
                        None => continue,
                    }
                }
                let is_keyframe = is_keyframe(&frame);
                if segment.from_ns.is_some_and(|from| pts.nseconds() < from) {
                    if is_keyframe {
                        fill_lead_in.clear();
                    }
                    fill_lead_in.push(frame);
                    continue;
                }
                if !fill_lead_in.is_empty() {
                    // Filling in mid-stream: the frames since the keyframe are decoded, never shown. A
                    // keyframe (or audio, all keyframes) needs none of them.
                    let decode_only: Vec<Frame> = if is_keyframe { Vec::new() } else { std::mem::take(&mut fill_lead_in) };
                    fill_lead_in.clear();
                    if !deliver_after(&appsrc, &mut held, frame, decode_only) {
                        return;
                    }
                    continue;
                }
                if pts.nseconds() < range.start {
                    if is_keyframe {
                        lead_in.clear();
                    }
                    lead_in.push(frame);
                    continue;
                }
                for frame in lead_in.drain(..).chain(std::iter::once(frame)) {
                    if !deliver(&appsrc, &mut held, frame) {
                        return; // the transcode pipeline is shutting down
                    }
                }
            }
            if frames == 0 {
                report(&problems, format!("{}: {} has no readable frames", input.name, file_name(&segment.path)));
            }
        }
        if let Some(last) = held {
            push(&appsrc, last);
        }
        let _ = appsrc.end_of_stream();
    })
}

/// Whether a frame starts a picture the decoder can begin at. VP8 says so in its first byte (and
/// LiveKit's frame encryption leaves that byte clear): `matroskademux` reads every VP8 frame of the
/// fleet's segments as a keyframe, so a chunk's lead-in began at the frame just before its window, which
/// the decoder could not decode (the tile stayed black until the publisher's next keyframe, with
/// browsers' and SDKs' cameras often none at all).
fn is_keyframe((buffer, caps): &Frame) -> bool {
    let vp8 = caps.as_ref().and_then(|c| c.structure(0)).is_some_and(|s| s.name() == "video/x-vp8");
    if vp8 && let Ok(map) = buffer.map_readable() {
        return map.first().is_some_and(|tag| tag & 1 == 0);
    }
    !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT)
}

fn push(appsrc: &gst_app::AppSrc, (buffer, caps): Frame) -> bool {
    let mut sample = gst::Sample::builder().buffer(&buffer);
    if let Some(caps) = &caps {
        sample = sample.caps(caps);
    }
    appsrc.push_sample(&sample.build()).is_ok()
}

/// Pushes the frame held back before `frame`, now that its duration is known, and holds `frame`.
/// False once the pipeline no longer takes frames.
fn deliver(appsrc: &gst_app::AppSrc, held: &mut Option<Frame>, frame: Frame) -> bool {
    deliver_after(appsrc, held, frame, Vec::new())
}

/// [`deliver`], with `decode_only` pushed between the held frame and `frame`: frames the decoder needs
/// for `frame` (they lead up to it from a keyframe) that are not to be shown.
fn deliver_after(appsrc: &gst_app::AppSrc, held: &mut Option<Frame>, frame: Frame, decode_only: Vec<Frame>) -> bool {
    let pts = frame.0.pts().map(|p| p.nseconds()).unwrap_or(0);
    if let Some(mut previous) = held.take() {
        let previous_pts = previous.0.pts().map(|p| p.nseconds()).unwrap_or(0);
        let until_next = pts.saturating_sub(previous_pts);
        let shown = until_next.min(MAX_FRAME_HOLD_NS);
        previous.0.make_mut().set_duration(gst::ClockTime::from_nseconds(shown));
        if !push(appsrc, previous) {
            return false;
        }
        if until_next > shown {
            // Say "nothing here" for the rest of the hole, or the last frame stays on screen.
            let gap = gst::event::Gap::builder(gst::ClockTime::from_nseconds(previous_pts + shown))
                .duration(gst::ClockTime::from_nseconds(until_next - shown))
                .build();
            appsrc.send_event(gap);
        }
    }
    for (mut buffer, caps) in decode_only {
        buffer.make_mut().set_flags(gst::BufferFlags::DECODE_ONLY);
        if !push(appsrc, (buffer, caps)) {
            return false;
        }
    }
    *held = Some(frame);
    true
}

/// The frame's buffer with `offset_ns` added to its timestamps, and its caps.
fn shift(sample: &gst::Sample, offset_ns: u64) -> Option<(gst::Buffer, Option<gst::Caps>)> {
    let mut buffer = sample.buffer_owned()?;
    {
        let buffer = buffer.make_mut();
        let offset = gst::ClockTime::from_nseconds(offset_ns);
        buffer.set_pts(buffer.pts().map(|t| t + offset));
        buffer.set_dts(buffer.dts().map(|t| t + offset));
    }
    Some((buffer, sample.caps_owned()))
}

fn report(problems: &Problems, problem: String) {
    tracing::warn!(%problem, "input problem");
    problems.lock().expect("problems lock").push(problem);
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8], media: &str, delta: bool) -> Frame {
        let mut buffer = gst::Buffer::from_slice(bytes.to_vec());
        if delta {
            buffer.get_mut().unwrap().set_flags(gst::BufferFlags::DELTA_UNIT);
        }
        (buffer, Some(gst::Caps::builder(media).build()))
    }

    #[test]
    fn a_vp8_keyframe_is_told_by_its_first_byte_not_by_the_demuxer() {
        crate::init().unwrap();
        // The frame tag's lowest bit: 0 for a keyframe, 1 for an interframe; the buffer flags as
        // matroskademux leaves them (no delta flag on either).
        assert!(is_keyframe(&frame(&[0x50, 0x2a, 0x01, 0x9d, 0x01, 0x2a], "video/x-vp8", false)));
        assert!(!is_keyframe(&frame(&[0x51, 0x0c, 0x00], "video/x-vp8", false)));
        assert!(!is_keyframe(&frame(&[], "video/x-vp8", false)));
        // Other codecs: the demuxer's flag.
        assert!(is_keyframe(&frame(&[0, 0, 0, 1, 0x65], "video/x-h264", false)));
        assert!(!is_keyframe(&frame(&[0, 0, 0, 1, 0x41], "video/x-h264", true)));
    }
}
