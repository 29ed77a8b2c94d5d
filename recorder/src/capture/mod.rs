//! Capture sources behind one interface: a LiveKit room (`livekit`) or the synthetic test room
//! (`synthetic`). Both report through [`events::SourceEvent`]; the session drives either the same way.

pub mod events;
pub mod livekit;
pub mod synthetic;

use fleet_pipelines::synthetic_room::SyntheticRoom;
use livekit::LivekitCapture;

pub enum Capture {
    Synthetic(SyntheticRoom),
    Livekit(LivekitCapture),
}

impl Capture {
    pub fn source_name(&self) -> &'static str {
        match self {
            Capture::Synthetic(_) => "test",
            Capture::Livekit(_) => "livekit",
        }
    }

    /// Unix time (ms) of the session's running time 0.
    pub fn wall_ms_at_zero(&self) -> u64 {
        match self {
            Capture::Synthetic(room) => room.wall_ms_at_zero(),
            Capture::Livekit(capture) => capture.clock().wall_ms_at_zero,
        }
    }

    pub fn running_time_ns(&self) -> u64 {
        match self {
            Capture::Synthetic(room) => room.running_time_ns(),
            Capture::Livekit(capture) => capture.clock().running_ns(),
        }
    }

    /// Ends the capture: the last segments close, then `Finished` arrives.
    pub fn stop(&self) {
        match self {
            Capture::Synthetic(room) => room.stop(),
            Capture::Livekit(capture) => capture.stop(),
        }
    }
}
