//! A job's live files on the recorder: the HLS segments its composite cuts and the snapshots it takes,
//! uploaded in order (a segment before the playlists that name it) and deleted from the spool once
//! stored; both playlists rewritten after each segment. A recorder taking the job over continues the
//! playlist (after a discontinuity) and the numbering it finds.

use super::playlist::Playlist;
use crate::error::RecordError;
use crate::uploader::Uploader;
use fleet_pipelines::live::{OutputTarget, SnapshotSpec};
use fleet_protocol::live_files::{HlsProgress, HlsRequest, ImagesProgress, ImagesRequest};
use fleet_protocol::{JobRecord, SafeId, keys};
use fleet_runtime::storage::Storage;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct LiveFiles {
    job: SafeId,
    dir: PathBuf,
    uploader: Uploader,
    hls: Option<Hls>,
    images: Option<Images>,
    changed: bool,
}

struct Hls {
    request: HlsRequest,
    playlist: Playlist,
    first_index: u32,
    progress: HlsProgress,
    /// Each playlist version is its own spool file (the uploader deletes what it stored).
    versions: u32,
}

struct Images {
    request: ImagesRequest,
    next_index: u32,
    progress: ImagesProgress,
}

impl LiveFiles {
    /// `None` when the job asks for no live files. `dir`: this session's spool directory for them.
    pub async fn start(storage: &Storage, record: &JobRecord, dir: PathBuf, retry_limit: Duration) -> Result<Option<LiveFiles>, RecordError> {
        let outputs = &record.request.outputs;
        if !outputs.live_files() {
            return Ok(None);
        }
        let job = record.id.clone();
        std::fs::create_dir_all(dir.join("images")).map_err(|source| RecordError::Spool { path: dir.clone(), source })?;
        let mut hls = match outputs.hls {
            Some(request) => Some(Hls::continued(storage, &job, request, record.hls.as_ref()).await),
            None => None,
        };
        if let Some(hls) = &mut hls {
            hls.progress.started_at_ms.get_or_insert(fleet_protocol::time::now_ms());
        }
        let images = outputs.images.map(|request| {
            let prefix = keys::images_prefix(&job);
            let fresh = ImagesProgress { location: storage.location(&prefix), prefix, count: 0, first_at_ms: None, last_at_ms: None };
            let progress = record.images.clone().unwrap_or(fresh);
            Images { request, next_index: progress.count + 1, progress }
        });
        let uploader = Uploader::start(storage.clone(), retry_limit, None);
        Ok(Some(LiveFiles { job, dir, uploader, hls, images, changed: false }))
    }

    /// The composite's HLS output, when asked for.
    pub fn hls_target(&self) -> Option<OutputTarget> {
        let hls = self.hls.as_ref()?;
        Some(OutputTarget::Hls { dir: self.dir.join("hls"), segment_ns: hls.request.segment_s as u64 * 1_000_000_000, first_index: hls.first_index })
    }

    /// The composite's snapshots, when asked for (`composite`: its width and height).
    pub fn snapshot_spec(&self, (width, height): (u32, u32)) -> Option<SnapshotSpec> {
        let request = self.images.as_ref()?.request;
        let even = |side: u32| (side & !1).max(16);
        let (w, h) = match (request.width, request.height) {
            (Some(w), Some(h)) => (w, h),
            (Some(w), None) => (w, even(w * height / width)),
            (None, Some(h)) => (even(h * width / height), h),
            (None, None) => (width, height),
        };
        Some(SnapshotSpec { interval_ns: request.interval_s as u64 * 1_000_000_000, width: w, height: h })
    }

    pub fn on_segment(&mut self, path: &Path, duration_ns: u64) {
        let Some(hls) = &mut self.hls else { return };
        let Some(index) = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u32>().ok()) else {
            tracing::warn!(path = %path.display(), "an HLS segment with an unexpected name; skipped");
            return;
        };
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        self.uploader.push(path.to_path_buf(), keys::hls_segment(&self.job, index));
        hls.playlist.push(keys::hls_segment_name(index), duration_ns / 1_000_000);
        hls.progress.segments += 1;
        hls.progress.bytes += bytes;
        hls.progress.duration_ms = hls.playlist.duration_ms();
        self.write_playlists();
        self.changed = true;
    }

    pub fn on_snapshot(&mut self, jpeg: &[u8], now_ms: u64) {
        let Some(images) = &mut self.images else { return };
        let index = images.next_index;
        let path = self.dir.join("images").join(format!("{index:05}.jpg"));
        if let Err(err) = std::fs::write(&path, jpeg) {
            tracing::warn!(%err, path = %path.display(), "snapshot not written");
            return;
        }
        self.uploader.push(path, keys::image(&self.job, index));
        images.next_index += 1;
        images.progress.count += 1;
        images.progress.first_at_ms.get_or_insert(now_ms);
        images.progress.last_at_ms = Some(now_ms);
        self.changed = true;
    }

    fn write_playlists(&mut self) {
        let Some(hls) = &mut self.hls else { return };
        hls.versions += 1;
        let versions = [
            (hls.playlist.render_all(), hls.progress.playlist.clone(), "playlist"),
            (hls.playlist.render_live(hls.request.live_window as usize), hls.progress.live_playlist.clone(), "live"),
        ];
        for (text, key, name) in versions {
            let path = self.dir.join("hls").join(format!("{name}.{:05}.m3u8", hls.versions));
            match std::fs::write(&path, text) {
                Ok(()) => self.uploader.push(path, key),
                Err(err) => tracing::warn!(%err, path = %path.display(), "playlist not written"),
            }
        }
    }

    /// The files' progress, when it changed since last asked.
    pub fn take_report(&mut self) -> Option<(Option<HlsProgress>, Option<ImagesProgress>)> {
        std::mem::take(&mut self.changed).then(|| self.report())
    }

    fn report(&self) -> (Option<HlsProgress>, Option<ImagesProgress>) {
        (self.hls.as_ref().map(|h| h.progress.clone()), self.images.as_ref().map(|i| i.progress.clone()))
    }

    /// Closes the playlists (`#EXT-X-ENDLIST`) and waits for every upload; the final progress.
    pub async fn finish(mut self, now_ms: u64) -> (Result<u32, RecordError>, (Option<HlsProgress>, Option<ImagesProgress>)) {
        if let Some(hls) = &mut self.hls {
            hls.playlist.end();
            hls.progress.ended_at_ms = Some(now_ms);
        }
        self.write_playlists();
        let report = self.report();
        (self.uploader.finish().await, report)
    }
}

impl Hls {
    /// This session's HLS: a new playlist, or the one an earlier session left (read back from storage).
    async fn continued(storage: &Storage, job: &SafeId, request: HlsRequest, earlier: Option<&HlsProgress>) -> Hls {
        let (playlist, live_playlist) = (keys::hls_playlist(job), keys::hls_live_playlist(job));
        let fresh = HlsProgress {
            playlist_location: storage.location(&playlist),
            live_playlist_location: storage.location(&live_playlist),
            playlist,
            live_playlist,
            segments: 0,
            duration_ms: 0,
            bytes: 0,
            started_at_ms: None,
            ended_at_ms: None,
        };
        let mut playlist = Playlist::default();
        let mut progress = fresh.clone();
        if let Some(earlier) = earlier.filter(|e| e.segments > 0) {
            match storage.get_bytes(&earlier.playlist).await.map(|bytes| Playlist::parse(&String::from_utf8_lossy(&bytes))) {
                Ok(Ok(stored)) => {
                    playlist = stored;
                    playlist.mark_break();
                    progress = HlsProgress { ended_at_ms: None, ..earlier.clone() };
                }
                Ok(Err(err)) => tracing::warn!(%err, "the earlier session's playlist is unreadable; starting a new one"),
                Err(err) => tracing::warn!(%err, "the earlier session's playlist could not be read; starting a new one"),
            }
        }
        // Numbering goes on past every segment an earlier session may have stored, listed or not.
        let first_index = earlier.map_or(0, |e| e.segments).max(playlist.segments().len() as u32) + 1;
        Hls { request, playlist, first_index, progress, versions: 0 }
    }
}
