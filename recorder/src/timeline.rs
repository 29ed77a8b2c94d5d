//! `timeline.jsonl`: one JSON line per room or capture event, with wall-clock time and media running
//! time, kept in the spool and uploaded next to the segments (DESIGN.md section 6).

pub use fleet_protocol::timeline::Entry;
use fleet_protocol::timeline::Line;
use std::io::Write;
use std::path::PathBuf;

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
        if let Err(err) = self.file.write_all(&Line { wall_ms, running_ns, entry }.to_jsonl()) {
            tracing::warn!(%err, "timeline write failed");
        }
    }
}
