//! The room as the recorder saw it, read back from each capture session's `timeline.jsonl` and placed
//! on the recording's timeline: who was there, which tracks were published and muted, who spoke.
//! Pure parsing; the layout planner turns it into scenes.

use fleet_protocol::timeline::{self, Entry};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// A capture session begins: nothing is known about the room until it says so.
    SessionStarted,
    /// A capture session ends: everyone and everything it saw is gone with it.
    SessionEnded,
    Joined {
        participant: String,
        identity: String,
        /// The display name ("" when the participant has none).
        name: String,
        joined_at_ms: Option<u64>,
    },
    Left {
        participant: String,
    },
    Published {
        participant: String,
        track: String,
        kind: String,
        source: String,
    },
    Unpublished {
        participant: String,
        track: String,
    },
    Muted {
        participant: String,
        track: String,
        muted: bool,
    },
    /// Loudest first, as participant ids.
    Speakers {
        participants: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedEvent {
    /// Nanoseconds from the recording's start.
    pub at_ns: u64,
    pub event: RoomEvent,
}

/// One session's room events, from its timeline text, shifted to start at `start_ns` and cut at
/// `end_ns`. Lines that do not parse (a line torn by a crash, a newer recorder's entries) are skipped.
#[cfg(test)]
pub fn session_events(timeline: &str, start_ns: u64, end_ns: u64) -> Vec<TimedEvent> {
    session_events_from(timeline, start_ns, start_ns, end_ns)
}

/// As [`session_events`] for the part of the session from `from_ns` on (a redundant job's second
/// capture standing in for the first): what it saw before is the room as it stands at `from_ns`.
pub fn session_events_from(timeline: &str, start_ns: u64, from_ns: u64, end_ns: u64) -> Vec<TimedEvent> {
    let mut identities: BTreeMap<String, String> = BTreeMap::new();
    let mut events = vec![TimedEvent { at_ns: from_ns, event: RoomEvent::SessionStarted }];
    for line in timeline::parse(timeline) {
        let running_ns = line.running_ns;
        let event = match line.entry {
            Entry::ParticipantJoined { participant, identity, name, joined_at_ms } => {
                identities.insert(identity.clone(), participant.clone());
                RoomEvent::Joined { participant, identity, name, joined_at_ms }
            }
            Entry::ParticipantLeft { participant } => RoomEvent::Left { participant },
            Entry::TrackPublished { participant, track, kind, source, .. } => RoomEvent::Published { participant, track, kind, source },
            Entry::TrackUnpublished { participant, track } => RoomEvent::Unpublished { participant, track },
            Entry::TrackMuted { participant, track, muted } => RoomEvent::Muted { participant, track, muted },
            Entry::ActiveSpeakers { participants } => {
                // Speakers are named by identity; segments and the other entries by participant id.
                let participants = participants.into_iter().map(|p| identities.get(&p).cloned().unwrap_or(p)).collect();
                RoomEvent::Speakers { participants }
            }
            _ => continue,
        };
        let at_ns = start_ns.saturating_add(running_ns).max(from_ns);
        if at_ns < end_ns {
            events.push(TimedEvent { at_ns, event });
        }
    }
    events.push(TimedEvent { at_ns: end_ns, event: RoomEvent::SessionEnded });
    // Entries are written in order, but a stable sort keeps a reordered line from confusing the planner.
    events.sort_by_key(|e| e.at_ns);
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_placed_on_the_recording_timeline() {
        let timeline = r#"{"wall_ms":1,"running_ns":0,"type":"session_started","session":"s","node":"n","source":"livekit"}
{"wall_ms":1,"running_ns":100,"type":"participant_joined","participant":"alice","identity":"alice","name":"Alice"}
{"wall_ms":1,"running_ns":200,"type":"track_published","participant":"alice","track":"TR_1","kind":"video","codec":"vp8","source":"camera"}
{"wall_ms":1,"running_ns":300,"type":"active_speakers","participants":["alice"]}
{"wall_ms":1,"running_ns":400,"type":"track_muted","participant":"alice","track":"TR_1","muted":true}
{"wall_ms":1,"running_ns":500,"type":"segment_opened","participant":"alice","track":"TR_1","seq":0}
{"wall_ms":1,"running_ns":600,"type":"participant_lef
{"wall_ms":1,"running_ns":5000,"type":"participant_left","participant":"alice"}"#;
        let events = session_events(timeline, 1_000, 2_000);
        let kinds: Vec<_> = events.iter().map(|e| (e.at_ns, e.event.clone())).collect();
        assert_eq!(
            kinds,
            vec![
                (1_000, RoomEvent::SessionStarted),
                (1_100, RoomEvent::Joined { participant: "alice".into(), identity: "alice".into(), name: "Alice".into(), joined_at_ms: None }),
                (1_200, RoomEvent::Published { participant: "alice".into(), track: "TR_1".into(), kind: "video".into(), source: "camera".into() }),
                (1_300, RoomEvent::Speakers { participants: vec!["alice".into()] }),
                (1_400, RoomEvent::Muted { participant: "alice".into(), track: "TR_1".into(), muted: true }),
                // The torn line is skipped; the late leave falls after the session's end and is cut.
                (2_000, RoomEvent::SessionEnded),
            ]
        );
    }

    #[test]
    fn a_stand_in_session_starts_with_the_room_as_it_stands() {
        let timeline = r#"{"wall_ms":1,"running_ns":100,"type":"participant_joined","participant":"alice","identity":"alice","name":""}
{"wall_ms":1,"running_ns":900,"type":"participant_left","participant":"alice"}"#;
        let events = session_events_from(timeline, 1_000, 1_500, 3_000);
        let at: Vec<u64> = events.iter().map(|e| e.at_ns).collect();
        assert_eq!(at, [1_500, 1_500, 1_900, 3_000], "the join before the window is placed at its start");
        assert!(matches!(events[1].event, RoomEvent::Joined { .. }));
    }

    #[test]
    fn speakers_named_by_identity_become_participant_ids() {
        let timeline = r#"{"wall_ms":1,"running_ns":1,"type":"participant_joined","participant":"bob-PA_x","identity":"bob smith","name":""}
{"wall_ms":1,"running_ns":2,"type":"active_speakers","participants":["bob smith","stranger"]}"#;
        let events = session_events(timeline, 0, 10);
        assert_eq!(events[2].event, RoomEvent::Speakers { participants: vec!["bob-PA_x".into(), "stranger".into()] });
    }
}
