//! Who is in the room and what they publish, from the join response and `ParticipantUpdate`s (full
//! participant infos with a monotonic version). Turns each update into the changes the timeline and
//! the track writers care about.

use livekit_protocol as proto;
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub enum Change {
    Joined(proto::ParticipantInfo),
    Left(proto::ParticipantInfo),
    Published(proto::ParticipantInfo, proto::TrackInfo),
    Unpublished(proto::ParticipantInfo, proto::TrackInfo),
    Muted(proto::ParticipantInfo, proto::TrackInfo, bool),
}

#[derive(Default)]
pub struct RoomTracker {
    participants: HashMap<String, proto::ParticipantInfo>,
    /// Active speakers by sid, with their level.
    speakers: HashMap<String, f32>,
}

impl RoomTracker {
    /// A (re)join's full participant list: everyone missing from it has left.
    pub fn reset(&mut self, infos: Vec<proto::ParticipantInfo>) -> Vec<Change> {
        let present: std::collections::HashSet<String> = infos.iter().map(|p| p.sid.clone()).collect();
        let gone: Vec<String> = self.participants.keys().filter(|sid| !present.contains(*sid)).cloned().collect();
        let mut changes = Vec::new();
        for sid in gone {
            changes.extend(self.leave(&sid));
        }
        for mut info in infos {
            // The list is authoritative even if its versions restarted.
            if let Some(known) = self.participants.get(&info.sid) {
                info.version = info.version.max(known.version);
            }
            changes.extend(self.apply_one(info, true));
        }
        changes
    }

    pub fn apply(&mut self, infos: Vec<proto::ParticipantInfo>) -> Vec<Change> {
        infos.into_iter().flat_map(|info| self.apply_one(info, false)).collect()
    }

    fn apply_one(&mut self, info: proto::ParticipantInfo, authoritative: bool) -> Vec<Change> {
        if info.state == proto::participant_info::State::Disconnected as i32 {
            return self.leave(&info.sid);
        }
        let mut changes = Vec::new();
        let old = match self.participants.get(&info.sid) {
            Some(known) if !authoritative && info.version <= known.version && known.version != 0 => return changes,
            Some(known) => Some(known.clone()),
            None => {
                changes.push(Change::Joined(info.clone()));
                None
            }
        };
        let old_tracks: HashMap<&str, &proto::TrackInfo> =
            old.as_ref().map(|o| o.tracks.iter().map(|t| (t.sid.as_str(), t)).collect()).unwrap_or_default();
        for track in &info.tracks {
            match old_tracks.get(track.sid.as_str()) {
                None => {
                    changes.push(Change::Published(info.clone(), track.clone()));
                    if track.muted {
                        changes.push(Change::Muted(info.clone(), track.clone(), true));
                    }
                }
                Some(before) if before.muted != track.muted => changes.push(Change::Muted(info.clone(), track.clone(), track.muted)),
                Some(_) => {}
            }
        }
        if let Some(old) = &old {
            for track in &old.tracks {
                if !info.tracks.iter().any(|t| t.sid == track.sid) {
                    changes.push(Change::Unpublished(info.clone(), track.clone()));
                }
            }
        }
        self.participants.insert(info.sid.clone(), info);
        changes
    }

    fn leave(&mut self, sid: &str) -> Vec<Change> {
        let Some(info) = self.participants.remove(sid) else { return Vec::new() };
        let mut changes: Vec<Change> = info.tracks.iter().map(|t| Change::Unpublished(info.clone(), t.clone())).collect();
        changes.push(Change::Left(info));
        changes
    }

    /// The publisher and info of a track.
    pub fn track(&self, track_sid: &str) -> Option<(&proto::ParticipantInfo, &proto::TrackInfo)> {
        self.participants.values().find_map(|p| p.tracks.iter().find(|t| t.sid == track_sid).map(|t| (p, t)))
    }

    /// Applies a `SpeakersChanged` (LiveKit sends only the speakers whose state changed: a speaker who
    /// stopped comes with `active: false`) and returns everyone speaking now, loudest first, by identity.
    pub fn speakers_changed(&mut self, changed: &[proto::SpeakerInfo]) -> Vec<String> {
        for speaker in changed {
            if speaker.active {
                self.speakers.insert(speaker.sid.clone(), speaker.level);
            } else {
                self.speakers.remove(&speaker.sid);
            }
        }
        self.speakers.retain(|sid, _| self.participants.contains_key(sid));
        let mut speaking: Vec<(&String, f32)> = self.speakers.iter().map(|(sid, level)| (sid, *level)).collect();
        speaking.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        speaking.into_iter().map(|(sid, _)| self.identity_of(sid).unwrap_or(sid).to_string()).collect()
    }

    pub fn identity_of(&self, participant_sid: &str) -> Option<&str> {
        self.participants.get(participant_sid).map(|p| p.identity.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaker_updates_are_deltas() {
        let mut room = RoomTracker::default();
        room.reset(vec![participant("a", 1, vec![]), participant("b", 1, vec![])]);
        let speaker = |sid: &str, level: f32, active: bool| proto::SpeakerInfo { sid: sid.into(), level, active };
        assert_eq!(room.speakers_changed(&[speaker("a", 0.5, true)]), vec!["id-a"]);
        // b starts louder while a goes on: both, b first.
        assert_eq!(room.speakers_changed(&[speaker("b", 0.8, true)]), vec!["id-b", "id-a"]);
        assert_eq!(room.speakers_changed(&[speaker("b", 0.0, false)]), vec!["id-a"]);
        // A speaker who left the room is no longer speaking.
        room.reset(vec![participant("b", 1, vec![])]);
        assert_eq!(room.speakers_changed(&[]), Vec::<String>::new());
    }

    fn participant(sid: &str, version: u32, tracks: Vec<(&str, bool)>) -> proto::ParticipantInfo {
        proto::ParticipantInfo {
            sid: sid.into(),
            identity: format!("id-{sid}"),
            version,
            state: proto::participant_info::State::Active as i32,
            tracks: tracks.into_iter().map(|(t, muted)| proto::TrackInfo { sid: t.into(), muted, ..Default::default() }).collect(),
            ..Default::default()
        }
    }

    fn names(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Joined(p) => format!("joined {}", p.sid),
                Change::Left(p) => format!("left {}", p.sid),
                Change::Published(_, t) => format!("published {}", t.sid),
                Change::Unpublished(_, t) => format!("unpublished {}", t.sid),
                Change::Muted(_, t, m) => format!("muted {} {m}", t.sid),
            })
            .collect()
    }

    #[test]
    fn follows_joins_mutes_unpublishes_and_leaves() {
        let mut room = RoomTracker::default();
        assert_eq!(names(&room.reset(vec![participant("PA_a", 1, vec![("TR_1", false)])])), ["joined PA_a", "published TR_1"]);
        assert_eq!(names(&room.apply(vec![participant("PA_a", 2, vec![("TR_1", true), ("TR_2", false)])])), ["muted TR_1 true", "published TR_2"]);
        // A stale version changes nothing.
        assert!(room.apply(vec![participant("PA_a", 1, vec![])]).is_empty());
        assert_eq!(names(&room.apply(vec![participant("PA_a", 3, vec![("TR_2", false)])])), ["unpublished TR_1"]);
        let mut gone = participant("PA_a", 4, vec![]);
        gone.state = proto::participant_info::State::Disconnected as i32;
        assert_eq!(names(&room.apply(vec![gone])), ["unpublished TR_2", "left PA_a"]);
        assert!(room.is_empty());
    }

    #[test]
    fn a_rejoin_list_drops_who_left_meanwhile() {
        let mut room = RoomTracker::default();
        room.reset(vec![participant("PA_a", 1, vec![("TR_1", false)]), participant("PA_b", 1, vec![])]);
        assert_eq!(names(&room.reset(vec![participant("PA_b", 1, vec![])])), ["unpublished TR_1", "left PA_a"]);
    }
}
