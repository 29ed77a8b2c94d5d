//! `timeline.jsonl`: one JSON line per room or capture event, with wall-clock time and media running
//! time, kept in the spool and uploaded next to the segments (DESIGN.md section 6).

use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize)]
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
}

#[derive(Serialize)]
struct Line<'a> {
    wall_ms: u64,
    running_ns: u64,
    #[serde(flatten)]
    entry: &'a Entry,
}

pub struct Timeline {
    path: PathBuf,
    file: std::fs::File,
}

impl Timeline {
    pub fn create(path: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(path.parent().expect("timeline has a parent"))?;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Self { path, file })
    }

    pub fn path(&self) -> &PathBuf {
        &self.path
    }

    pub fn write(&mut self, wall_ms: u64, running_ns: u64, entry: Entry) {
        let mut line = serde_json::to_vec(&Line { wall_ms, running_ns, entry: &entry }).expect("timeline serializes");
        line.push(b'\n');
        if let Err(err) = self.file.write_all(&line) {
            tracing::warn!(%err, "timeline write failed");
        }
    }
}
