//! What a capture source tells its session, whichever source it is (a LiveKit room or the synthetic
//! test room): room activity for the timeline, segments opened and closed, and how it ended.

use crate::timeline::Entry;
use fleet_pipelines::segment_writer::FragmentMessage;
use fleet_protocol::SafeId;
use fleet_protocol::job::EndReason;
use tokio::sync::mpsc;

#[derive(Debug)]
pub enum SourceEvent {
    /// Room activity, at this running time of the session.
    Room {
        running_ns: u64,
        entry: Entry,
    },
    Fragment {
        participant: SafeId,
        track: SafeId,
        fragment: FragmentMessage,
    },
    /// The room ended the recording (closed, or empty too long): the session stops the capture.
    Ended(EndReason),
    /// Every track's last segment is closed after a stop.
    Finished,
    Failed(String),
    /// A segment could not be written for want of disk space: the recording must go to another recorder.
    SpoolFull(String),
    /// One track stopped being recorded (its writer failed); the others go on.
    TrackLost(String),
}

pub type SourceEvents = mpsc::UnboundedSender<SourceEvent>;
