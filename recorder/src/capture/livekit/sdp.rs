//! What the subscriber offer says about its m-lines: which track each mid carries. LiveKit writes
//! `a=msid:<participant sid>|<track sid> <track sid>`; we demux by mid, so this map is all we need.

use std::collections::HashMap;

/// mid → track sid, for every m-line that carries a track.
pub fn tracks_by_mid(sdp: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for section in sdp.split("\nm=").skip(1) {
        let mut mid = None;
        let mut track = None;
        for line in section.lines() {
            let line = line.trim_end();
            if let Some(value) = line.strip_prefix("a=mid:") {
                mid = Some(value.to_string());
            } else if let Some(value) = line.strip_prefix("a=msid:") {
                let mut parts = value.split_whitespace();
                let stream = parts.next().unwrap_or_default();
                // The track id, else the part of the stream id after '|'.
                track = parts.next().map(str::to_string).or_else(|| stream.split('|').nth(1).map(str::to_string));
            }
        }
        if let (Some(mid), Some(track)) = (mid, track) {
            map.insert(mid, track);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_mids_to_tracks() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:PA_x|TR_v TR_v\r\na=sendonly\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:2\r\na=msid:PA_x|TR_a TR_a\r\n";
        let map = tracks_by_mid(sdp);
        assert_eq!(map.len(), 2);
        assert_eq!(map["1"], "TR_v");
        assert_eq!(map["2"], "TR_a");
    }
}
