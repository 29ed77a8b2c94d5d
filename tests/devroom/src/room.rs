//! Rooms and their synthetic participants: who is in the room, which tracks they publish, and the
//! scripted changes (joins, leaves, mutes, screen shares, close). Media pacing lives in `publisher.rs`;
//! what each client sees is the signalling session's business (`session.rs`).

use crate::clips::ClipSet;
use crate::publisher;
use crate::scenario::{ParticipantScript, RoomScript};
use livekit_protocol as proto;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// One encoded frame on its way to subscribers, with its RTP time in the codec's clock.
#[derive(Debug, Clone)]
pub struct OutFrame {
    pub track_sid: Arc<str>,
    /// When the frame was "captured": its place on the publisher's clock, which sender reports map.
    pub captured_at: std::time::Instant,
    pub rtp_time: u64,
    pub keyframe: bool,
    pub data: Arc<[u8]>,
    /// Which codec the frame is in: it picks the payload type (a camera may switch codecs mid-track).
    pub codec: fleet_pipelines::clip::ClipCodec,
}

/// What subscribers hear about the room.
#[derive(Debug, Clone)]
pub enum RoomEvent {
    /// A participant joined, changed (tracks, mute) or left (state DISCONNECTED).
    Participant(Box<proto::ParticipantInfo>),
    Speakers(Vec<proto::SpeakerInfo>),
    /// The room was deleted: clients get `Leave{ROOM_DELETED}`.
    Closed,
    /// Clients' WebSockets are cut, as a network failure would.
    DropSignalling,
}

pub struct Room {
    pub name: String,
    pub sid: String,
    pub created_ms: i64,
    /// What this room's SFU appends to frames it injects into encrypted tracks; livekit-server sends every
    /// joiner one (random per room, ASCII), encrypted room or not.
    pub sif_trailer: Vec<u8>,
    /// Share of RTP/RTCP datagrams dropped towards each subscriber (0..1).
    pub loss: f64,
    events: broadcast::Sender<RoomEvent>,
    state: Mutex<RoomState>,
    next_subscriber: AtomicU64,
}

#[derive(Default)]
struct RoomState {
    /// Visible participants by sid, synthetic and real.
    participants: BTreeMap<String, proto::ParticipantInfo>,
    subscribers: HashMap<u64, mpsc::Sender<OutFrame>>,
    speaking: std::collections::BTreeSet<String>,
    closed: bool,
}

pub fn new_sid(prefix: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    let tail: String = (0..12).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}{tail}")
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Room {
    pub fn new(name: &str, loss_percent: f64) -> Arc<Room> {
        let (events, _) = broadcast::channel(256);
        Arc::new(Room {
            name: name.to_string(),
            sid: new_sid("RM_"),
            created_ms: now_ms(),
            sif_trailer: new_sid("").into_bytes(),
            loss: loss_percent / 100.0,
            events,
            state: Mutex::new(RoomState::default()),
            next_subscriber: AtomicU64::new(1),
        })
    }

    pub fn info(&self) -> proto::Room {
        let state = self.state.lock().expect("room state");
        proto::Room {
            sid: self.sid.clone(),
            name: self.name.clone(),
            empty_timeout: 300,
            departure_timeout: 20,
            creation_time: self.created_ms / 1000,
            creation_time_ms: self.created_ms,
            num_participants: state.participants.len() as u32,
            num_publishers: state.participants.values().filter(|p| !p.tracks.is_empty()).count() as u32,
            ..Default::default()
        }
    }

    pub fn events(&self) -> broadcast::Receiver<RoomEvent> {
        self.events.subscribe()
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().expect("room state").closed
    }

    pub fn participants(&self) -> Vec<proto::ParticipantInfo> {
        self.state.lock().expect("room state").participants.values().cloned().collect()
    }

    /// Adds or replaces a participant and tells everyone (hidden participants are never shown).
    pub fn upsert(&self, mut info: proto::ParticipantInfo) {
        {
            let mut state = self.state.lock().expect("room state");
            if let Some(old) = state.participants.get(&info.sid) {
                info.version = info.version.max(old.version + 1);
            }
            state.participants.insert(info.sid.clone(), info.clone());
        }
        let _ = self.events.send(RoomEvent::Participant(Box::new(info)));
    }

    pub fn remove(&self, sid: &str, reason: proto::DisconnectReason) {
        let removed = self.state.lock().expect("room state").participants.remove(sid);
        if let Some(mut info) = removed {
            info.state = proto::participant_info::State::Disconnected as i32;
            info.version += 1;
            info.tracks.clear();
            info.disconnect_reason = reason as i32;
            let _ = self.events.send(RoomEvent::Participant(Box::new(info)));
        }
    }

    /// Applies `change` to a participant's info and announces it; false if they are gone.
    pub fn update(&self, sid: &str, change: impl FnOnce(&mut proto::ParticipantInfo)) -> bool {
        let info = {
            let mut state = self.state.lock().expect("room state");
            let Some(info) = state.participants.get_mut(sid) else { return false };
            change(info);
            info.version += 1;
            info.clone()
        };
        let _ = self.events.send(RoomEvent::Participant(Box::new(info)));
        true
    }

    pub fn track_state(&self, track_sid: &str) -> TrackState {
        let state = self.state.lock().expect("room state");
        for p in state.participants.values() {
            if let Some(track) = p.tracks.iter().find(|t| t.sid == track_sid) {
                return if track.muted { TrackState::Muted } else { TrackState::Live };
            }
        }
        TrackState::Gone
    }

    /// Marks a participant speaking or not and sends the change as LiveKit does: the active speakers,
    /// plus the one who stopped with level 0.
    pub fn set_speaking(&self, sid: &str, speaking: bool) {
        let speakers = {
            let mut state = self.state.lock().expect("room state");
            if speaking {
                state.speaking.insert(sid.to_string());
            } else {
                state.speaking.remove(sid);
            }
            let mut speakers: Vec<proto::SpeakerInfo> =
                state.speaking.iter().map(|s| proto::SpeakerInfo { sid: s.clone(), level: 0.5, active: true }).collect();
            if !speaking {
                speakers.push(proto::SpeakerInfo { sid: sid.to_string(), level: 0.0, active: false });
            }
            speakers
        };
        let _ = self.events.send(RoomEvent::Speakers(speakers));
    }

    /// Drops every client's signalling connection without a goodbye (tests of reconnects).
    pub fn drop_signalling(&self) {
        let _ = self.events.send(RoomEvent::DropSignalling);
    }

    pub fn close(&self) {
        self.state.lock().expect("room state").closed = true;
        let _ = self.events.send(RoomEvent::Closed);
    }

    pub fn add_subscriber(&self, frames: mpsc::Sender<OutFrame>) -> u64 {
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        self.state.lock().expect("room state").subscribers.insert(id, frames);
        id
    }

    pub fn remove_subscriber(&self, id: u64) {
        self.state.lock().expect("room state").subscribers.remove(&id);
    }

    pub fn subscriber_count(&self) -> usize {
        self.state.lock().expect("room state").subscribers.len()
    }

    /// Hands a frame to every subscriber; a subscriber that cannot keep up loses it (as an SFU drops).
    pub fn send_frame(&self, frame: OutFrame) {
        let state = self.state.lock().expect("room state");
        for subscriber in state.subscribers.values() {
            let _ = subscriber.try_send(frame.clone());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackState {
    Live,
    Muted,
    Gone,
}

/// Runs a room's script from the moment it opens: joins, mutes, shares, leaves, close. Participants
/// present from the start are in the room before this returns, so the first client's join response
/// lists them, as it would in a room that was already running.
pub fn run_script(room: Arc<Room>, script: RoomScript, clips: Arc<ClipSet>) {
    let opened = tokio::time::Instant::now();
    for (index, participant) in script.participants.iter().enumerate() {
        let present = (participant.join_at_s <= 0.0).then(|| join(&room, participant, index, &clips, opened));
        tokio::spawn(run_participant(room.clone(), participant.clone(), index, clips.clone(), opened, present));
    }
    if let Some(close_after) = script.close_after_s {
        let room = room.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(close_after)).await;
            tracing::info!(room = %room.name, "closing the room as scripted");
            room.close();
        });
    }
}

pub(crate) fn in_window(windows: &[[f64; 2]], t: f64) -> bool {
    windows.iter().any(|[from, to]| t >= *from && t < *to)
}

/// Who joined: the participant's sid and the clip its screen share replays.
type Joined = (String, Option<Arc<fleet_pipelines::clip::Clip>>);

async fn run_participant(
    room: Arc<Room>,
    script: ParticipantScript,
    index: usize,
    clips: Arc<ClipSet>,
    opened: tokio::time::Instant,
    present: Option<Joined>,
) {
    let at = |s: f64| opened + Duration::from_secs_f64(s.max(0.0));
    let (sid, video_clip) = match present {
        Some(joined) => joined,
        None => {
            tokio::time::sleep_until(at(script.join_at_s)).await;
            if room.is_closed() {
                return;
            }
            join(&room, &script, index, &clips, opened)
        }
    };
    follow_script(room, script, sid, video_clip, opened).await;
}

/// Adds the participant with its camera and microphone and starts pacing their media.
fn join(room: &Arc<Room>, script: &ParticipantScript, index: usize, clips: &ClipSet, opened: tokio::time::Instant) -> Joined {
    let sid = new_sid("PA_");
    let camera = script.camera.then(|| track_info(script, TrackKind::Camera));
    let microphone = script.microphone.then(|| track_info(script, TrackKind::Microphone));
    let info = proto::ParticipantInfo {
        sid: sid.clone(),
        identity: script.identity.clone(),
        name: script.name.clone().unwrap_or_else(|| script.identity.clone()),
        state: proto::participant_info::State::Active as i32,
        tracks: camera.iter().chain(microphone.iter()).cloned().collect(),
        joined_at: now_ms() / 1000,
        joined_at_ms: now_ms(),
        version: 1,
        is_publisher: true,
        kind: proto::participant_info::Kind::Standard as i32,
        permission: Some(proto::ParticipantPermission { can_subscribe: true, can_publish: true, can_publish_data: true, ..Default::default() }),
        ..Default::default()
    };
    room.upsert(info);
    tracing::info!(room = %room.name, identity = %script.identity, %sid, "synthetic participant joined");
    let video_clip = clips.get(crate::clips::Kind::Video(script.video_codec), index);
    let audio_clip = clips.get(crate::clips::Kind::Audio, index);
    let garbage = publisher::Garbage { windows: script.garbage.clone(), opened };
    if let (Some(track), Some(clip)) = (&camera, video_clip.clone()) {
        let switch = script.switch_codec_at_s.and_then(|at_s| {
            let later = clips.get(crate::clips::Kind::Video(script.video_codec.other()), index)?;
            Some((opened + Duration::from_secs_f64(at_s), later))
        });
        tokio::spawn(publisher::pace(room.clone(), track.sid.clone().into(), clip, garbage.clone(), switch));
    }
    if let (Some(track), Some(clip)) = (&microphone, audio_clip) {
        tokio::spawn(publisher::pace(room.clone(), track.sid.clone().into(), clip, garbage, None));
    }
    (sid, video_clip)
}

async fn follow_script(
    room: Arc<Room>,
    script: ParticipantScript,
    sid: String,
    video_clip: Option<Arc<fleet_pipelines::clip::Clip>>,
    opened: tokio::time::Instant,
) {
    let at = |s: f64| opened + Duration::from_secs_f64(s.max(0.0));
    // Scripted changes, checked ten times a second.
    let leave_at = script.leave_at_s.map(at);
    let mut share: Option<String> = None;
    let mut speaking = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if room.is_closed() {
            return;
        }
        let now_speaking = in_window(&script.speaking, opened.elapsed().as_secs_f64());
        let leaving = leave_at.is_some_and(|leave| tokio::time::Instant::now() >= leave);
        if now_speaking != speaking || (leaving && speaking) {
            speaking = now_speaking && !leaving;
            room.set_speaking(&sid, speaking);
        }
        if leaving {
            room.remove(&sid, proto::DisconnectReason::ClientInitiated);
            tracing::info!(room = %room.name, identity = %script.identity, "synthetic participant left");
            return;
        }
        let t = opened.elapsed().as_secs_f64();
        let camera_muted = in_window(&script.mute_camera, t);
        let mic_muted = in_window(&script.mute_microphone, t);
        let sharing = in_window(&script.screen_share, t);
        let mut changed = false;
        let current = room.participants().into_iter().find(|p| p.sid == sid);
        let Some(current) = current else { return };
        for track in &current.tracks {
            let want = match track.source() {
                proto::TrackSource::Camera => camera_muted,
                proto::TrackSource::Microphone => mic_muted,
                _ => track.muted,
            };
            changed |= want != track.muted;
        }
        changed |= sharing != share.is_some();
        if !changed {
            continue;
        }
        let new_share = if sharing && share.is_none() {
            let track = track_info(&script, TrackKind::ScreenShare);
            share = Some(track.sid.clone());
            if let Some(clip) = video_clip.clone() {
                let garbage = publisher::Garbage { windows: script.garbage.clone(), opened };
                tokio::spawn(publisher::pace(room.clone(), track.sid.clone().into(), clip, garbage, None));
            }
            Some(track)
        } else {
            None
        };
        let stop_share = if !sharing { share.take() } else { None };
        room.update(&sid, |info| {
            for track in &mut info.tracks {
                match track.source() {
                    proto::TrackSource::Camera => track.muted = camera_muted,
                    proto::TrackSource::Microphone => track.muted = mic_muted,
                    _ => {}
                }
            }
            if let Some(stop) = &stop_share {
                info.tracks.retain(|t| &t.sid != stop);
            }
            info.tracks.extend(new_share.clone());
        });
    }
}

#[derive(Clone, Copy)]
enum TrackKind {
    Camera,
    Microphone,
    ScreenShare,
}

fn track_info(script: &ParticipantScript, kind: TrackKind) -> proto::TrackInfo {
    let (name, source, kind_type) = match kind {
        TrackKind::Camera => ("camera", proto::TrackSource::Camera, proto::TrackType::Video),
        TrackKind::Microphone => ("microphone", proto::TrackSource::Microphone, proto::TrackType::Audio),
        TrackKind::ScreenShare => ("screen", proto::TrackSource::ScreenShare, proto::TrackType::Video),
    };
    let video = matches!(kind_type, proto::TrackType::Video);
    let mime = match (video, script.video_codec) {
        (false, _) => "audio/opus",
        (true, crate::scenario::VideoCodec::Vp8) => "video/VP8",
        (true, crate::scenario::VideoCodec::H264) => "video/H264",
    };
    let sid = new_sid("TR_");
    proto::TrackInfo {
        sid: sid.clone(),
        r#type: kind_type as i32,
        name: name.into(),
        source: source as i32,
        width: if video { crate::clips::WIDTH } else { 0 },
        height: if video { crate::clips::HEIGHT } else { 0 },
        mime_type: mime.into(),
        stream: if video { "camera".into() } else { "microphone".into() },
        codecs: vec![proto::SimulcastCodecInfo { mime_type: mime.into(), mid: String::new(), cid: sid, ..Default::default() }],
        ..Default::default()
    }
}
