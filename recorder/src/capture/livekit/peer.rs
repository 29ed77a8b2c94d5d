//! The subscriber peer connection (str0m, sans-IO): LiveKit offers, we answer. This wrapper owns the
//! UDP socket and turns str0m's output into datagrams and `PeerEvent`s; the capture loop drives it.

use super::error::OfferError;
use super::ice_tcp::{TcpLinks, TcpPacket};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaData, Mid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;

pub enum PeerEvent {
    Connected,
    Media(Box<MediaData>),
    /// ICE has had no path for a while (4 s once connected, 10 s for a new connection), or the connection
    /// ended ([`Peer::is_alive`] says which).
    Lost,
    /// ICE found a path again after [`PeerEvent::Lost`] (e.g. after the ICE restart a resume brings).
    Restored,
}

pub struct Peer {
    rtc: Rtc,
    pub socket: UdpSocket,
    local: SocketAddr,
    /// ICE over TCP, for a server that is reachable (or offers itself) only over TCP.
    pub tcp: TcpLinks,
    /// Our active TCP candidate's address (port 9: an active side has no port to offer, RFC 6544).
    local_tcp: SocketAddr,
    /// Whether the TCP candidate has been added: only once ICE found no path over UDP for a while, so a
    /// TCP pair never wins a race against a working UDP one (a switch drops packets in flight).
    tcp_enabled: bool,
    /// Since when ICE has had no working path (from the first offer, or since it lost the path).
    pathless_since: Option<Instant>,
    ever_connected: bool,
    pub next_timeout: Instant,
    events: Vec<PeerEvent>,
    /// ICE has no path now.
    lost: bool,
    /// The connection ended for good (DTLS closed, a fatal error): only a rejoin brings media back.
    dead: bool,
}

impl Peer {
    pub async fn new(ip: IpAddr) -> std::io::Result<Peer> {
        let socket = bind_media_socket(SocketAddr::new(ip, 0))?;
        let local = socket.local_addr()?;
        // Only the codecs the track writer stores (`TrackCodec`): the SFU binds each downtrack to a codec
        // of the answer, so a publisher whose primary codec is AV1 or H.265 is forwarded in its backup
        // codec (VP8) instead of in a codec the writer would have to skip. No RED: the SFU strips it.
        let config = RtcConfig::new().clear_codecs().enable_opus(true, false).enable_vp8(true).enable_vp9(true).enable_h264(true);
        let mut rtc = config.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| std::io::Error::other(e.to_string()))?);
        Ok(Peer {
            rtc,
            socket,
            local,
            tcp: TcpLinks::new(ip),
            local_tcp: SocketAddr::new(ip, 9),
            tcp_enabled: false,
            pathless_since: None,
            ever_connected: false,
            next_timeout: Instant::now(),
            events: Vec::new(),
            lost: false,
            dead: false,
        })
    }

    /// Our host candidate as a LiveKit trickle `candidateInit` JSON string.
    pub fn candidate_init(&self, sdp_mid: &str) -> String {
        let candidate = Candidate::host(self.local, "udp").expect("a host candidate").to_sdp_string();
        serde_json::json!({ "candidate": candidate, "sdpMid": sdp_mid, "sdpMLineIndex": 0 }).to_string()
    }

    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, OfferError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(OfferError::Unparseable)?;
        let answer = self.rtc.sdp_api().accept_offer(offer).map_err(OfferError::NotAccepted)?;
        // A connection that had a path keeps its own account (an ICE restart starts checking again).
        if !self.ever_connected {
            self.pathless_since.get_or_insert_with(Instant::now);
        }
        Ok(answer.to_sdp_string())
    }

    pub fn add_remote_candidate(&mut self, init: &str) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(init) else {
            tracing::warn!(init, "bad trickle candidate JSON from the server");
            return;
        };
        let Some(candidate) = value.get("candidate").and_then(|c| c.as_str()).filter(|c| !c.is_empty()) else { return };
        match Candidate::from_sdp_string(candidate) {
            Ok(candidate) => self.rtc.add_remote_candidate(candidate),
            Err(err) => tracing::debug!(%err, candidate, "remote candidate not usable"),
        }
    }

    pub fn request_keyframe(&mut self, mid: Mid) {
        if let Some(mut writer) = self.rtc.writer(mid)
            && writer.is_request_keyframe_possible(KeyframeRequestKind::Pli)
        {
            let _ = writer.request_keyframe(None, KeyframeRequestKind::Pli);
        }
    }

    pub fn receive(&mut self, datagram: &[u8], source: SocketAddr) {
        let Ok(contents) = datagram.try_into() else { return };
        let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: self.local, contents });
        if let Err(err) = self.rtc.handle_input(input) {
            tracing::warn!(%err, "peer connection input failed");
            self.end();
        }
    }

    pub fn receive_tcp(&mut self, packet: TcpPacket) {
        let Ok(contents) = packet.data.as_ref().try_into() else { return };
        let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Tcp, source: packet.source, destination: self.local_tcp, contents });
        if let Err(err) = self.rtc.handle_input(input) {
            tracing::warn!(%err, "peer connection input (TCP) failed");
            self.end();
        }
    }

    pub fn tick(&mut self) {
        if let Err(err) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
            tracing::warn!(%err, "peer connection timer failed");
            self.end();
        }
    }

    /// False once the connection ended for good.
    pub fn is_alive(&self) -> bool {
        !self.dead
    }

    fn lose(&mut self) {
        if !self.lost {
            self.lost = true;
            self.events.push(PeerEvent::Lost);
        }
    }

    fn end(&mut self) {
        self.lose();
        self.dead = true;
        self.rtc.disconnect();
    }

    /// Offers ICE/TCP once UDP has found no path for [`TCP_FALLBACK_AFTER`].
    fn fall_back_to_tcp(&mut self) {
        if self.tcp_enabled || self.pathless_since.is_none_or(|since| since.elapsed() < TCP_FALLBACK_AFTER) {
            return;
        }
        self.tcp_enabled = true;
        match Candidate::builder().tcp().host(self.local_tcp).tcptype(TcpType::Active).build() {
            Ok(candidate) => {
                tracing::info!("no ICE path over UDP; trying TCP");
                self.rtc.add_local_candidate(candidate);
            }
            Err(err) => tracing::warn!(%err, "no TCP candidate"),
        }
    }

    /// Runs str0m until it wants to wait; returns what happened.
    pub fn drive(&mut self) -> Vec<PeerEvent> {
        self.fall_back_to_tcp();
        // ICE without a path is reported lost only once TCP had its chance too: str0m's "disconnected"
        // comes at once when an ICE restart brings only candidates it cannot pair yet.
        let patience = if self.ever_connected { PATH_LOSS_TIMEOUT } else { FIRST_PATH_TIMEOUT };
        if self.pathless_since.is_some_and(|since| since.elapsed() >= patience) {
            self.lose();
        }
        loop {
            if !self.rtc.is_alive() {
                self.end();
                self.next_timeout = Instant::now() + Duration::from_secs(3600);
                break;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.next_timeout = at;
                    break;
                }
                Ok(Output::Transmit(transmit)) => match transmit.proto {
                    Protocol::Tcp => self.tcp.send(transmit.destination, &transmit.contents),
                    _ => {
                        let _ = self.socket.try_send_to(&transmit.contents, transmit.destination);
                    }
                },
                Ok(Output::Event(event)) => match event {
                    Event::Connected => self.events.push(PeerEvent::Connected),
                    Event::MediaData(data) => self.events.push(PeerEvent::Media(Box::new(data))),
                    // A transient state: an ICE restart (which a resume brings) can find a path again.
                    Event::IceConnectionStateChange(state) if !state.is_connected() && state != IceConnectionState::New => {
                        self.pathless_since.get_or_insert_with(Instant::now);
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Connected | IceConnectionState::Completed) => {
                        self.ever_connected = true;
                        self.pathless_since = None;
                        if self.lost && !self.dead {
                            self.lost = false;
                            self.events.push(PeerEvent::Restored);
                        }
                    }
                    _ => {}
                },
                Err(err) => {
                    tracing::warn!(%err, "peer connection failed");
                    self.end();
                }
            }
        }
        std::mem::take(&mut self.events)
    }
}

/// How long ICE may find no path over UDP before the TCP candidate is offered too.
const TCP_FALLBACK_AFTER: Duration = Duration::from_secs(2);
/// How long a connection that had a path may be without one before it is reported lost.
const PATH_LOSS_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a new connection may take to find its first path.
const FIRST_PATH_TIMEOUT: Duration = Duration::from_secs(10);

/// The kernel's default receive buffer (208 KiB on Linux) holds well under a second of a room's media:
/// a capture loop held up that long on a busy machine would lose packets, and audio has no
/// retransmission. Ask for 4 MiB; the kernel caps it at `net.core.rmem_max`.
const MEDIA_RECEIVE_BUFFER: usize = 4 << 20;

fn bind_media_socket(address: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Err(err) = socket.set_recv_buffer_size(MEDIA_RECEIVE_BUFFER) {
        tracing::warn!(%err, "could not enlarge the media socket's receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    UdpSocket::from_std(socket.into())
}

/// The codec name of received media, as the track writer knows it.
pub fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Opus => "opus",
        Codec::Vp8 => "vp8",
        Codec::Vp9 => "vp9",
        Codec::H264 => "h264",
        Codec::Av1 => "av1",
        _ => "unknown",
    }
}
