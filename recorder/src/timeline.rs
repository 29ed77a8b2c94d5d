//! `timeline.jsonl`: one JSON line per room or capture event, with wall-clock time and media running
//! time, kept in the spool and uploaded next to the segments (DESIGN.md section 6).
//!
//! While the session runs, the timeline reaches storage in parts (`keys::timeline_part`): lines cut
//! into parts of about [`PART_BYTES`], each sealed part uploaded once and the growing last one again as
//! it grows. An upload then costs the same an hour into a recording as at its start (the whole file,
//! uploaded at every closed segment, grew to megabytes and was sent several times a second). A closed
//! segment's lines are uploaded before the segment is queued, as the transcode places a stored
//! segment by them (a redundant recording's dead capture's last segments too); other lines go at most
//! every [`LIVE_UPLOAD_INTERVAL`]. The session's end uploads the whole file once.

pub use fleet_protocol::timeline::Entry;
use fleet_protocol::timeline::Line;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A part is sealed once it holds this many bytes (whole lines: a part ends after a line).
pub const PART_BYTES: u64 = 128 * 1024;

/// The live parts are uploaded at most this often (sealed parts are never held back).
pub const LIVE_UPLOAD_INTERVAL: Duration = Duration::from_secs(1);

pub struct Timeline {
    path: PathBuf,
    file: std::fs::File,
    /// Where each part begins in the file; the last part is open.
    part_starts: Vec<u64>,
    len: u64,
}

impl Timeline {
    pub fn create(path: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(path.parent().expect("timeline has a parent"))?;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        Ok(Self { path, file, part_starts: vec![0], len })
    }

    pub fn path(&self) -> &PathBuf {
        &self.path
    }

    pub fn write(&mut self, wall_ms: u64, running_ns: u64, entry: Entry) {
        let line = Line { wall_ms, running_ns, entry }.to_jsonl();
        if let Err(err) = self.file.write_all(&line) {
            tracing::warn!(%err, "timeline write failed");
            return;
        }
        self.len += line.len() as u64;
        if self.len - self.part_starts.last().expect("one part at least") >= PART_BYTES {
            self.part_starts.push(self.len);
        }
    }

    /// The byte ranges of the parts written so far (the last one may still grow; it is empty right
    /// after a part was sealed).
    pub fn parts(&self) -> Vec<Range<u64>> {
        let ends = self.part_starts.iter().skip(1).copied().chain([self.len]);
        self.part_starts.iter().copied().zip(ends).map(|(start, end)| start..end).collect()
    }

    /// The bytes of `range`, read back from the file.
    pub fn read(&self, range: &Range<u64>) -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(range.start))?;
        let mut bytes = vec![0; (range.end - range.start) as usize];
        file.read_exact(&mut bytes)?;
        Ok(bytes)
    }
}

/// Which parts of the timeline storage holds (as uploaded), and which to upload next.
#[derive(Debug, Default)]
pub struct LiveParts {
    /// Per part, the range last uploaded.
    uploaded: Vec<Range<u64>>,
    last_upload: Option<Instant>,
}

impl LiveParts {
    /// The parts to upload now, in order (a part before the next one, so that a reader that sees a
    /// part sees every earlier one whole): each one whose bytes grew since its last upload.
    pub fn changed(&self, parts: &[Range<u64>]) -> Vec<usize> {
        (0..parts.len()).filter(|&i| !parts[i].is_empty() && self.uploaded.get(i) != Some(&parts[i])).collect()
    }

    /// [`Self::changed`], held back while the last upload was less than [`LIVE_UPLOAD_INTERVAL`] ago
    /// and only the open part changed. `now` is an argument so that the rule is tested without waiting.
    pub fn due(&self, parts: &[Range<u64>], now: Instant) -> Vec<usize> {
        let changed = self.changed(parts);
        let sealed_changed = changed.iter().any(|&i| i + 1 < parts.len());
        let recently = self.last_upload.is_some_and(|at| now.duration_since(at) < LIVE_UPLOAD_INTERVAL);
        if recently && !sealed_changed { Vec::new() } else { changed }
    }

    pub fn uploaded(&mut self, index: usize, range: Range<u64>, now: Instant) {
        if self.uploaded.len() <= index {
            self.uploaded.resize(index + 1, 0..0);
        }
        self.uploaded[index] = range;
        self.last_upload = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> Entry {
        Entry::ParticipantLeft { participant: format!("p{n}") }
    }

    #[test]
    fn parts_are_sealed_after_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut timeline = Timeline::create(dir.path().join("timeline.jsonl")).unwrap();
        let mut lines = 0;
        while timeline.parts().len() < 3 {
            timeline.write(1, lines as u64, entry(lines));
            lines += 1;
        }
        let parts = timeline.parts();
        assert!(parts[2].is_empty(), "a new part begins empty: {parts:?}");
        assert_eq!(parts[0].end, parts[1].start);
        assert!(parts[0].end - parts[0].start >= PART_BYTES && parts[0].end - parts[0].start < PART_BYTES + 200, "{parts:?}");
        let whole = std::fs::read(timeline.path()).unwrap();
        let joined: Vec<u8> = parts.iter().flat_map(|p| timeline.read(p).unwrap()).collect();
        assert_eq!(joined, whole, "the parts laid end to end are the file");
        for part in &parts[..2] {
            let bytes = timeline.read(part).unwrap();
            assert_eq!(bytes.last(), Some(&b'\n'), "a part ends after a line");
            assert_eq!(
                fleet_protocol::timeline::parse(&String::from_utf8(bytes).unwrap()).count(),
                String::from_utf8(timeline.read(part).unwrap()).unwrap().lines().count()
            );
        }
    }

    #[test]
    fn the_open_part_is_sent_at_most_every_interval_and_sealed_parts_at_once() {
        let start = Instant::now();
        let mut live = LiveParts::default();
        let parts = [Range { start: 0, end: 100 }];
        assert_eq!(live.due(&parts, start), [0]);
        live.uploaded(0, 0..100, start);
        assert!(live.due(&parts, start + Duration::from_secs(5)).is_empty(), "unchanged");
        let grown = [Range { start: 0, end: 150 }];
        assert!(live.due(&grown, start + Duration::from_millis(300)).is_empty(), "sent 0.3 s ago");
        assert_eq!(live.due(&grown, start + LIVE_UPLOAD_INTERVAL), [0]);
        assert_eq!(live.changed(&grown), [0], "a closed segment's lines go at once");
        // The part was sealed and a new one began: the sealed part's last bytes go at once, then the new part.
        let sealed = [0..300, 300..340];
        assert_eq!(live.due(&sealed, start + Duration::from_millis(300)), [0, 1]);
        live.uploaded(0, 0..300, start + Duration::from_millis(300));
        live.uploaded(1, 300..340, start + Duration::from_millis(300));
        assert!(live.due(&[0..300, 300..360], start + Duration::from_millis(600)).is_empty());
        assert!(live.due(&[0..300, 300..300], start + Duration::from_secs(9)).is_empty(), "an empty part is not sent");
    }
}
