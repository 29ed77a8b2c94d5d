//! Snapshots of the live composite: one frame every `interval` becomes a JPEG. Which frames is decided
//! by [`SnapshotClock`] (no I/O, unit-tested); the branch encodes only those.

use super::{LiveEvent, OnEvent};
use crate::{PipelineError, make};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSpec {
    pub interval_ns: u64,
    /// The JPEG's size (the composite is scaled to it).
    pub width: u32,
    pub height: u32,
}

/// Takes the first frame, then the first frame at or after each further `interval_ns`.
#[derive(Debug, Clone)]
pub struct SnapshotClock {
    interval_ns: u64,
    next_due_ns: Option<u64>,
}

impl SnapshotClock {
    pub fn new(interval_ns: u64) -> SnapshotClock {
        SnapshotClock { interval_ns: interval_ns.max(1), next_due_ns: None }
    }

    /// Whether the frame at `pts_ns` is a snapshot. Due times stay on the grid of the first one, so a
    /// late frame does not shift the ones after it; a long gap yields one snapshot, not a burst.
    pub fn take(&mut self, pts_ns: u64) -> bool {
        match self.next_due_ns {
            Some(due) if pts_ns < due => false,
            Some(due) => {
                let skipped = (pts_ns - due) / self.interval_ns;
                self.next_due_ns = Some(due + (skipped + 1) * self.interval_ns);
                true
            }
            None => {
                self.next_due_ns = Some(pts_ns + self.interval_ns);
                true
            }
        }
    }
}

/// `tee → queue → (every interval) → scale → jpegenc → appsink`, from the composite's raw frames.
pub(super) fn add_branch(pipeline: &gst::Pipeline, tee: &gst::Element, spec: SnapshotSpec, on_event: OnEvent) -> Result<(), PipelineError> {
    let queue = make("queue")?;
    // Never holds the composite up: a slow JPEG encode drops frames here, not there.
    queue.set_property_from_str("leaky", "downstream");
    queue.set_property("max-size-buffers", 2u32);
    let convert = make("videoconvert")?;
    let scale = make("videoscale")?;
    let size = make("capsfilter")?;
    size.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("width", spec.width as i32)
            .field("height", spec.height as i32)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    );
    let encoder = make("jpegenc")?;
    encoder.set_property("quality", 85i32);
    let sink = gst_app::AppSink::builder().sync(false).max_buffers(4).drop(true).build();
    sink.set_property("async", false);
    pipeline.add_many([&queue, &convert, &scale, &size, &encoder, sink.upcast_ref()])?;
    gst::Element::link_many([tee, &queue, &convert, &scale, &size, &encoder, sink.upcast_ref()])?;

    let clock = Mutex::new(SnapshotClock::new(spec.interval_ns));
    queue.static_pad("src").expect("src pad").add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let pts = info.buffer().and_then(|b| b.pts()).map(|t| t.nseconds());
        match pts {
            Some(pts) if clock.lock().unwrap_or_else(|p| p.into_inner()).take(pts) => gst::PadProbeReturn::Ok,
            _ => gst::PadProbeReturn::Drop,
        }
    });
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                if let Ok(sample) = sink.pull_sample()
                    && let Some(buffer) = sample.buffer()
                    && let Ok(map) = buffer.map_readable()
                {
                    let pts_ns = sample
                        .segment()
                        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
                        .and_then(|s| buffer.pts().and_then(|t| s.to_running_time(t)))
                        .map_or(0, |t| t.nseconds());
                    on_event(LiveEvent::Snapshot { pts_ns, jpeg: map.as_slice().to_vec() });
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn snapshots_follow_a_grid_from_the_first_frame() {
        let mut clock = SnapshotClock::new(10 * S);
        let frames = |clock: &mut SnapshotClock, from: u64, to: u64| (from..to).map(|f| f * S / 30).filter(|&t| clock.take(t)).collect::<Vec<_>>();
        assert_eq!(frames(&mut clock, 15, 30 * 30), vec![S / 2, S / 2 + 10 * S, S / 2 + 20 * S]);
        // A 35 s gap: one snapshot when frames come back, then on the same grid.
        let mut clock = SnapshotClock::new(10 * S);
        assert!(clock.take(0));
        assert!(clock.take(35 * S));
        assert!(!clock.take(39 * S));
        assert!(clock.take(40 * S));
    }
}
