//! Live stream outputs of a job: the RTMP URLs a recorder pushes the room's composite to, and how each
//! is doing. A URL's path usually carries the stream key (a credential): it never prints, and what
//! clients see of it is [`StreamUrl::redacted`].

use crate::SafeId;
use serde::{Deserialize, Serialize};

/// Most stream outputs one job may have (removed ones included).
pub const MAX_STREAMS: usize = 8;
const MAX_URL_LEN: usize = 1024;

/// An `rtmp://` or `rtmps://` URL.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamUrl(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream URLs must be rtmp:// or rtmps:// URLs with a host and an application (at most {MAX_URL_LEN} characters, no spaces)")]
pub struct InvalidStreamUrl;

impl StreamUrl {
    pub fn parse(text: &str) -> Result<StreamUrl, InvalidStreamUrl> {
        let rest = text.strip_prefix("rtmp://").or_else(|| text.strip_prefix("rtmps://")).ok_or(InvalidStreamUrl)?;
        let (host, path) = rest.split_once('/').ok_or(InvalidStreamUrl)?;
        let plain = |c: char| !c.is_control() && !c.is_whitespace();
        if text.len() > MAX_URL_LEN || host.is_empty() || path.is_empty() || !text.chars().all(plain) || host.contains('@') {
            return Err(InvalidStreamUrl);
        }
        Ok(StreamUrl(text.to_string()))
    }

    /// The URL to connect to. Only the recorder's pipeline needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Scheme, host and application, the rest (the stream key) hidden: `rtmp://host/live/…`.
    pub fn redacted(&self) -> String {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("rtmp", &self.0));
        let mut parts = rest.splitn(3, '/');
        let host = parts.next().unwrap_or_default();
        let app = parts.next().unwrap_or_default();
        format!("{scheme}://{host}/{app}/…")
    }
}

impl TryFrom<String> for StreamUrl {
    type Error = InvalidStreamUrl;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        StreamUrl::parse(&text)
    }
}

impl From<StreamUrl> for String {
    fn from(url: StreamUrl) -> String {
        url.0
    }
}

impl utoipa::PartialSchema for StreamUrl {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some("^rtmps?://[^/@\\s]+/\\S+$"))
            .max_length(Some(MAX_URL_LEN))
            .description(Some("an rtmp:// or rtmps:// URL with a host and an application; its stream key is never shown back"))
            .into()
    }
}

impl utoipa::ToSchema for StreamUrl {}

impl std::fmt::Debug for StreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamUrl({})", self.redacted())
    }
}

/// Where a stream output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// Asked for; the recorder is connecting.
    Starting,
    /// The server takes the stream.
    Live,
    /// It dropped; the recorder reconnects with backoff.
    Retrying,
    /// It never worked, or stayed down past the retry window: given up (`last_error` says why).
    Failed,
    /// Removed by a client while live.
    Removed,
    /// The job's capture ended.
    Ended,
}

impl StreamState {
    /// Still wanted: the recorder keeps (or gets) it going.
    pub fn is_wanted(self) -> bool {
        matches!(self, StreamState::Starting | StreamState::Live | StreamState::Retrying)
    }
}

/// One stream output of a job, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamOutput {
    /// `rtmp1`, `rtmp2`… in the order they were added.
    pub id: SafeId,
    /// Scheme, host and application as clients see it (the stream key hidden); in full only in the stored
    /// record, which recorders read.
    pub url: String,
    pub state: StreamState,
    /// Reconnections after a drop (or failed first tries).
    #[serde(default)]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub added_at_ms: u64,
    /// When it last went live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_at_ms: Option<u64>,
}

impl StreamOutput {
    pub fn new(index: usize, url: &StreamUrl, now_ms: u64) -> StreamOutput {
        StreamOutput {
            id: SafeId::parse(format!("rtmp{index}")).expect("a valid id"),
            url: url.expose().to_string(),
            state: StreamState::Starting,
            retries: 0,
            last_error: None,
            added_at_ms: now_ms,
            live_at_ms: None,
        }
    }

    /// The URL as a recorder connects to it (checked when it was added).
    pub fn stream_url(&self) -> Option<StreamUrl> {
        StreamUrl::parse(&self.url).ok()
    }
}

/// What a recorder reports about one of its stream outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamReport {
    pub id: SafeId,
    pub state: StreamState,
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_their_keys_never_shown() {
        let url = StreamUrl::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl").unwrap();
        assert_eq!(url.redacted(), "rtmp://a.rtmp.youtube.com/live2/…");
        assert!(!format!("{url:?}").contains("abcd"));
        assert_eq!(StreamUrl::parse("rtmps://host:443/app/key?x=1").unwrap().redacted(), "rtmps://host:443/app/…");
        for bad in ["http://host/app/key", "rtmp://host", "rtmp:///app", "rtmp://host/app key", "rtmp://user:pw@host/app/k", ""] {
            assert_eq!(StreamUrl::parse(bad), Err(InvalidStreamUrl), "{bad}");
        }
        let long = format!("rtmp://host/app/{}", "k".repeat(MAX_URL_LEN));
        assert!(StreamUrl::parse(&long).is_err());
    }
}
