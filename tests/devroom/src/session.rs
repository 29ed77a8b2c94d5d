//! One client's connection, as LiveKit's server runs it for a v0 (`/rtc`) client: the join response,
//! token refreshes, pings, participant updates, and the subscriber peer connection that the server
//! offers (str0m, sans-IO, driven from this task's socket and timers).

use crate::auth::Grant;
use crate::room::{OutFrame, Room, RoomEvent, new_sid, now_ms};
use axum::extract::ws::{Message, WebSocket};
use fleet_pipelines::clip::ClipCodec;
use futures::{SinkExt, StreamExt};
use livekit_protocol as proto;
use livekit_protocol::signal_request::Message as Request;
use livekit_protocol::signal_response::Message as Response;
use prost::Message as _;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, Reliability};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc};

pub const PROTOCOL_VERSION: i32 = 17;
pub const SERVER_VERSION: &str = "1.13.0";
const REFRESH_TOKEN_EVERY: Duration = Duration::from_secs(5 * 60);
const WS_PING_EVERY: Duration = Duration::from_secs(10);
/// Renegotiations are debounced, as LiveKit's server does.
const NEGOTIATION_DEBOUNCE: Duration = Duration::from_millis(150);

pub struct ClientParams {
    pub grant: Grant,
    pub room: Arc<Room>,
    pub auto_subscribe: bool,
    pub rtc_ip: IpAddr,
    pub api_key: String,
    pub api_secret: String,
}

pub async fn run(socket: WebSocket, params: ClientParams) {
    let participant_sid = new_sid("PA_");
    let span = tracing::info_span!("client", room = %params.room.name, identity = %params.grant.identity, sid = %participant_sid);
    let _ = tracing::Instrument::instrument(run_inner(socket, params, participant_sid), span).await;
}

async fn run_inner(socket: WebSocket, params: ClientParams, participant_sid: String) -> anyhow::Result<()> {
    let (mut ws_tx, mut ws_rx) = socket.split();
    let room = params.room.clone();
    let grant = &params.grant;
    let own = proto::ParticipantInfo {
        sid: participant_sid.clone(),
        identity: grant.identity.clone(),
        name: grant.name.clone(),
        state: proto::participant_info::State::Joined as i32,
        joined_at: now_ms() / 1000,
        joined_at_ms: now_ms(),
        version: 1,
        permission: Some(proto::ParticipantPermission {
            can_subscribe: grant.can_subscribe,
            can_publish: grant.claims.video.can_publish(),
            can_publish_data: grant.claims.video.can_publish_data(),
            hidden: grant.hidden,
            ..Default::default()
        }),
        kind: proto::participant_info::Kind::Standard as i32,
        ..Default::default()
    };
    let mut room_events = room.events();
    let others: Vec<_> = room.participants();
    // Tracks are offered only once their publisher was announced to this client (LiveKit clients drop
    // tracks of participants they do not know yet).
    let mut announced: HashSet<String> = others.iter().map(|p| p.sid.clone()).collect();
    if !grant.hidden {
        room.upsert(own.clone());
    }
    let join = proto::JoinResponse {
        room: Some(room.info()),
        participant: Some(own.clone()),
        other_participants: others,
        server_version: SERVER_VERSION.into(),
        server_info: Some(proto::ServerInfo {
            edition: proto::server_info::Edition::Standard as i32,
            version: SERVER_VERSION.into(),
            protocol: PROTOCOL_VERSION,
            node_id: "ND_devroom".into(),
            ..Default::default()
        }),
        subscriber_primary: true,
        sif_trailer: room.sif_trailer.clone(),
        fast_publish: false,
        ping_interval: 5,
        ping_timeout: 15,
        enabled_publish_codecs: ["video/VP8", "video/H264", "audio/opus"]
            .iter()
            .map(|m| proto::Codec { mime: m.to_string(), fmtp_line: String::new() })
            .collect(),
        ..Default::default()
    };
    ws_tx.send(frame(Response::Join(join))).await?;
    tracing::info!("join response sent");
    ws_tx.send(frame(Response::RefreshToken(refresh_token(&params)?))).await?;

    let (frames_tx, mut frames) = mpsc::channel::<OutFrame>(512);
    let subscriber_id = room.add_subscriber(frames_tx);
    let mut peer = Peer::new(params.rtc_ip, room.clone(), participant_sid.clone()).await?;
    let mut subscribed = params.auto_subscribe && grant.can_subscribe;
    let mut unsubscribed: HashSet<String> = HashSet::new();
    peer.want(wanted_tracks(&room, &announced, subscribed, &unsubscribed));
    peer.negotiate_now();

    let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + REFRESH_TOKEN_EVERY, REFRESH_TOKEN_EVERY);
    let mut ws_ping = tokio::time::interval_at(tokio::time::Instant::now() + WS_PING_EVERY, WS_PING_EVERY);
    let mut buf = vec![0u8; 2048];
    let result: anyhow::Result<()> = loop {
        for out in peer.drive() {
            ws_tx.send(frame(out)).await?;
        }
        if !peer.rtc.is_alive() {
            tracing::info!("peer connection closed");
            break Ok(());
        }
        let timeout = peer.next_timeout;
        let negotiate_at = peer.negotiate_at;
        tokio::select! {
            message = ws_rx.next() => {
                let Some(Ok(message)) = message else { break Ok(()) };
                let bytes = match message {
                    Message::Binary(bytes) => bytes,
                    Message::Close(_) => break Ok(()),
                    // Text frames are not part of the protocol; pings are answered by axum.
                    _ => continue,
                };
                let request = match proto::SignalRequest::decode(bytes.as_ref()) {
                    Ok(proto::SignalRequest { message: Some(m) }) => m,
                    Ok(_) => continue,
                    Err(err) => {
                        tracing::warn!(%err, "undecodable signal request");
                        continue;
                    }
                };
                match request {
                    Request::Answer(answer) => peer.accept_answer(&answer.sdp)?,
                    Request::Trickle(trickle)
                        if trickle.target == proto::SignalTarget::Subscriber as i32 => {
                            peer.add_remote_candidate(&trickle.candidate_init);
                        }
                    Request::Subscription(update) => {
                        for sid in &update.track_sids {
                            if update.subscribe { unsubscribed.remove(sid); } else { unsubscribed.insert(sid.clone()); }
                        }
                        for pt in &update.participant_tracks {
                            for sid in &pt.track_sids {
                                if update.subscribe { unsubscribed.remove(sid); } else { unsubscribed.insert(sid.clone()); }
                            }
                        }
                        subscribed = subscribed || update.subscribe;
                        peer.want(wanted_tracks(&room, &announced, subscribed, &unsubscribed));
                    }
                    Request::Ping(ts) => ws_tx.send(frame(Response::Pong(ts))).await?,
                    Request::PingReq(ping) => {
                        let pong = proto::Pong { last_ping_timestamp: ping.timestamp, timestamp: now_ms() };
                        ws_tx.send(frame(Response::PongResp(pong))).await?;
                    }
                    Request::Leave(_) => {
                        tracing::info!("client left");
                        break Ok(());
                    }
                    Request::Offer(_) | Request::AddTrack(_) => {
                        tracing::warn!("publishing is not supported by devroom; ignoring the request");
                    }
                    _ => {}
                }
            }
            event = room_events.recv() => match event {
                Ok(RoomEvent::Participant(info)) => {
                    if info.sid != participant_sid {
                        if info.state == proto::participant_info::State::Disconnected as i32 {
                            announced.remove(&info.sid);
                        } else {
                            announced.insert(info.sid.clone());
                        }
                        let update = proto::ParticipantUpdate { participants: vec![*info] };
                        ws_tx.send(frame(Response::Update(update))).await?;
                        // The update goes out before the offer that carries its tracks.
                        peer.want(wanted_tracks(&room, &announced, subscribed, &unsubscribed));
                    }
                }
                Ok(RoomEvent::Speakers(speakers)) => {
                    ws_tx.send(frame(Response::SpeakersChanged(proto::SpeakersChanged { speakers }))).await?;
                }
                Ok(RoomEvent::DropSignalling) => {
                    tracing::info!("dropping the signalling connection (test)");
                    break Ok(());
                }
                Ok(RoomEvent::Closed) => {
                    let leave = proto::LeaveRequest {
                        can_reconnect: false,
                        reason: proto::DisconnectReason::RoomDeleted as i32,
                        action: proto::leave_request::Action::Disconnect as i32,
                        regions: None,
                    };
                    ws_tx.send(frame(Response::Leave(leave))).await?;
                    let _ = ws_tx.send(Message::Close(None)).await;
                    break Ok(());
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Resend the full picture rather than miss a change; who left meanwhile is told so, as
                    // clients never infer a departure from absence.
                    let mut participants: Vec<_> = room.participants().into_iter().filter(|p| p.sid != participant_sid).collect();
                    let present: HashSet<String> = participants.iter().map(|p| p.sid.clone()).collect();
                    for gone in announced.difference(&present) {
                        participants.push(proto::ParticipantInfo {
                            sid: gone.clone(),
                            state: proto::participant_info::State::Disconnected as i32,
                            version: u32::MAX,
                            ..Default::default()
                        });
                    }
                    let update = proto::ParticipantUpdate { participants };
                    announced = present;
                    ws_tx.send(frame(Response::Update(update))).await?;
                    peer.want(wanted_tracks(&room, &announced, subscribed, &unsubscribed));
                }
                Err(broadcast::error::RecvError::Closed) => break Ok(()),
            },
            Some(out) = frames.recv() => peer.write_frame(&out),
            received = peer.socket.recv_from(&mut buf) => {
                if let Ok((n, source)) = received {
                    peer.receive(&buf[..n], source);
                }
            }
            _ = tokio::time::sleep_until(timeout.into()) => peer.tick(),
            _ = sleep_until_opt(negotiate_at) => peer.negotiate_now(),
            _ = refresh.tick() => ws_tx.send(frame(Response::RefreshToken(refresh_token(&params)?))).await?,
            _ = ws_ping.tick() => ws_tx.send(Message::Ping(Vec::new().into())).await?,
        }
    };
    room.remove_subscriber(subscriber_id);
    if !grant.hidden {
        room.remove(&participant_sid, proto::DisconnectReason::ClientInitiated);
    }
    result
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn frame(message: Response) -> Message {
    Message::Binary(proto::SignalResponse { message: Some(message) }.encode_to_vec().into())
}

fn refresh_token(params: &ClientParams) -> anyhow::Result<String> {
    let claims = &params.grant.claims;
    let token = livekit_api::access_token::AccessToken::with_api_key(&params.api_key, &params.api_secret)
        .with_identity(&claims.sub)
        .with_name(&claims.name)
        .with_grants(claims.video.clone())
        .with_ttl(Duration::from_secs(10 * 60))
        .to_jwt()?;
    Ok(token)
}

/// A track this client should receive: (publisher sid, track).
#[derive(Debug, Clone)]
struct WantedTrack {
    publisher: String,
    info: proto::TrackInfo,
}

fn wanted_tracks(room: &Room, announced: &HashSet<String>, subscribed: bool, unsubscribed: &HashSet<String>) -> BTreeMap<String, WantedTrack> {
    if !subscribed {
        return BTreeMap::new();
    }
    room.participants()
        .into_iter()
        .filter(|p| announced.contains(&p.sid))
        .flat_map(|p| {
            let publisher = p.sid.clone();
            p.tracks.into_iter().map(move |t| (t.sid.clone(), WantedTrack { publisher: publisher.clone(), info: t }))
        })
        .filter(|(sid, _)| !unsubscribed.contains(sid))
        .collect()
}

/// The subscriber peer connection, offered by us.
struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    room: Arc<Room>,
    #[allow(dead_code)]
    participant_sid: String,
    /// Track sid → its m-line while it is being sent.
    /// Each track's m-line, and the payload type of each codec it has sent in.
    mids: HashMap<String, (Mid, HashMap<ClipCodec, Option<Pt>>)>,
    wanted: BTreeMap<String, WantedTrack>,
    pending: Option<SdpPendingOffer>,
    negotiate_at: Option<Instant>,
    channels_added: bool,
    candidate_sent: bool,
    offer_id: u32,
    next_timeout: Instant,
    connected: bool,
    outbox: Vec<Response>,
}

impl Peer {
    async fn new(ip: IpAddr, room: Arc<Room>, participant_sid: String) -> anyhow::Result<Peer> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let local = socket.local_addr()?;
        // Codecs and payload types as LiveKit's SFU offers them.
        let mut config = RtcConfig::new().clear_codecs().enable_opus(true, false).enable_vp8(true);
        config.codec_config().add_h264(108.into(), Some(109.into()), true, 0x42e01f);
        let mut rtc = config.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        Ok(Peer {
            rtc,
            socket,
            local,
            room,
            participant_sid,
            mids: HashMap::new(),
            wanted: BTreeMap::new(),
            pending: None,
            negotiate_at: None,
            channels_added: false,
            candidate_sent: false,
            offer_id: 0,
            next_timeout: Instant::now(),
            connected: false,
            outbox: Vec::new(),
        })
    }

    fn want(&mut self, wanted: BTreeMap<String, WantedTrack>) {
        let same = wanted.len() == self.wanted.len() && wanted.keys().all(|k| self.wanted.contains_key(k));
        self.wanted = wanted;
        if !same && self.negotiate_at.is_none() {
            self.negotiate_at = Some(Instant::now() + NEGOTIATION_DEBOUNCE);
        }
    }

    /// Makes an offer for the tracks that changed, unless one is still unanswered (then the answer
    /// triggers the next).
    fn negotiate_now(&mut self) {
        self.negotiate_at = None;
        if self.pending.is_some() {
            return;
        }
        let mut api = self.rtc.sdp_api();
        if !self.channels_added {
            api.add_channel("_reliable".into());
            api.add_channel_with_config(ChannelConfig {
                label: "_lossy".into(),
                ordered: false,
                reliability: Reliability::MaxRetransmits { retransmits: 0 },
                negotiated: None,
                protocol: String::new(),
            });
            self.channels_added = true;
        }
        for (sid, track) in &self.wanted {
            if self.mids.contains_key(sid) {
                continue;
            }
            let kind = if track.info.r#type == proto::TrackType::Audio as i32 { MediaKind::Audio } else { MediaKind::Video };
            let stream = format!("{}|{}", track.publisher, sid);
            let mid = api.add_media(kind, Direction::SendOnly, Some(stream), Some(sid.clone()), None);
            self.mids.insert(sid.clone(), (mid, HashMap::new()));
        }
        let gone: Vec<String> = self.mids.keys().filter(|sid| !self.wanted.contains_key(*sid)).cloned().collect();
        for sid in gone {
            if let Some((mid, _)) = self.mids.remove(&sid) {
                api.set_direction(mid, Direction::Inactive);
            }
        }
        let Some((offer, pending)) = api.apply() else { return };
        self.pending = Some(pending);
        self.offer_id += 1;
        let sdp = offer.to_sdp_string();
        let mid_to_track_id = self.mids.iter().map(|(sid, (mid, _))| (mid.to_string(), sid.clone())).collect();
        self.outbox.push(Response::Offer(proto::SessionDescription { r#type: "offer".into(), sdp: sdp.clone(), id: self.offer_id, mid_to_track_id }));
        if !self.candidate_sent {
            self.candidate_sent = true;
            let first_mid = sdp.lines().find_map(|l| l.strip_prefix("a=mid:")).unwrap_or("0").trim().to_string();
            let candidate = Candidate::host(self.local, "udp").expect("a host candidate");
            let init = serde_json::json!({ "candidate": candidate.to_sdp_string(), "sdpMid": first_mid, "sdpMLineIndex": 0 });
            self.outbox.push(Response::Trickle(proto::TrickleRequest {
                candidate_init: init.to_string(),
                target: proto::SignalTarget::Subscriber as i32,
                r#final: true,
            }));
        }
    }

    fn accept_answer(&mut self, sdp: &str) -> anyhow::Result<()> {
        let Some(pending) = self.pending.take() else {
            tracing::warn!("answer without an outstanding offer; ignored");
            return Ok(());
        };
        let answer = SdpAnswer::from_sdp_string(sdp)?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        // Changes that arrived while the offer was out.
        let sent: HashSet<&String> = self.mids.keys().collect();
        let wanted: HashSet<&String> = self.wanted.keys().collect();
        if sent != wanted && self.negotiate_at.is_none() {
            self.negotiate_at = Some(Instant::now() + NEGOTIATION_DEBOUNCE);
        }
        Ok(())
    }

    fn add_remote_candidate(&mut self, init: &str) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(init) else {
            tracing::warn!(init, "bad trickle candidate JSON");
            return;
        };
        let Some(candidate) = value.get("candidate").and_then(|c| c.as_str()).filter(|c| !c.is_empty()) else { return };
        match Candidate::from_sdp_string(candidate) {
            Ok(candidate) => self.rtc.add_remote_candidate(candidate),
            Err(err) => tracing::debug!(%err, candidate, "remote candidate not usable"),
        }
    }

    fn write_frame(&mut self, frame: &OutFrame) {
        if !self.connected {
            return;
        }
        let Some((mid, pts)) = self.mids.get_mut(frame.track_sid.as_ref()) else { return };
        let mid = *mid;
        let Some(writer) = self.rtc.writer(mid) else { return };
        let want = match frame.codec {
            ClipCodec::Vp8 => Codec::Vp8,
            ClipCodec::H264 => Codec::H264,
            ClipCodec::Opus => Codec::Opus,
        };
        // The first negotiated payload type of the frame's codec (packetization mode 1 for H.264).
        let pt = pts.entry(frame.codec).or_insert_with(|| {
            writer
                .payload_params()
                .find(|p| p.spec().codec == want && (want != Codec::H264 || p.spec().format.packetization_mode == Some(1)))
                .map(|p| p.pt())
        });
        let Some(pt) = *pt else { return };
        let frequency =
            if matches!(self.rtc.media(mid).map(|m| m.kind()), Some(MediaKind::Audio)) { Frequency::FORTY_EIGHT_KHZ } else { Frequency::NINETY_KHZ };
        let Some(writer) = self.rtc.writer(mid) else { return };
        if let Err(err) = writer.write(pt, frame.captured_at, MediaTime::new(frame.rtp_time, frequency), frame.data.clone()) {
            tracing::debug!(%err, "frame not written");
        }
    }

    fn receive(&mut self, datagram: &[u8], source: SocketAddr) {
        let Ok(contents) = datagram.try_into() else { return };
        let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: self.local, contents });
        if self.rtc.accepts(&input)
            && let Err(err) = self.rtc.handle_input(input)
        {
            tracing::warn!(%err, "peer connection input failed");
            self.rtc.disconnect();
        }
    }

    fn tick(&mut self) {
        if let Err(err) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
            tracing::warn!(%err, "peer connection timer failed");
            self.rtc.disconnect();
        }
    }

    /// Runs str0m until it wants to wait: sends datagrams (dropping some when the room simulates loss),
    /// notes events, and returns the signalling messages to send.
    fn drive(&mut self) -> Vec<Response> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.next_timeout = at;
                    break;
                }
                Ok(Output::Transmit(transmit)) => {
                    if self.room.loss > 0.0 && is_rtp(&transmit.contents) && rand::random::<f64>() < self.room.loss {
                        continue;
                    }
                    let _ = self.socket.try_send_to(&transmit.contents, transmit.destination);
                }
                Ok(Output::Event(event)) => match event {
                    Event::IceConnectionStateChange(state) => {
                        tracing::debug!(?state, "ICE state");
                        if state == IceConnectionState::Disconnected {
                            self.rtc.disconnect();
                        }
                    }
                    Event::Connected => {
                        tracing::info!("subscriber peer connection up");
                        self.connected = true;
                    }
                    _ => {}
                },
                Err(err) => {
                    tracing::warn!(%err, "peer connection failed");
                    self.rtc.disconnect();
                    self.next_timeout = Instant::now() + Duration::from_millis(100);
                    break;
                }
            }
        }
        std::mem::take(&mut self.outbox)
    }
}

/// RTP, not RTCP: version 2, and a second byte outside RTCP's packet types 192..=223.
fn is_rtp(datagram: &[u8]) -> bool {
    datagram.len() > 12 && datagram[0] >> 6 == 2 && !(192..=223).contains(&datagram[1])
}

/// A resume attempt for a participant this server no longer knows: `Leave{STATE_MISMATCH, RECONNECT}`,
/// after which LiveKit clients join afresh.
pub async fn refuse_resume(mut socket: WebSocket) {
    let leave = proto::LeaveRequest {
        can_reconnect: true,
        reason: proto::DisconnectReason::StateMismatch as i32,
        action: proto::leave_request::Action::Reconnect as i32,
        regions: None,
    };
    let _ = socket.send(frame(Response::Leave(leave))).await;
    let _ = socket.send(Message::Close(None)).await;
}
