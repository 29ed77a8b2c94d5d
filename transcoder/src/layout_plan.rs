//! From the room's history to the composite's schedule: replays the room events in time order and,
//! after each, lays out who is on screen in the job's layout.
//!
//! - A participant gets a tile while present with at least one published track (a silent viewer
//!   gets none); the tile shows their camera, or a placeholder while the camera is off, muted or absent.
//! - `grid`: every tile, screen shares next to their owner's. `speaker`: the active speaker large,
//!   everyone else (and any screen share) in a strip. `screen_share`: the latest share large, the
//!   cameras in a strip; a grid while nobody shares. `single`: one participant, full frame.
//! - The speaker focus moves at once to a new loudest speaker, but never sooner than `MIN_FOCUS_NS`
//!   after the last move (hysteresis: short interjections do not make the picture jump). Silence keeps it.
//! - Between capture sessions nothing is shown (the gap is black).

use crate::room_history::{RoomEvent, TimedEvent};
use fleet_pipelines::layout::{self, Layer, Scene, Schedule, Tile};
use fleet_protocol::job::Layout;
use std::collections::{BTreeMap, BTreeSet};

/// The least time the speaker focus stays on someone.
pub const MIN_FOCUS_NS: u64 = 2_000_000_000;

pub struct PlanRequest<'a> {
    pub layout: Layout,
    /// `single`: the participant (id or identity) to show; the first present one when absent.
    pub participant: Option<&'a str>,
    /// Input names (`participant/track`) of the video tracks that have media.
    pub video_tracks: &'a [String],
    pub width: u32,
    pub height: u32,
    /// Space between tiles in pixels (`Look::gap_px`).
    pub gap: i32,
}

struct TrackState {
    kind: String,
    source: String,
    muted: bool,
    /// Order of publication, so the latest screen share can win.
    published_seq: u64,
}

#[derive(Default)]
struct Room {
    /// Present participants in order of joining: the server's join time when known, else the order of
    /// the timeline; the id breaks ties.
    present: Vec<String>,
    joined_at_ms: BTreeMap<String, u64>,
    /// (participant, track) → state, while published.
    tracks: BTreeMap<(String, String), TrackState>,
    /// Speaker focus and since when.
    focus: Option<(String, u64)>,
    /// A focus move held back by the hysteresis: (participant, when it may happen).
    pending_focus: Option<(String, u64)>,
    /// The loudest present participant right now (no hysteresis): their tile is outlined.
    speaking: Option<String>,
    seq: u64,
}

pub fn plan(events: &[TimedEvent], request: &PlanRequest) -> Schedule {
    let with_media: BTreeSet<&str> = request.video_tracks.iter().map(String::as_str).collect();
    // Video tracks with media but unknown to the timeline (an older recorder, a lost timeline) are
    // treated as cameras of participants present all session, so no media is left out.
    let announced: BTreeSet<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            RoomEvent::Published { participant, track, .. } => Some(format!("{participant}/{track}")),
            _ => None,
        })
        .collect();
    let unannounced: Vec<(String, String)> = request
        .video_tracks
        .iter()
        .filter(|name| !announced.contains(*name))
        .filter_map(|name| name.split_once('/').map(|(p, t)| (p.to_string(), t.to_string())))
        .collect();
    let mut identities: BTreeMap<String, String> = BTreeMap::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for event in events {
        if let RoomEvent::Joined { participant, identity, name, .. } = &event.event {
            identities.insert(identity.clone(), participant.clone());
            let shown = if name.trim().is_empty() { identity } else { name };
            names.insert(participant.clone(), shown.trim().to_string());
        }
    }
    let chosen = request.participant.map(|p| identities.get(p).cloned().unwrap_or_else(|| p.to_string()));

    let planner = Planner { request, with_media, chosen };
    let mut room = Room::default();
    let mut scenes = Vec::new();
    for event in events {
        if let Some((participant, at)) = room.pending_focus.clone().filter(|(_, at)| *at <= event.at_ns) {
            room.pending_focus = None;
            room.focus = Some((participant, at));
            scenes.push(planner.scene(&room, at));
        }
        apply(&mut room, event, &unannounced);
        scenes.push(planner.scene(&room, event.at_ns));
    }
    Schedule::new(scenes).with_names(names)
}

fn apply(room: &mut Room, event: &TimedEvent, unannounced: &[(String, String)]) {
    match &event.event {
        RoomEvent::SessionStarted => {
            *room = Room::default();
            for (participant, track) in unannounced {
                if !room.present.contains(participant) {
                    room.present.push(participant.clone());
                }
                room.seq += 1;
                let state = TrackState { kind: "video".into(), source: "camera".into(), muted: false, published_seq: room.seq };
                room.tracks.insert((participant.clone(), track.clone()), state);
            }
        }
        RoomEvent::SessionEnded => *room = Room::default(),
        RoomEvent::Joined { participant, joined_at_ms, .. } => {
            if !room.present.contains(participant) {
                room.present.push(participant.clone());
            }
            if let Some(at) = joined_at_ms {
                room.joined_at_ms.insert(participant.clone(), *at);
            }
            let mut present: Vec<(usize, String)> = std::mem::take(&mut room.present).into_iter().enumerate().collect();
            present.sort_by_key(|(index, p)| match room.joined_at_ms.get(p) {
                Some(at) => (*at, p.clone(), *index),
                None => (u64::MAX, String::new(), *index),
            });
            room.present = present.into_iter().map(|(_, p)| p).collect();
        }
        RoomEvent::Left { participant } => {
            room.present.retain(|p| p != participant);
            room.tracks.retain(|(p, _), _| p != participant);
            if room.focus.as_ref().is_some_and(|(p, _)| p == participant) {
                room.focus = None;
            }
            if room.pending_focus.as_ref().is_some_and(|(p, _)| p == participant) {
                room.pending_focus = None;
            }
            if room.speaking.as_ref() == Some(participant) {
                room.speaking = None;
            }
        }
        RoomEvent::Published { participant, track, kind, source } => {
            room.seq += 1;
            let state = TrackState { kind: kind.clone(), source: source.clone(), muted: false, published_seq: room.seq };
            room.tracks.insert((participant.clone(), track.clone()), state);
        }
        RoomEvent::Unpublished { participant, track } => {
            room.tracks.remove(&(participant.clone(), track.clone()));
        }
        RoomEvent::Muted { participant, track, muted } => {
            if let Some(state) = room.tracks.get_mut(&(participant.clone(), track.clone())) {
                state.muted = *muted;
            }
        }
        RoomEvent::Speakers { participants } => {
            let loudest = participants.iter().find(|p| room.present.contains(p)).cloned();
            room.speaking = loudest.clone();
            let Some(loudest) = loudest else { return };
            match &room.focus {
                Some((current, _)) if *current == loudest => room.pending_focus = None,
                Some((_, since)) if event.at_ns < since + MIN_FOCUS_NS => room.pending_focus = Some((loudest, since + MIN_FOCUS_NS)),
                _ => {
                    room.pending_focus = None;
                    room.focus = Some((loudest, event.at_ns));
                }
            }
        }
    }
}

struct Planner<'a> {
    request: &'a PlanRequest<'a>,
    with_media: BTreeSet<&'a str>,
    chosen: Option<String>,
}

impl Planner<'_> {
    fn visible(&self, participant: &str, track: &str, state: &TrackState) -> bool {
        state.kind == "video" && !state.muted && self.with_media.contains(format!("{participant}/{track}").as_str())
    }

    /// Participants with a tile, in joining order, each with what their tile shows.
    fn participant_tiles(&self, room: &Room) -> Vec<(String, Layer)> {
        room.present
            .iter()
            .filter(|p| room.tracks.keys().any(|(owner, _)| owner == *p))
            .map(|p| {
                let camera = room
                    .tracks
                    .iter()
                    .filter(|((owner, track), state)| owner == p && state.source != "screen_share" && self.visible(owner, track, state))
                    .min_by_key(|(_, state)| state.published_seq);
                let layer = match camera {
                    Some(((owner, track), _)) => Layer::Track(format!("{owner}/{track}")),
                    None => Layer::Placeholder(p.clone()),
                };
                (p.clone(), layer)
            })
            .collect()
    }

    /// Visible screen shares, oldest first, with their owners.
    fn shares(&self, room: &Room) -> Vec<(String, Layer)> {
        let mut shares: Vec<_> =
            room.tracks.iter().filter(|((owner, track), state)| state.source == "screen_share" && self.visible(owner, track, state)).collect();
        shares.sort_by_key(|(_, state)| state.published_seq);
        shares.into_iter().map(|((owner, track), _)| (owner.clone(), Layer::Track(format!("{owner}/{track}")))).collect()
    }

    /// What is shown from `start_ns`: the layers, and the speaker's tile outlined where there are several.
    fn scene(&self, room: &Room, start_ns: u64) -> Scene {
        let layers = self.layers(room);
        let highlight = room.speaking.as_ref().filter(|_| layers.len() > 1).and_then(|speaker| {
            let (_, own) = self.participant_tiles(room).into_iter().find(|(p, _)| p == speaker)?;
            layers.iter().find(|(layer, _)| *layer == own).map(|(_, tile)| *tile)
        });
        Scene { start_ns, layers, highlight }
    }

    fn layers(&self, room: &Room) -> Vec<(Layer, Tile)> {
        let (width, height) = (self.request.width, self.request.height);
        let people = self.participant_tiles(room);
        let shares = self.shares(room);
        let grid = || {
            let mut all = Vec::new();
            for (participant, layer) in &people {
                all.push(layer.clone());
                all.extend(shares.iter().filter(|(owner, _)| owner == participant).map(|(_, l)| l.clone()));
            }
            let tiles = layout::with_gap(layout::grid(all.len(), width, height), self.request.gap);
            all.into_iter().zip(tiles).collect::<Vec<_>>()
        };
        let focused = |focus: Layer, strip: Vec<Layer>| {
            let (big, small) = layout::focus_with_strip(strip.len(), width, height);
            let mut tiles = layout::with_gap(std::iter::once(big).chain(small).collect(), self.request.gap).into_iter();
            let big = tiles.next().expect("the focus tile");
            let small: Vec<Tile> = tiles.collect();
            let mut layers = vec![(focus, big)];
            layers.extend(strip.into_iter().zip(small));
            layers
        };
        match self.request.layout {
            Layout::Grid => grid(),
            Layout::ScreenShare => match shares.last() {
                Some((_, share)) => focused(share.clone(), people.into_iter().map(|(_, l)| l).collect()),
                None => grid(),
            },
            Layout::Speaker => {
                let speaker = room.focus.as_ref().map(|(p, _)| p.as_str());
                let Some(focus_index) =
                    people.iter().position(|(p, _)| Some(p.as_str()) == speaker).or(if people.is_empty() { None } else { Some(0) })
                else {
                    return Vec::new();
                };
                let focus = people[focus_index].1.clone();
                let strip = people
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != focus_index)
                    .map(|(_, (_, l))| l.clone())
                    .chain(shares.iter().map(|(_, l)| l.clone()))
                    .collect();
                focused(focus, strip)
            }
            Layout::Single => {
                let shown = match &self.chosen {
                    Some(chosen) => people.iter().find(|(p, _)| p == chosen),
                    None => people.first(),
                };
                shown.map(|(_, layer)| focused(layer.clone(), Vec::new())).unwrap_or_default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn at(t_s: f64, event: RoomEvent) -> TimedEvent {
        TimedEvent { at_ns: (t_s * S as f64) as u64, event }
    }
    fn joined(p: &str) -> RoomEvent {
        RoomEvent::Joined { participant: p.into(), identity: p.into(), name: String::new(), joined_at_ms: None }
    }
    fn camera(p: &str) -> RoomEvent {
        RoomEvent::Published { participant: p.into(), track: format!("{p}-cam"), kind: "video".into(), source: "camera".into() }
    }
    fn mic(p: &str) -> RoomEvent {
        RoomEvent::Published { participant: p.into(), track: format!("{p}-mic"), kind: "audio".into(), source: "microphone".into() }
    }
    fn share(p: &str) -> RoomEvent {
        RoomEvent::Published { participant: p.into(), track: format!("{p}-screen"), kind: "video".into(), source: "screen_share".into() }
    }
    fn cam(p: &str) -> Layer {
        Layer::Track(format!("{p}/{p}-cam"))
    }
    fn speakers(list: &[&str]) -> RoomEvent {
        RoomEvent::Speakers { participants: list.iter().map(|s| s.to_string()).collect() }
    }

    fn request<'a>(layout: Layout, tracks: &'a [String]) -> PlanRequest<'a> {
        PlanRequest { layout, participant: None, video_tracks: tracks, width: 1280, height: 720, gap: 0 }
    }

    fn tracks(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// The layers shown at `t_s` with the width of their tiles.
    fn shown(schedule: &Schedule, t_s: f64) -> Vec<(Layer, i32)> {
        let Some(i) = schedule.index_at((t_s * S as f64) as u64) else {
            return vec![];
        };
        schedule.scenes()[i].layers.iter().map(|(l, t)| (l.clone(), t.width)).collect()
    }

    #[test]
    fn grid_follows_joins_leaves_mutes_and_viewers() {
        let events = vec![
            at(0.0, RoomEvent::SessionStarted),
            at(0.1, joined("a")),
            at(0.2, camera("a")),
            at(0.2, joined("viewer")),
            at(3.0, joined("b")),
            at(3.1, mic("b")),
            at(3.2, camera("b")),
            at(5.0, RoomEvent::Muted { participant: "b".into(), track: "b-cam".into(), muted: true }),
            at(6.0, RoomEvent::Left { participant: "a".into() }),
            at(8.0, RoomEvent::SessionEnded),
        ];
        let media = tracks(&["a/a-cam", "b/b-cam"]);
        let schedule = plan(&events, &request(Layout::Grid, &media));
        assert_eq!(shown(&schedule, 1.0), vec![(cam("a"), 1280)], "a viewer without tracks gets no tile");
        assert_eq!(shown(&schedule, 3.15), vec![(cam("a"), 640), (Layer::Placeholder("b".into()), 640)], "audio only: placeholder");
        assert_eq!(shown(&schedule, 4.0), vec![(cam("a"), 640), (cam("b"), 640)]);
        assert_eq!(shown(&schedule, 5.5), vec![(cam("a"), 640), (Layer::Placeholder("b".into()), 640)], "muted camera");
        assert_eq!(shown(&schedule, 7.0), vec![(Layer::Placeholder("b".into()), 1280)]);
        assert_eq!(shown(&schedule, 9.0), vec![], "after the session: black");
    }

    #[test]
    fn a_camera_without_media_is_a_placeholder_and_unknown_tracks_still_show() {
        let events = vec![at(0.0, RoomEvent::SessionStarted), at(0.1, joined("a")), at(0.1, camera("a")), at(4.0, RoomEvent::SessionEnded)];
        let media = tracks(&["ghost/TR_9"]);
        let schedule = plan(&events, &request(Layout::Grid, &media));
        assert_eq!(shown(&schedule, 1.0), vec![(Layer::Track("ghost/TR_9".into()), 640), (Layer::Placeholder("a".into()), 640)]);
    }

    #[test]
    fn tiles_follow_the_servers_join_order() {
        let joined_at =
            |p: &str, ms: u64| RoomEvent::Joined { participant: p.into(), identity: p.into(), name: String::new(), joined_at_ms: Some(ms) };
        let events = vec![
            at(0.0, RoomEvent::SessionStarted),
            // A join list arrives in any order; the server's join times (and then ids) decide.
            at(0.1, joined_at("c", 500)),
            at(0.1, joined_at("b", 100)),
            at(0.1, joined_at("a", 500)),
            at(0.1, camera("a")),
            at(0.1, camera("b")),
            at(0.1, camera("c")),
            at(4.0, RoomEvent::SessionEnded),
        ];
        let media = tracks(&["a/a-cam", "b/b-cam", "c/c-cam"]);
        let schedule = plan(&events, &request(Layout::Grid, &media));
        assert_eq!(shown(&schedule, 1.0).into_iter().map(|(l, _)| l).collect::<Vec<_>>(), vec![cam("b"), cam("a"), cam("c")]);
    }

    #[test]
    fn speaker_focus_moves_with_hysteresis() {
        let mut events = vec![at(0.0, RoomEvent::SessionStarted)];
        for p in ["a", "b", "c"] {
            events.push(at(0.1, joined(p)));
            events.push(at(0.1, camera(p)));
        }
        events.extend([
            at(1.0, speakers(&["b"])),
            at(2.0, speakers(&["c", "b"])), // too soon after the move to b: held until 3.0
            at(2.5, speakers(&["c"])),
            at(6.0, speakers(&[])), // silence keeps c
            at(7.0, speakers(&["a"])),
            at(7.5, speakers(&["c"])), // held until 9.0...
            at(8.0, speakers(&["a"])), // ...and dropped: a is the loudest again
            at(10.0, speakers(&["b"])),
            at(12.0, RoomEvent::SessionEnded),
        ]);
        let media = tracks(&["a/a-cam", "b/b-cam", "c/c-cam"]);
        let schedule = plan(&events, &request(Layout::Speaker, &media));
        let focus = |t: f64| shown(&schedule, t)[0].clone();
        assert_eq!(focus(0.5), (cam("a"), 1280), "nobody spoke yet: the first participant");
        assert_eq!(shown(&schedule, 0.5).len(), 3);
        assert_eq!(focus(1.5).0, cam("b"));
        assert_eq!(focus(2.9).0, cam("b"));
        assert_eq!(focus(3.0).0, cam("c"));
        assert_eq!(focus(6.5).0, cam("c"));
        assert_eq!(focus(7.2).0, cam("a"));
        assert_eq!(focus(8.0).0, cam("a"), "a keeps the focus for its minimum");
        assert_eq!(focus(9.5).0, cam("a"), "the held move to c was dropped");
        assert_eq!(focus(10.5).0, cam("b"));
    }

    #[test]
    fn the_speakers_tile_is_outlined_and_tiles_carry_names() {
        let mut events = vec![at(0.0, RoomEvent::SessionStarted)];
        events.push(at(0.1, RoomEvent::Joined { participant: "PA_a".into(), identity: "a".into(), name: "Ada L".into(), joined_at_ms: None }));
        events.push(at(0.1, RoomEvent::Published { participant: "PA_a".into(), track: "cam".into(), kind: "video".into(), source: "camera".into() }));
        events.push(at(0.1, joined("b")));
        events.push(at(0.1, mic("b")));
        events.extend([
            at(1.0, speakers(&["b"])),
            at(1.5, speakers(&["PA_a", "b"])), // follows at once, no hysteresis
            at(3.0, speakers(&[])),
            at(4.0, speakers(&["b"])),
            at(5.0, RoomEvent::Left { participant: "b".into() }),
            at(6.0, RoomEvent::SessionEnded),
        ]);
        let media = tracks(&["PA_a/cam"]);
        let schedule = plan(&events, &request(Layout::Grid, &media));
        let highlight = |t: f64| schedule.scenes()[schedule.index_at((t * S as f64) as u64).unwrap()].highlight;
        let grid = layout::grid(2, 1280, 720);
        assert_eq!(highlight(0.5), None, "nobody spoke yet");
        assert_eq!(highlight(1.2), Some(grid[1]), "b's placeholder tile");
        assert_eq!(highlight(2.0), Some(grid[0]));
        assert_eq!(highlight(3.5), None, "silence");
        assert_eq!(highlight(4.5), Some(grid[1]));
        assert_eq!(highlight(5.5), None, "b left; one tile is never outlined");
        assert_eq!(schedule.label(&Layer::Track("PA_a/cam".into())), "Ada L");
        assert_eq!(schedule.label(&Layer::Placeholder("b".into())), "b", "no name: the identity");
    }

    #[test]
    fn screen_share_takes_the_stage_while_shared() {
        let events = vec![
            at(0.0, RoomEvent::SessionStarted),
            at(0.1, joined("a")),
            at(0.1, camera("a")),
            at(0.1, joined("b")),
            at(0.1, camera("b")),
            at(2.0, share("b")),
            at(4.0, RoomEvent::Unpublished { participant: "b".into(), track: "b-screen".into() }),
            at(6.0, RoomEvent::SessionEnded),
        ];
        let media = tracks(&["a/a-cam", "b/b-cam", "b/b-screen"]);
        let schedule = plan(&events, &request(Layout::ScreenShare, &media));
        assert_eq!(shown(&schedule, 1.0), vec![(cam("a"), 640), (cam("b"), 640)]);
        assert_eq!(shown(&schedule, 3.0), vec![(Layer::Track("b/b-screen".into()), 1280), (cam("a"), 256), (cam("b"), 256)]);
        assert_eq!(shown(&schedule, 5.0), vec![(cam("a"), 640), (cam("b"), 640)]);
        // In the grid the share is one more tile, next to its owner.
        let grid = plan(&events, &request(Layout::Grid, &media));
        assert_eq!(shown(&grid, 3.0).iter().map(|(l, _)| l.clone()).collect::<Vec<_>>(), vec![cam("a"), cam("b"), Layer::Track("b/b-screen".into())]);
    }

    #[test]
    fn single_shows_the_chosen_participant_only() {
        let events = vec![
            at(0.0, RoomEvent::SessionStarted),
            at(0.1, joined("a")),
            at(0.1, camera("a")),
            at(0.2, joined("b")),
            at(0.2, camera("b")),
            at(3.0, RoomEvent::Left { participant: "b".into() }),
            at(6.0, RoomEvent::SessionEnded),
        ];
        let media = tracks(&["a/a-cam", "b/b-cam"]);
        let chosen = PlanRequest { participant: Some("b"), ..request(Layout::Single, &media) };
        let schedule = plan(&events, &chosen);
        assert_eq!(shown(&schedule, 1.0), vec![(cam("b"), 1280)]);
        assert_eq!(shown(&schedule, 4.0), vec![], "the chosen one left: nothing shown");
        let first = plan(&events, &request(Layout::Single, &media));
        assert_eq!(shown(&first, 1.0), vec![(cam("a"), 1280)]);
    }
}
