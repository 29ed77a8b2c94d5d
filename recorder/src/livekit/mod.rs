//! The `livekit` capture source: join the room as a hidden, subscribe-only participant (signalling
//! through `livekit-signaling`), receive every track on a str0m peer connection, and write each track's
//! encoded frames to its own Matroska segments. No decoding, no browser.

mod blank_frames;
mod codecs;
mod ice_tcp;
mod peer;
mod recovery;
mod room;
mod sdp;
mod token;
mod track_timing;

use crate::capture::{SourceEvent, SourceEvents};
use crate::config::LivekitConfig;
use crate::timeline::Entry;
use fleet_pipelines::track_writer::{TrackCodec, TrackWriter, TrackWriterEvent};
use fleet_protocol::SafeId;
use fleet_protocol::job::EndReason;
use livekit_protocol as proto;
use livekit_protocol::signal_request::Message as Request;
use livekit_protocol::signal_response::Message as Response;
use livekit_signaling::{SignalClient, SignalError, SignalEvent, SignalOptions};
use peer::{Peer, PeerEvent};
use recovery::{Attempt, MediaAction, MediaWatch, Recovery, ResumePolicy, Retry};
use room::{Change, RoomTracker};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use track_timing::{Restart, TrackTiming};

pub use token::recorder_token;

/// Keyframe requests (PLI) per track at most this often.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// How long stopping writers may take to close their last segments.
const FINISH_TIMEOUT: Duration = Duration::from_secs(15);
/// Datagrams read in one go; a bound keeps signalling and timers served.
const MAX_DATAGRAMS_PER_WAKE: usize = 256;
/// After reading, the socket rests this long before it is read again (the kernel buffer holds what
/// arrives meanwhile): a room's ~800 packets a second then wake the loop 200 times, not 800, which is
/// most of what the capture costs (thread wake-ups, not decryption). Arrival times are read this late.
const SOCKET_REST: Duration = Duration::from_millis(5);
/// Sender reports go to the timeline at most this often per track.
const SENDER_REPORT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How long a resume may take before the capture rejoins instead (the server keeps the session for
/// several seconds; its media keeps flowing meanwhile).
const RESUME_TIMEOUT: Duration = Duration::from_secs(3);

/// A resume in flight: the new signalling connection and the server's `ReconnectResponse`.
type Resuming<'a> = Pin<Box<dyn Future<Output = Result<Result<proto::ReconnectResponse, SignalError>, tokio::time::error::Elapsed>> + Send + 'a>>;

pub struct LivekitParams {
    pub config: LivekitConfig,
    pub room: String,
    /// The recorder's participant identity (hidden from other participants).
    pub identity: String,
    pub segment_ns: u64,
    /// Segments go to `<media_dir>/<participant>/<track>/NNNNN.mkv`.
    pub media_dir: PathBuf,
}

/// Running time of a capture session: one monotonic clock for every track.
#[derive(Debug, Clone, Copy)]
pub struct SessionClock {
    zero: Instant,
    pub wall_ms_at_zero: u64,
}

impl SessionClock {
    fn start() -> SessionClock {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        SessionClock { zero: Instant::now(), wall_ms_at_zero: wall }
    }

    pub fn running_ns(&self) -> u64 {
        self.zero.elapsed().as_nanos() as u64
    }

    fn running_ns_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.zero).as_nanos() as u64
    }
}

pub struct LivekitCapture {
    clock: SessionClock,
    stop: watch::Sender<bool>,
}

impl LivekitCapture {
    pub fn start(params: LivekitParams, events: SourceEvents) -> LivekitCapture {
        let clock = SessionClock::start();
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            let mut capture = RoomCapture::new(params, clock, events.clone());
            let outcome = capture.run(stop_rx).await;
            let _ = events.send(match outcome {
                Ok(()) => SourceEvent::Finished,
                Err(reason) => SourceEvent::Failed(reason),
            });
        });
        LivekitCapture { clock, stop }
    }

    pub fn clock(&self) -> SessionClock {
        self.clock
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// One track being written.
struct TrackSink {
    video: bool,
    participant: SafeId,
    /// Where the current writer stores the track (and its id in the timeline): the track's sid, then
    /// `<sid>-2`, `-3`… after each codec change.
    track: SafeId,
    /// How many writers this track has had: a codec change mid-track starts a new one.
    generation: u32,
    clock_rate: u32,
    writer: Option<TrackWriter>,
    /// What the current writer stores.
    codec: Option<TrackCodec>,
    /// Writers of earlier codecs, closing their last segments.
    retired: Vec<(SafeId, TrackWriter)>,
    timing: TrackTiming,
    waiting_for_keyframe: bool,
    last_keyframe_request: Option<Instant>,
    last_sender_report: Option<(Instant, SystemTime)>,
    /// Breaks in the RTP sequence (packets that never arrived): logged, as lost audio cannot be asked for again.
    gaps: u32,
    /// Told to finish (unpublished or stopping): frames that still arrive are dropped.
    finishing: bool,
    finished: bool,
}

impl TrackSink {
    fn new(participant: SafeId, track: SafeId, clock_rate: u32, video: bool) -> TrackSink {
        TrackSink {
            video,
            participant,
            track,
            generation: 1,
            clock_rate,
            writer: None,
            codec: None,
            retired: Vec::new(),
            timing: TrackTiming::new(clock_rate, video),
            waiting_for_keyframe: video,
            last_keyframe_request: None,
            last_sender_report: None,
            gaps: 0,
            finishing: false,
            finished: false,
        }
    }
}

/// Which writer a note is from: the track's sid, and where that writer stores it (a track whose codec
/// changed has had several).
struct WriterKey {
    sid: String,
    storage: SafeId,
}

/// Messages from track writers' pipelines back to the capture loop.
enum WriterNote {
    KeyframeWanted(WriterKey),
    Finished(WriterKey),
    Failed(WriterKey, fleet_pipelines::PipelineError),
}

struct RoomCapture {
    params: LivekitParams,
    clock: SessionClock,
    events: SourceEvents,
    tracker: RoomTracker,
    tracks: HashMap<String, TrackSink>,
    notes_tx: mpsc::UnboundedSender<WriterNote>,
    notes: mpsc::UnboundedReceiver<WriterNote>,
    token: String,
    connection: u32,
    empty_since: Option<Instant>,
}

/// How one signalling connection ended.
enum ConnectionEnd {
    Stop,
    Ended(EndReason),
    /// Lost or asked to reconnect: join again.
    Reconnect(String),
}

impl RoomCapture {
    fn new(params: LivekitParams, clock: SessionClock, events: SourceEvents) -> RoomCapture {
        let (notes_tx, notes) = mpsc::unbounded_channel();
        RoomCapture {
            params,
            clock,
            events,
            tracker: RoomTracker::default(),
            tracks: HashMap::new(),
            notes_tx,
            notes,
            token: String::new(),
            connection: 0,
            empty_since: None,
        }
    }

    fn timeline(&self, entry: Entry) {
        let _ = self.events.send(SourceEvent::Room { running_ns: self.clock.running_ns(), entry });
    }

    async fn run(&mut self, mut stop: watch::Receiver<bool>) -> Result<(), String> {
        let config = self.params.config.clone();
        self.token =
            recorder_token(&config.api_key, &config.api_secret, &self.params.room, &self.params.identity, Duration::from_secs(config.token_ttl_s))?;
        let mut lost_since: Option<Instant> = None;
        let mut lost_reason = String::new();
        let room_wait_until = Instant::now() + Duration::from_secs(config.wait_for_room_s);
        loop {
            if *stop.borrow() {
                break;
            }
            // The peer connection is made while signalling connects: its DTLS certificate takes a
            // moment to generate, and room updates wait for the loop it runs in.
            let (connected, peer) = tokio::join!(self.connect(), Peer::new(config.rtc_ip));
            let end = match (connected, peer) {
                (Ok((signal, join, signal_events)), Ok(peer)) => {
                    lost_since = None;
                    self.connection += 1;
                    if self.connection > 1 {
                        self.timeline(Entry::Rejoined { connection: self.connection, reason: std::mem::take(&mut lost_reason) });
                    }
                    self.run_connection(&signal, join, signal_events, peer, &mut stop).await
                }
                (Ok((signal, _, _)), Err(err)) => {
                    close_signalling(&signal).await;
                    self.finish_tracks().await;
                    return Err(format!("could not open the media socket on {}: {err}", config.rtc_ip));
                }
                (Err(err), _) => {
                    let reason = describe_connect_error(&err);
                    let room_missing = matches!(&err, SignalError::Client(status, body) if status.as_u16() == 404 && body.contains("room"));
                    if self.connection == 0 {
                        // Never joined: a refused token or a missing room is final (unless told to wait).
                        if room_missing && Instant::now() < room_wait_until {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                        return Err(format!("could not join room {:?}: {reason}", self.params.room));
                    }
                    if room_missing {
                        // Joined before, and the room is gone: the server closed it.
                        tracing::info!(%reason, "the room no longer exists");
                        ConnectionEnd::Ended(EndReason::RoomClosed)
                    } else {
                        ConnectionEnd::Reconnect(reason)
                    }
                }
            };
            match end {
                ConnectionEnd::Stop => break,
                ConnectionEnd::Ended(reason) => {
                    let _ = self.events.send(SourceEvent::Ended(reason));
                    // The session answers with a stop; wait for it.
                    let _ = stop.wait_for(|s| *s).await;
                    break;
                }
                ConnectionEnd::Reconnect(reason) => {
                    let since = *lost_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(config.reconnect_timeout_s) {
                        self.finish_tracks().await;
                        return Err(format!("lost the LiveKit connection and could not rejoin within {} s: {reason}", config.reconnect_timeout_s));
                    }
                    tracing::warn!(%reason, "LiveKit connection lost; rejoining");
                    lost_reason = reason;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        self.finish_tracks().await;
        Ok(())
    }

    async fn connect(&self) -> Result<(SignalClient, proto::JoinResponse, mpsc::UnboundedReceiver<SignalEvent>), SignalError> {
        let mut options = SignalOptions::default();
        options.auto_subscribe = true;
        options.adaptive_stream = false;
        options.region_failover = false;
        // Packet trailers would reach the segments: GStreamer does not strip them.
        options.client_capabilities.retain(|c| *c != proto::client_info::Capability::CapPacketTrailer);
        let (client, join, events) = SignalClient::connect(&self.params.config.url, &self.token, options, None).await?;
        Ok((client, join, events))
    }

    async fn run_connection(
        &mut self,
        signal: &SignalClient,
        join: proto::JoinResponse,
        mut signal_events: mpsc::UnboundedReceiver<SignalEvent>,
        mut peer: Peer,
        stop: &mut watch::Receiver<bool>,
    ) -> ConnectionEnd {
        let room_sid = join.room.as_ref().map(|r| r.sid.clone()).unwrap_or_default();
        tracing::info!(room_sid, participants = join.other_participants.len(), connection = self.connection, "joined the LiveKit room");
        // A hidden participant may hear about itself; it is not part of the room being recorded.
        let own_sid = join.participant.as_ref().map(|p| p.sid.clone()).unwrap_or_default();
        let changes = self.tracker.reset(join.other_participants.into_iter().filter(|p| p.sid != own_sid).collect());
        self.apply_changes(signal, changes).await;
        // A new peer connection restarts every track's RTP timing, and video must restart on a keyframe.
        for track in self.tracks.values_mut() {
            track.timing.restart();
            track.waiting_for_keyframe = track.video;
        }
        let mut mids: HashMap<String, String> = HashMap::new();
        let mut candidate_sent = false;
        let mut buf = vec![0u8; 2048];
        let empty_timeout = Duration::from_secs(self.params.config.empty_timeout_s);
        let mut media = MediaWatch::default();
        // Until when the media socket rests after a read (see `SOCKET_REST`).
        let mut socket_rest: Option<Instant> = None;
        let mut resume_policy = ResumePolicy::default();
        let mut resuming: Option<(Resuming<'_>, proto::ReconnectReason, String)> = None;
        // The next resume attempt, after one could not reach the server.
        let mut resume_retry: Option<(Instant, proto::ReconnectReason, String)> = None;
        // The first participant update after a resume lists everyone in the room.
        let mut full_update_due = false;
        let end = loop {
            for event in peer.drive() {
                match event {
                    PeerEvent::Connected => tracing::info!("subscriber peer connection up"),
                    PeerEvent::Media(data) => self.on_media(&mut peer, &mids, *data),
                    PeerEvent::Lost => {
                        tracing::warn!(alive = peer.is_alive(), "subscriber peer connection lost");
                        media.lost(Instant::now());
                    }
                    PeerEvent::Restored => {
                        tracing::info!("subscriber peer connection restored");
                        media.restored();
                    }
                }
            }
            self.empty_since = if self.tracker.is_empty() { self.empty_since.or(Some(Instant::now())) } else { None };
            let empty_deadline = self.empty_since.map(|since| since + empty_timeout);
            tokio::select! {
                event = signal_events.recv() => match event {
                    Some(SignalEvent::Message(message)) => match *message {
                        Response::Offer(offer) => {
                            mids = sdp::tracks_by_mid(&offer.sdp);
                            let answer = match peer.accept_offer(&offer.sdp) {
                                Ok(answer) => answer,
                                Err(reason) => break ConnectionEnd::Reconnect(reason),
                            };
                            let first_mid = answer.lines().find_map(|l| l.strip_prefix("a=mid:")).unwrap_or("0").trim().to_string();
                            signal.send(Request::Answer(proto::SessionDescription { r#type: "answer".into(), sdp: answer, id: offer.id, ..Default::default() })).await;
                            if !candidate_sent {
                                candidate_sent = true;
                                let trickle = proto::TrickleRequest { candidate_init: peer.candidate_init(&first_mid), target: proto::SignalTarget::Subscriber as i32, r#final: true };
                                signal.send(Request::Trickle(trickle)).await;
                            }
                        }
                        Response::Trickle(trickle) if trickle.target == proto::SignalTarget::Subscriber as i32 => {
                            peer.add_remote_candidate(&trickle.candidate_init);
                        }
                        Response::Update(update) => {
                            let others = update.participants.into_iter().filter(|p| p.sid != own_sid).collect();
                            let changes = if std::mem::take(&mut full_update_due) { self.tracker.reset(others) } else { self.tracker.apply(others) };
                            self.apply_changes(signal, changes).await;
                        }
                        Response::SpeakersChanged(speakers) => {
                            let participants = self.tracker.speakers_changed(&speakers.speakers);
                            self.timeline(Entry::ActiveSpeakers { participants });
                        }
                        Response::RefreshToken(token) => self.token = token,
                        Response::Leave(leave) => {
                            tracing::info!(reason = ?leave.reason(), action = ?leave.action(), "the server asked us to leave");
                            let why = format!("the server asked to {:?} ({:?})", leave.action(), leave.reason());
                            match recovery::after_leave(&leave) {
                                Recovery::End(reason) => break ConnectionEnd::Ended(reason),
                                Recovery::Rejoin(why) => break ConnectionEnd::Reconnect(why),
                                Recovery::Resume(reason) => match resume_policy.resume_or_rejoin(Instant::now(), reason, &why) {
                                    Attempt::Resume(reason) => {
                                        resuming = Some((begin_resume(signal, &mut signal_events, reason).await, reason, why));
                                    }
                                    Attempt::Rejoin(why) => break ConnectionEnd::Reconnect(why),
                                },
                            }
                        }
                        _ => {}
                    },
                    Some(SignalEvent::Close(reason)) if resuming.is_none() && resume_retry.is_none() => {
                        let why = format!("signalling closed: {reason}");
                        match resume_policy.resume_or_rejoin(Instant::now(), proto::ReconnectReason::RrSignalDisconnected, &why) {
                            Attempt::Resume(reason) => {
                                tracing::warn!(%why, "LiveKit signalling lost; resuming the session");
                                resuming = Some((begin_resume(signal, &mut signal_events, reason).await, reason, why));
                            }
                            Attempt::Rejoin(why) => break ConnectionEnd::Reconnect(why),
                        }
                    }
                    Some(SignalEvent::Close(_)) => {}
                    None => break ConnectionEnd::Reconnect("signalling ended".into()),
                },
                resumed = poll_resume(&mut resuming) => {
                    let (_, reason, why) = resuming.take().expect("polled");
                    let (refused, failure) = match resumed {
                        Ok(Ok(_)) => {
                            // Nothing waits for the ICE restart: the old media path keeps delivering meanwhile.
                            signal.set_reconnected().await;
                            tracing::info!(%why, "resumed the LiveKit session");
                            resume_policy.resumed(Instant::now());
                            self.timeline(Entry::Resumed { reason: why });
                            full_update_due = true;
                            candidate_sent = false;
                            continue;
                        }
                        // The server answered, and will not resume this session (it no longer knows it).
                        Ok(Err(err @ (SignalError::LeaveRequest { .. } | SignalError::Client(..)))) => (true, describe_connect_error(&err)),
                        Ok(Err(err)) => (false, describe_connect_error(&err)),
                        Err(_) => (false, format!("no answer within {} s", RESUME_TIMEOUT.as_secs())),
                    };
                    match resume_policy.failed(Instant::now(), refused, &format!("{why}; the resume failed: {failure}")) {
                        Retry::At(at) => {
                            tracing::debug!(%failure, "resume failed; trying again");
                            resume_retry = Some((at, reason, why));
                        }
                        Retry::Rejoin(why) => break ConnectionEnd::Reconnect(why),
                    }
                }
                _ = sleep_until_opt(resume_retry.as_ref().map(|(at, _, _)| *at)) => {
                    let (_, reason, why) = resume_retry.take().expect("scheduled");
                    resuming = Some((begin_resume(signal, &mut signal_events, reason).await, reason, why));
                }
                received = peer.socket.recv_from(&mut buf), if socket_rest.is_none() => {
                    if let Ok((n, source)) = received {
                        peer.receive(&buf[..n], source);
                        read_queued(&mut peer, &mut buf);
                        socket_rest = Some(Instant::now() + SOCKET_REST);
                    }
                }
                _ = sleep_until_opt(socket_rest) => {
                    // Read what came meanwhile; rest again if anything did, else wait for the socket.
                    socket_rest = (read_queued(&mut peer, &mut buf) > 0).then(|| Instant::now() + SOCKET_REST);
                }
                Some(packet) = peer.tcp.received.recv() => peer.receive_tcp(packet),
                _ = tokio::time::sleep_until(peer.next_timeout.into()) => peer.tick(),
                Some(note) = self.notes.recv() => self.on_writer_note(&mut peer, &mids, note),
                _ = stop.changed() => {
                    if *stop.borrow() {
                        break ConnectionEnd::Stop;
                    }
                }
                _ = sleep_until_opt(empty_deadline) => {
                    tracing::info!(timeout_s = empty_timeout.as_secs(), "the room stayed empty");
                    break ConnectionEnd::Ended(EndReason::RoomEmpty);
                }
                _ = sleep_until_opt(media.deadline()) => {
                    let why = "the media connection was lost".to_string();
                    if media.act(Instant::now(), peer.is_alive()) == MediaAction::Rejoin {
                        break ConnectionEnd::Reconnect(why);
                    }
                    if resuming.is_none() && resume_retry.is_none() {
                        match resume_policy.resume_or_rejoin(Instant::now(), proto::ReconnectReason::RrSubscriberFailed, &why) {
                            Attempt::Resume(reason) => {
                                tracing::warn!("media connection lost; resuming the session for an ICE restart");
                                resuming = Some((begin_resume(signal, &mut signal_events, reason).await, reason, why));
                            }
                            Attempt::Rejoin(why) => break ConnectionEnd::Reconnect(why),
                        }
                    }
                }
            }
        };
        // A capture that ends says so: without a `Leave`, the server keeps a ghost recorder in the room
        // (and the room's `active_recording` flag set) until its signalling times out. On a reconnect
        // the socket is only closed: the client's own task would otherwise keep the old session alive.
        if !matches!(end, ConnectionEnd::Reconnect(_)) {
            leave_room(signal).await;
        }
        close_signalling(signal).await;
        end
    }

    async fn apply_changes(&mut self, signal: &SignalClient, changes: Vec<Change>) {
        let mut new_video = Vec::new();
        for change in changes {
            match change {
                Change::Joined(p) => {
                    let joined_at_ms =
                        if p.joined_at_ms > 0 { Some(p.joined_at_ms as u64) } else { (p.joined_at > 0).then_some(p.joined_at as u64 * 1000) };
                    self.timeline(Entry::ParticipantJoined {
                        participant: participant_key(&p).to_string(),
                        identity: p.identity,
                        name: p.name,
                        joined_at_ms,
                    })
                }
                Change::Left(p) => self.timeline(Entry::ParticipantLeft { participant: participant_key(&p).to_string() }),
                Change::Published(p, t) => {
                    let video = t.r#type == proto::TrackType::Video as i32;
                    if video {
                        new_video.push(t.clone());
                    }
                    let stored = codecs::stored_codec(&t);
                    if stored.is_none() {
                        // Said on the job, not a silent gap: the SFU has nothing to send us for it.
                        let reason = format!(
                            "{}/{} is published in {} only, which the recorder does not store (VP8, VP9, H.264, Opus); it is not recorded",
                            participant_key(&p),
                            t.sid,
                            codecs::published_codecs(&t)
                        );
                        tracing::warn!(%reason);
                        let _ = self.events.send(SourceEvent::TrackLost(reason));
                    }
                    self.timeline(Entry::TrackPublished {
                        participant: participant_key(&p).to_string(),
                        track: t.sid.clone(),
                        kind: if video { "video".into() } else { "audio".into() },
                        // What will be stored: a backup codec where the primary is not storable, Opus for RED.
                        codec: stored.map_or_else(|| t.mime_type.rsplit('/').next().unwrap_or_default().to_ascii_lowercase(), |c| c.as_str().into()),
                        source: t.source().as_str_name().to_ascii_lowercase(),
                    });
                }
                Change::Unpublished(p, t) => {
                    self.timeline(Entry::TrackUnpublished { participant: participant_key(&p).to_string(), track: self.storage_id(&t.sid) });
                    if let Some(track) = self.tracks.get_mut(&t.sid) {
                        match &track.writer {
                            Some(writer) if !track.finishing => writer.finish(),
                            Some(_) => {}
                            None => track.finished = true,
                        }
                        track.finishing = true;
                    }
                }
                Change::Muted(p, t, muted) => {
                    self.timeline(Entry::TrackMuted { participant: participant_key(&p).to_string(), track: self.storage_id(&t.sid), muted });
                }
            }
        }
        // The highest simulcast layer of every video track.
        for track in new_video {
            let settings = proto::UpdateTrackSettings {
                track_sids: vec![track.sid.clone()],
                disabled: false,
                quality: proto::VideoQuality::High as i32,
                width: track.width.max(1920),
                height: track.height.max(1080),
                fps: 60,
                ..Default::default()
            };
            signal.send(Request::TrackSetting(settings)).await;
        }
    }

    fn on_media(&mut self, peer: &mut Peer, mids: &HashMap<String, String>, data: str0m::media::MediaData) {
        let Some(track_sid) = mids.get(&data.mid.to_string()).cloned() else { return };
        let spec = data.params.spec();
        let codec_name = peer::codec_name(spec.codec);
        let clock_rate = spec.clock_rate.get();
        // Every audio frame stands alone; str0m flags keyframes for video only.
        let keyframe = spec.codec == str0m::format::Codec::Opus || data.is_keyframe();
        let now_ns = self.clock.running_ns_at(data.network_time);
        let codec = TrackCodec::from_name(codec_name);
        if keyframe && codec.is_some_and(|c| blank_frames::is_blank_keyframe(c, &data.data)) {
            tracing::debug!(track = %track_sid, "the SFU's blank frame; not recorded");
            return;
        }
        if !self.tracks.contains_key(&track_sid) {
            let (participant, track) = self.track_ids(&track_sid);
            let video = codec.is_some_and(|c| c.kind() == fleet_pipelines::segment_writer::TrackKind::Video);
            let mut sink = TrackSink::new(participant, track, clock_rate, video);
            if codec.is_none() {
                tracing::warn!(track = %track_sid, codec = codec_name, "codec not recordable here; track skipped");
                sink.finishing = true;
                sink.finished = true;
            }
            self.tracks.insert(track_sid.clone(), sink);
        }
        let sink = self.tracks.get(&track_sid).expect("inserted above");
        if sink.finished || sink.finishing {
            return;
        }
        if let (Some(writing), Some(arriving)) = (sink.codec, codec)
            && writing != arriving
        {
            // The SFU switched the track's codec (a publisher regressed to its backup codec): one writer
            // stores one codec, so this one closes and a new one starts at the next keyframe.
            self.change_codec(&track_sid, arriving);
        }
        let sink = self.tracks.get(&track_sid).expect("present");
        if sink.writer.is_none() {
            let Some(codec) = codec else { return };
            if sink.video && !keyframe {
                // Video that began with a delta frame: wait for the keyframe asked for.
                let sink = self.tracks.get_mut(&track_sid).expect("present");
                request_keyframe(peer, sink, data.mid);
                return;
            }
            let started = self.start_writer(&track_sid, sink, codec, &data.data);
            let sink = self.tracks.get_mut(&track_sid).expect("present");
            match started {
                Ok(writer) => {
                    sink.writer = Some(writer);
                    sink.codec = Some(codec);
                }
                Err(reason) => {
                    tracing::warn!(track = %track_sid, %reason, "could not start the track writer; track skipped");
                    sink.finishing = true;
                    sink.finished = true;
                    return;
                }
            }
        }
        let sink = self.tracks.get_mut(&track_sid).expect("present");
        if !data.contiguous {
            sink.waiting_for_keyframe |= sink.video;
            if sink.timing.is_anchored() {
                sink.gaps += 1;
                if sink.gaps.is_power_of_two() {
                    tracing::warn!(track = %track_sid, gaps = sink.gaps, "packets missing from the track");
                }
            }
        }
        if sink.video && sink.waiting_for_keyframe {
            if keyframe {
                sink.waiting_for_keyframe = false;
            } else {
                request_keyframe(peer, sink, data.mid);
                return;
            }
        }
        let rtp = data.time.numer();
        if !sink.video && sink.timing.steps_back(rtp) {
            tracing::debug!(track = %track_sid, rtp, "audio frame at or before the last one written; dropped");
            return;
        }
        let placed = sink.timing.place(rtp, now_ns);
        if let Some(restart) = placed.restart {
            if let Restart::Jumped { by_ms } = restart {
                tracing::warn!(track = %track_sid, jump_ms = by_ms, "RTP time jumped; restarting the track's timing");
            }
            let _ = self.events.send(SourceEvent::Room {
                running_ns: placed.pts_ns,
                entry: Entry::TrackStarted {
                    participant: sink.participant.to_string(),
                    track: sink.track.to_string(),
                    rtp_time: rtp,
                    clock_rate: sink.clock_rate,
                },
            });
        }
        if let Some(writer) = &sink.writer
            && let Err(err) = writer.push(placed.pts_ns, placed.duration_ns, &data.data, keyframe)
        {
            tracing::warn!(track = %track_sid, %err, "frame not written");
        }
        // A report sent before the sender's first packet maps nothing (str0m sends RTP time 0 then).
        if let Some(report) = data.last_sender_info.filter(|r| r.sender_packet_count > 0) {
            let due = sink.last_sender_report.is_none_or(|(at, ntp)| ntp != report.ntp_time && at.elapsed() >= SENDER_REPORT_LOG_INTERVAL);
            if due {
                sink.last_sender_report = Some((Instant::now(), report.ntp_time));
                let ntp_unix_ms = report.ntp_time.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
                let _ = self.events.send(SourceEvent::Room {
                    running_ns: self.clock.running_ns(),
                    entry: Entry::SenderReport {
                        participant: sink.participant.to_string(),
                        track: sink.track.to_string(),
                        ntp_unix_ms,
                        rtp_time: report.rtp_time.numer(),
                    },
                });
            }
        }
    }

    /// Retires the track's writer (it closes its last segment) and readies a new one for `codec`, stored
    /// as a new track of the same participant: the timeline says the old one was unpublished and the new
    /// one published, so the transcode shows one after the other.
    fn change_codec(&mut self, track_sid: &str, codec: TrackCodec) {
        let source = self.tracker.track(track_sid).map(|(_, t)| t.source().as_str_name().to_ascii_lowercase()).unwrap_or_else(|| "unknown".into());
        let sink = self.tracks.get_mut(track_sid).expect("present");
        let old_track = sink.track.clone();
        if let Some(writer) = sink.writer.take() {
            writer.finish();
            sink.retired.push((old_track.clone(), writer));
        }
        sink.generation += 1;
        let base: String = track_sid.chars().take(fleet_protocol::ids::MAX_ID_LEN - 8).collect();
        sink.track = SafeId::parse(format!("{base}-{}", sink.generation)).unwrap_or_else(|_| sanitize(&format!("{base}-{}", sink.generation)));
        sink.codec = None;
        sink.timing.restart();
        sink.waiting_for_keyframe = sink.video;
        tracing::warn!(track = %track_sid, from = ?old_track, to = %sink.track, codec = codec.as_str(), "the track's codec changed; a new writer takes over");
        let (participant, new_track, kind) = (sink.participant.to_string(), sink.track.to_string(), if sink.video { "video" } else { "audio" });
        self.timeline(Entry::TrackUnpublished { participant: participant.clone(), track: old_track.to_string() });
        self.timeline(Entry::TrackPublished { participant, track: new_track, kind: kind.into(), codec: codec.as_str().into(), source });
    }

    /// The track's id in storage and the timeline: its sid until its codec changes.
    fn storage_id(&self, track_sid: &str) -> String {
        self.tracks.get(track_sid).map_or_else(|| track_sid.to_string(), |t| t.track.to_string())
    }

    /// Storage ids of a track: its publisher's identity (when it is a safe id) and the track sid.
    fn track_ids(&self, track_sid: &str) -> (SafeId, SafeId) {
        let participant = match self.tracker.track(track_sid) {
            Some((p, _)) => participant_key(p),
            None => SafeId::parse("unknown").expect("safe"),
        };
        let track = SafeId::parse(track_sid).unwrap_or_else(|_| sanitize(track_sid));
        (participant, track)
    }

    fn start_writer(&self, track_sid: &str, sink: &TrackSink, codec: TrackCodec, first_frame: &[u8]) -> Result<TrackWriter, String> {
        let params = &self.params;
        let dir = params.media_dir.join(sink.participant.as_str()).join(sink.track.as_str());
        let notes = self.notes_tx.clone();
        let events = self.events.clone();
        let (participant, track, sid) = (sink.participant.clone(), sink.track.clone(), track_sid.to_string());
        tracing::info!(track = %track_sid, participant = %participant, storage = %track, codec = codec.as_str(), "recording track");
        let key = move || WriterKey { sid: sid.clone(), storage: track.clone() };
        let storage = sink.track.clone();
        TrackWriter::start(&dir, params.segment_ns, codec, first_frame, move |event| match event {
            TrackWriterEvent::Fragment(fragment) => {
                let _ = events.send(SourceEvent::Fragment { participant: participant.clone(), track: storage.clone(), fragment });
            }
            TrackWriterEvent::KeyframeWanted => {
                let _ = notes.send(WriterNote::KeyframeWanted(key()));
            }
            TrackWriterEvent::Finished => {
                let _ = notes.send(WriterNote::Finished(key()));
            }
            TrackWriterEvent::Failed(err) => {
                let _ = notes.send(WriterNote::Failed(key(), err));
            }
        })
        .map_err(|e| e.to_string())
    }

    fn on_writer_note(&mut self, peer: &mut Peer, mids: &HashMap<String, String>, note: WriterNote) {
        match note {
            WriterNote::KeyframeWanted(key) => {
                let mid = mids.iter().find(|(_, t)| **t == key.sid).map(|(m, _)| str0m::media::Mid::from(m.as_str()));
                if let (Some(mid), Some(sink)) = (mid, self.tracks.get_mut(&key.sid))
                    && sink.track == key.storage
                {
                    request_keyframe(peer, sink, mid);
                }
            }
            WriterNote::Finished(key) => self.writer_done(&key),
            WriterNote::Failed(key, err) => {
                let sid = key.sid.clone();
                tracing::error!(track = %sid, storage = %key.storage, %err, "track writer failed; the track's earlier segments are kept");
                // Never a silent gap: a full disk moves the recording to another recorder, any other
                // failure is said on the job.
                let event = match err {
                    fleet_pipelines::PipelineError::DiskFull { .. } => SourceEvent::SpoolFull(err.to_string()),
                    _ => SourceEvent::TrackLost(format!("track {sid} is no longer recorded: {err}")),
                };
                let _ = self.events.send(event);
                self.writer_done(&key);
            }
        }
    }

    fn writer_done(&mut self, key: &WriterKey) {
        let Some(track) = self.tracks.get_mut(&key.sid) else { return };
        // Dropping a writer sets its pipeline to NULL; done here, off the bus thread that told us.
        if track.track == key.storage {
            track.finished = true;
            track.writer = None;
        } else {
            track.retired.retain(|(storage, _)| *storage != key.storage);
        }
    }

    /// Ends every track and waits until each writer has closed its last segment.
    async fn finish_tracks(&mut self) {
        for track in self.tracks.values_mut() {
            match &track.writer {
                Some(writer) if !track.finished && !track.finishing => writer.finish(),
                Some(_) if !track.finished => {}
                _ => track.finished = true,
            }
            track.finishing = true;
        }
        let deadline = tokio::time::Instant::now() + FINISH_TIMEOUT;
        while self.tracks.values().any(|t| !t.finished || !t.retired.is_empty()) {
            let Ok(note) = tokio::time::timeout_at(deadline, self.notes.recv()).await else {
                let stuck: Vec<&String> = self.tracks.iter().filter(|(_, t)| !t.finished || !t.retired.is_empty()).map(|(sid, _)| sid).collect();
                tracing::error!(?stuck, "track writers did not finish in time; their last segments stay in the spool");
                break;
            };
            match note {
                Some(WriterNote::Finished(key)) => self.writer_done(&key),
                Some(WriterNote::Failed(key, reason)) => {
                    tracing::error!(track = %key.sid, storage = %key.storage, %reason, "track writer failed while finishing");
                    self.writer_done(&key);
                }
                Some(WriterNote::KeyframeWanted(_)) => {}
                None => break,
            }
        }
    }
}

async fn leave_room(signal: &SignalClient) {
    let leave = proto::LeaveRequest {
        can_reconnect: false,
        reason: proto::DisconnectReason::ClientInitiated as i32,
        action: proto::leave_request::Action::Disconnect as i32,
        ..Default::default()
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), signal.send(Request::Leave(leave))).await;
}

async fn close_signalling(signal: &SignalClient) {
    let _ = tokio::time::timeout(Duration::from_secs(2), signal.close()).await;
}

fn request_keyframe(peer: &mut Peer, sink: &mut TrackSink, mid: str0m::media::Mid) {
    if sink.last_keyframe_request.is_some_and(|at| at.elapsed() < KEYFRAME_REQUEST_INTERVAL) {
        return;
    }
    sink.last_keyframe_request = Some(Instant::now());
    peer.request_keyframe(mid);
}

/// Reads the datagrams queued on the media socket (up to `MAX_DATAGRAMS_PER_WAKE`); returns how many.
fn read_queued(peer: &mut Peer, buf: &mut [u8]) -> usize {
    let mut read = 0;
    while read < MAX_DATAGRAMS_PER_WAKE {
        let Ok((n, source)) = peer.socket.try_recv_from(buf) else { break };
        peer.receive(&buf[..n], source);
        read += 1;
    }
    read
}

/// Starts resuming the session on a new signalling connection. The old connection is closed first and
/// what it still had queued is forgotten, so that its closing is not taken for a drop of the new one.
async fn begin_resume<'a>(
    signal: &'a SignalClient,
    events: &mut mpsc::UnboundedReceiver<SignalEvent>,
    reason: proto::ReconnectReason,
) -> Resuming<'a> {
    close_signalling(signal).await;
    while events.try_recv().is_ok() {}
    Box::pin(tokio::time::timeout(RESUME_TIMEOUT, signal.restart(reason)))
}

/// The resume in flight, if any; pending forever when there is none.
async fn poll_resume(
    resuming: &mut Option<(Resuming<'_>, proto::ReconnectReason, String)>,
) -> Result<Result<proto::ReconnectResponse, SignalError>, tokio::time::error::Elapsed> {
    match resuming {
        Some((future, _, _)) => future.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The participant's storage id: its identity when that is a safe id, else a sanitized form.
fn participant_key(info: &proto::ParticipantInfo) -> SafeId {
    SafeId::parse(&info.identity).unwrap_or_else(|_| sanitize(&format!("{}-{}", info.identity, info.sid)))
}

fn sanitize(raw: &str) -> SafeId {
    let cleaned: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(64)
        .collect();
    SafeId::parse(cleaned).unwrap_or_else(|_| SafeId::parse("participant").expect("safe"))
}

fn describe_connect_error(err: &SignalError) -> String {
    let text = match err {
        SignalError::Client(status, body) | SignalError::Server(status, body) => format!("the server answered {} {}", status.as_u16(), body.trim()),
        other => other.to_string(),
    };
    // livekit-server's 401 answers quote the token they refused: it must not reach logs or the job.
    redact_tokens(&text)
}

/// Replaces every JWT (`eyJ…` header, three base64url parts) in `text` with `<token>`.
fn redact_tokens(text: &str) -> String {
    let is_jwt_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("eyJ") {
        out.push_str(&rest[..at]);
        let candidate = &rest[at..];
        let len = candidate.find(|c: char| !is_jwt_char(c)).unwrap_or(candidate.len());
        if candidate[..len].split('.').filter(|part| !part.is_empty()).count() >= 3 {
            out.push_str("<token>");
        } else {
            out.push_str(&candidate[..len]);
        }
        rest = &candidate[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact_tokens;

    #[test]
    fn tokens_in_server_answers_are_redacted() {
        let answer = "the server answered 401 invalid token: eyJ0eXAiOiJKV1Qi.eyJleHAiOjE3OTY0.c2lnbmF0dXJl, error: signature is invalid";
        assert_eq!(redact_tokens(answer), "the server answered 401 invalid token: <token>, error: signature is invalid");
        assert_eq!(redact_tokens("no eyJ here"), "no eyJ here");
        assert_eq!(redact_tokens("404 requested room does not exist"), "404 requested room does not exist");
    }
}
