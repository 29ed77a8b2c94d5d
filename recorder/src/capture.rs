//! What a capture source tells its session, whichever source it is (a LiveKit room or the synthetic
//! test room): room activity for the timeline, segments opened and closed, and how it ended.

use crate::livekit::LivekitCapture;
use crate::timeline::Entry;
use fleet_pipelines::segment_writer::{FragmentMessage, TrackKind};
use fleet_pipelines::synthetic_room::{CaptureEvent, SyntheticRoom, SyntheticRoomConfig};
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

pub enum Capture {
    Synthetic(SyntheticRoom),
    Livekit(LivekitCapture),
}

/// Why the synthetic room did not start.
#[derive(Debug, thiserror::Error)]
pub enum SyntheticStartError {
    #[error(transparent)]
    Pipeline(#[from] fleet_pipelines::PipelineError),
    #[error("start-up thread: {0}")]
    Thread(#[from] tokio::task::JoinError),
}

impl Capture {
    /// Starts the synthetic room; its per-index events are translated to participant/track ids.
    pub async fn synthetic(config: SyntheticRoomConfig, events: SourceEvents) -> Result<Capture, SyntheticStartError> {
        let (raw_tx, mut raw) = mpsc::unbounded_channel();
        let started = tokio::task::spawn_blocking(move || {
            SyntheticRoom::start(&config, move |event| {
                let _ = raw_tx.send(event);
            })
        })
        .await??;
        let ids: Vec<(SafeId, SafeId)> = started
            .tracks()
            .iter()
            .map(|t| (SafeId::parse(&t.participant).expect("synthetic ids are safe"), SafeId::parse(&t.track).expect("safe")))
            .collect();
        for track in started.tracks() {
            let participant = track.participant.clone();
            if track.kind == TrackKind::Video {
                let entry = Entry::ParticipantJoined {
                    participant: participant.clone(),
                    identity: participant.clone(),
                    name: participant.clone(),
                    joined_at_ms: None,
                };
                let _ = events.send(SourceEvent::Room { running_ns: 0, entry });
            }
            let codec = if track.kind == TrackKind::Video { "vp8" } else { "opus" };
            let source = if track.kind == TrackKind::Video { "camera" } else { "microphone" };
            let entry = Entry::TrackPublished {
                participant,
                track: track.track.clone(),
                kind: track.kind.as_str().into(),
                codec: codec.into(),
                source: source.into(),
            };
            let _ = events.send(SourceEvent::Room { running_ns: 0, entry });
        }
        tokio::spawn(async move {
            while let Some(event) = raw.recv().await {
                let translated = match event {
                    CaptureEvent::Fragment { track, fragment } => {
                        let Some((participant, track)) = ids.get(track) else { continue };
                        SourceEvent::Fragment { participant: participant.clone(), track: track.clone(), fragment }
                    }
                    CaptureEvent::Finished => SourceEvent::Finished,
                    CaptureEvent::Failed(err @ fleet_pipelines::PipelineError::DiskFull { .. }) => SourceEvent::SpoolFull(err.to_string()),
                    CaptureEvent::Failed(err) => SourceEvent::Failed(format!("capture failed: {err}")),
                };
                if events.send(translated).is_err() {
                    break;
                }
            }
        });
        Ok(Capture::Synthetic(started))
    }

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
