//! The `timeline.jsonl` contract between recorder (writer) and transcoder (reader): one JSON object a line,
//! `wall_ms` (wall clock), `running_ns` (the session's media running time) and one [`Entry`] tagged by
//! `type` (DESIGN.md section 6). One type both ways, so writer and readers cannot drift apart.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    SessionStarted {
        session: String,
        node: String,
        source: String,
    },
    /// `joined_at_ms`: when the server says the participant joined (orders tiles; the timeline's own
    /// order of a join list is arbitrary).
    ParticipantJoined {
        participant: String,
        identity: String,
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        joined_at_ms: Option<u64>,
    },
    ParticipantLeft {
        participant: String,
    },
    TrackPublished {
        participant: String,
        track: String,
        kind: String,
        codec: String,
        source: String,
        /// LiveKit end-to-end encryption (`gcm`, `custom`): its frames are stored as received, ciphertext.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encryption: Option<String>,
    },
    TrackUnpublished {
        participant: String,
        track: String,
    },
    TrackMuted {
        participant: String,
        track: String,
        muted: bool,
    },
    /// The first frame written for a track: its RTP time sits at this entry's running time.
    TrackStarted {
        participant: String,
        track: String,
        rtp_time: u64,
        clock_rate: u32,
    },
    /// An RTCP sender report: the publisher's NTP clock against the track's RTP clock.
    SenderReport {
        participant: String,
        track: String,
        ntp_unix_ms: f64,
        rtp_time: u64,
    },
    ActiveSpeakers {
        participants: Vec<String>,
    },
    /// The signalling connection was lost and the room joined again (media continues in the same tracks).
    Rejoined {
        connection: u32,
        reason: String,
    },
    /// The signalling connection was lost and the same session resumed on a new one (media kept flowing).
    Resumed {
        reason: String,
    },
    /// The room's `sif_trailer` (base64), from the join: the SFU ends the frames it injects into encrypted
    /// tracks with it.
    E2eeTrailer {
        trailer: String,
    },
    SegmentOpened {
        participant: String,
        track: String,
        seq: u32,
    },
    SegmentClosed {
        participant: String,
        track: String,
        seq: u32,
    },
    SessionEnded {
        reason: String,
    },
    /// An API client paused the recording here (wall clock: the line's `wall_ms`); the job record's
    /// `pauses` are what the transcoder cuts by, this marks them among the room's events.
    RecordingPaused,
    /// The recording was resumed here.
    RecordingResumed,
    /// An entry this reader does not know (a newer recorder's): skipped by readers, never written.
    #[serde(other)]
    Unknown,
}

/// The timeline's form of a room's trailer.
pub fn encode_trailer(trailer: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(trailer)
}

/// The trailer's bytes from [`Entry::E2eeTrailer`].
pub fn decode_trailer(trailer: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(trailer).ok()
}

/// One timeline line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub wall_ms: u64,
    pub running_ns: u64,
    #[serde(flatten)]
    pub entry: Entry,
}

impl Line {
    /// The line as written to `timeline.jsonl` (with its newline).
    pub fn to_jsonl(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("timeline lines serialize");
        line.push(b'\n');
        line
    }
}

/// The lines of a timeline, in order. Lines that do not parse (one torn by a crash, a newer recorder's
/// entry with fields this reader lacks) are skipped; entries of unknown types come as [`Entry::Unknown`].
pub fn parse(text: &str) -> impl Iterator<Item = Line> + '_ {
    text.lines().filter_map(|line| serde_json::from_str(line).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_unknown_or_torn_lines_are_skipped() {
        let written = Line {
            wall_ms: 7,
            running_ns: 42,
            entry: Entry::TrackStarted { participant: "PA_1".into(), track: "TR_1".into(), rtp_time: 90_000, clock_rate: 90_000 },
        };
        let text = String::from_utf8(written.to_jsonl()).unwrap();
        assert!(text.contains(r#""type":"track_started""#), "{text}");
        let newer = r#"{"wall_ms":8,"running_ns":50,"type":"from_the_future","x":1}"#;
        let torn = r#"{"wall_ms":9,"running_ns":60,"type":"segment_ope"#;
        let all = format!("{text}{newer}\n{torn}");
        let lines: Vec<Line> = parse(&all).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], written);
        assert_eq!((lines[1].running_ns, &lines[1].entry), (50, &Entry::Unknown));
    }
}
