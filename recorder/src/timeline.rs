//! `timeline.jsonl`: one JSON line per room or capture event, with wall-clock time and media running
//! time, kept in the spool and uploaded next to the segments (DESIGN.md section 6).

use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry<'a> {
    SessionStarted { session: &'a str, node: &'a str, source: &'a str },
    ParticipantJoined { participant: &'a str },
    TrackPublished { participant: &'a str, track: &'a str, kind: &'a str, codec: &'a str },
    SegmentOpened { participant: &'a str, track: &'a str, seq: u32 },
    SegmentClosed { participant: &'a str, track: &'a str, seq: u32 },
    SessionEnded { reason: &'a str },
}

#[derive(Serialize)]
struct Line<'a> {
    wall_ms: u64,
    running_ns: u64,
    #[serde(flatten)]
    entry: &'a Entry<'a>,
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

    pub fn write(&mut self, wall_ms: u64, running_ns: u64, entry: Entry<'_>) {
        let mut line = serde_json::to_vec(&Line { wall_ms, running_ns, entry: &entry }).expect("timeline serializes");
        line.push(b'\n');
        if let Err(err) = self.file.write_all(&line) {
            tracing::warn!(%err, "timeline write failed");
        }
    }
}
