//! The synthetic test room as a capture source: generated participants, no network.

use super::events::{SourceEvent, SourceEvents};
use crate::timeline::Entry;
use fleet_pipelines::segment_writer::TrackKind;
use fleet_pipelines::synthetic_room::{CaptureEvent, SyntheticRoom, SyntheticRoomConfig};
use fleet_protocol::SafeId;
use tokio::sync::mpsc;

/// Why the synthetic room did not start.
#[derive(Debug, thiserror::Error)]
pub enum SyntheticStartError {
    #[error(transparent)]
    Pipeline(#[from] fleet_pipelines::PipelineError),
    #[error("start-up thread: {0}")]
    Thread(#[from] tokio::task::JoinError),
}

/// Starts the synthetic room; its per-index events are translated to participant/track ids.
pub async fn start(config: SyntheticRoomConfig, events: SourceEvents) -> Result<SyntheticRoom, SyntheticStartError> {
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
            encryption: None,
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
    Ok(started)
}
