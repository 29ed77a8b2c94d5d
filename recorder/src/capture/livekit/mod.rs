//! The `livekit` capture source: join the room as a hidden, subscribe-only participant (signalling
//! through `livekit-signaling`), receive every track on a str0m peer connection, and write each track's
//! encoded frames to its own Matroska segments. No decoding, no browser.

mod blank_frames;
mod codecs;
mod error;
mod ice_tcp;
mod live_sync;
mod peer;
mod recovery;
mod redact;
mod room;
mod sdp;
mod token;
mod track_timing;
mod tracks;

use crate::capture::events::{SourceEvent, SourceEvents};
use crate::config::LivekitConfig;
use crate::timeline::Entry;
use error::CaptureError;
use fleet_protocol::job::EndReason;
use livekit_protocol as proto;
use livekit_protocol::signal_request::Message as Request;
use livekit_protocol::signal_response::Message as Response;
use livekit_signaling::{SignalClient, SignalError, SignalEvent, SignalOptions};
use peer::{Peer, PeerEvent};
use recovery::{Attempt, MediaAction, MediaWatch, Recovery, ResumePolicy, Retry};
use redact::describe_connect_error;
use room::{Change, RoomTracker};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tracks::{Tracks, participant_key};

pub use token::recorder_token;

/// Datagrams read in one go; a bound keeps signalling and timers served.
const MAX_DATAGRAMS_PER_WAKE: usize = 256;
/// After reading, the socket rests this long before it is read again (the kernel buffer holds what
/// arrives meanwhile): a room's ~800 packets a second then wake the loop 200 times, not 800, which is
/// most of what the capture costs (thread wake-ups, not decryption). Arrival times are read this late.
const SOCKET_REST: Duration = Duration::from_millis(5);
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
    /// A streaming job's live composite, fed every frame as it arrives (its time 0 is the session's).
    pub live: Option<std::sync::Arc<fleet_pipelines::live::LiveComposite>>,
    /// The node's metrics: what arrives and what is written, per track kind.
    pub metrics: std::sync::Arc<crate::metrics::RecorderMetrics>,
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
                Err(reason) => SourceEvent::Failed(reason.to_string()),
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

struct RoomCapture {
    params: LivekitParams,
    clock: SessionClock,
    events: SourceEvents,
    tracker: RoomTracker,
    tracks: Tracks,
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
        let tracks = Tracks::new(params.media_dir.clone(), params.segment_ns, clock, events.clone(), params.live.clone(), params.metrics.clone());
        RoomCapture { params, clock, events, tracker: RoomTracker::default(), tracks, token: String::new(), connection: 0, empty_since: None }
    }

    fn timeline(&self, entry: Entry) {
        let _ = self.events.send(SourceEvent::Room { running_ns: self.clock.running_ns(), entry });
    }

    async fn run(&mut self, mut stop: watch::Receiver<bool>) -> Result<(), CaptureError> {
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
                    self.tracks.finish_all().await;
                    return Err(CaptureError::MediaSocket { ip: config.rtc_ip, source: err });
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
                        return Err(CaptureError::Join { room: self.params.room.clone(), reason });
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
                        self.tracks.finish_all().await;
                        return Err(CaptureError::Rejoin { seconds: config.reconnect_timeout_s, reason });
                    }
                    tracing::warn!(%reason, "LiveKit connection lost; rejoining");
                    lost_reason = reason;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        self.tracks.finish_all().await;
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
        if !join.sif_trailer.is_empty() {
            // What the SFU appends to the frames it injects into encrypted tracks: the transcoder drops those.
            self.timeline(Entry::E2eeTrailer { trailer: fleet_protocol::timeline::encode_trailer(&join.sif_trailer) });
        }
        let changes = self.tracker.reset(join.other_participants.into_iter().filter(|p| p.sid != own_sid).collect());
        self.apply_changes(signal, changes).await;
        self.tracks.new_connection();
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
                    PeerEvent::Media(data) => self.tracks.on_media(&mut peer, &mids, *data, &self.tracker),
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
                                Err(refused) => break ConnectionEnd::Reconnect(refused.to_string()),
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
                            if let Some(live) = self.tracks.live() {
                                live.set_speaker(participants.first().map(String::as_str));
                            }
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
                Some(note) = self.tracks.notes.recv() => self.tracks.on_writer_note(&mut peer, &mids, note),
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
                        encryption: codecs::encryption_name(&t).map(String::from),
                    });
                }
                Change::Unpublished(p, t) => {
                    self.timeline(Entry::TrackUnpublished { participant: participant_key(&p).to_string(), track: self.tracks.storage_id(&t.sid) });
                    self.tracks.unpublished(&t.sid);
                }
                Change::Muted(p, t, muted) => {
                    if let Some(live) = self.tracks.live() {
                        live.set_track_muted(&t.sid, muted);
                    }
                    self.timeline(Entry::TrackMuted { participant: participant_key(&p).to_string(), track: self.tracks.storage_id(&t.sid), muted });
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
