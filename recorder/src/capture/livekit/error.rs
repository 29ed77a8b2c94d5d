//! Why a LiveKit capture could not run (the session fails with this text), and why a server's offer was
//! not answered (the connection is then made again).

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("the recorder has no LiveKit API key/secret configured ([recorder.livekit])")]
    NoCredentials,
    #[error("could not sign the LiveKit token: {0}")]
    Token(String),
    #[error("could not open the media socket on {ip}: {source}")]
    MediaSocket {
        ip: std::net::IpAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("could not join room {room:?}: {reason}")]
    Join { room: String, reason: String },
    #[error("lost the LiveKit connection and could not rejoin within {seconds} s: {reason}")]
    Rejoin { seconds: u64, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    #[error("unparseable offer: {0}")]
    Unparseable(#[source] str0m::error::SdpError),
    #[error("offer not accepted: {0}")]
    NotAccepted(#[source] str0m::RtcError),
}
