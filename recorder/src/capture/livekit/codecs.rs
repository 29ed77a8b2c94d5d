//! Which of a published track's codecs reaches the recorder. The answer offers only what the track writer
//! stores (`TrackCodec`), so the SFU sends the publisher's primary codec when it is one of those, else a
//! backup codec that is (a browser publishing AV1 or VP9 also sends VP8), and strips RED from audio.

use fleet_pipelines::track_writer::TrackCodec;
use livekit_protocol as proto;

/// The codec the recorder will store for `track`, or None when the publisher sends none it can.
pub fn stored_codec(track: &proto::TrackInfo) -> Option<TrackCodec> {
    let mimes = std::iter::once(track.mime_type.as_str()).chain(track.codecs.iter().map(|c| c.mime_type.as_str()));
    mimes.filter_map(|mime| if mime.eq_ignore_ascii_case("audio/red") { Some(TrackCodec::Opus) } else { TrackCodec::from_name(mime) }).next()
}

/// Every codec the publisher sends `track` in, for a message naming them.
pub fn published_codecs(track: &proto::TrackInfo) -> String {
    let mut mimes: Vec<&str> = std::iter::once(track.mime_type.as_str()).chain(track.codecs.iter().map(|c| c.mime_type.as_str())).collect();
    mimes.retain(|m| !m.is_empty());
    mimes.dedup();
    if mimes.is_empty() { "an unnamed codec".into() } else { mimes.join(", ") }
}

/// A track's end-to-end encryption (`gcm`, `custom`), none when it is sent in the clear.
pub fn encryption_name(track: &proto::TrackInfo) -> Option<&'static str> {
    match track.encryption() {
        proto::encryption::Type::None => None,
        proto::encryption::Type::Gcm => Some("gcm"),
        proto::encryption::Type::Custom => Some("custom"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(primary: &str, backups: &[&str]) -> proto::TrackInfo {
        proto::TrackInfo {
            mime_type: primary.into(),
            codecs: std::iter::once(primary)
                .chain(backups.iter().copied())
                .map(|m| proto::SimulcastCodecInfo { mime_type: m.into(), ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_stored_codec_is_the_first_the_writer_knows() {
        assert_eq!(stored_codec(&track("video/VP8", &[])), Some(TrackCodec::Vp8));
        assert_eq!(stored_codec(&track("video/AV1", &["video/VP8"])), Some(TrackCodec::Vp8), "AV1 with a VP8 backup");
        assert_eq!(stored_codec(&track("video/VP9", &["video/VP8"])), Some(TrackCodec::Vp9));
        assert_eq!(stored_codec(&track("audio/red", &[])), Some(TrackCodec::Opus), "the SFU strips RED for us");
        assert_eq!(stored_codec(&track("video/H265", &[])), None);
        assert_eq!(stored_codec(&track("video/AV1", &[])), None);
        assert_eq!(published_codecs(&track("video/AV1", &[])), "video/AV1");
    }
}
