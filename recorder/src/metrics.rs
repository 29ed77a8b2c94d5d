//! The recorder's Prometheus metrics (served by `fleet_runtime::node_endpoints`): captures running,
//! frames per track kind as they arrive and what became of them, the spool, and segment uploads.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Kind {
    Audio = 0,
    Video = 1,
}

impl Kind {
    pub fn of(video: bool) -> Kind {
        if video { Kind::Video } else { Kind::Audio }
    }
}

/// Why a frame that arrived was not recorded.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// The SFU's tiny blank keyframes (sent as a track is muted or left).
    SfuBlank,
    /// Video after a gap, until the keyframe asked for arrives.
    AwaitingKeyframe,
    /// Audio stamped at or before the last frame written.
    SteppedBack,
    /// The track's writer refused it, or the track cannot be recorded (codec) or is finishing.
    NotWritable,
}

impl EncodeLabelValue for Kind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(if *self == Kind::Video { "video" } else { "audio" })
    }
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            DropReason::SfuBlank => "sfu_blank",
            DropReason::AwaitingKeyframe => "awaiting_keyframe",
            DropReason::SteppedBack => "stepped_back",
            DropReason::NotWritable => "not_writable",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: Kind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    kind: Kind,
    reason: DropReason,
}

#[derive(Default)]
pub struct RecorderMetrics {
    captures: Gauge,
    frames_received: Family<KindLabel, Counter>,
    frames_written: Family<KindLabel, Counter>,
    frames_dropped: Family<DropLabels, Counter>,
    sequence_gaps: Family<KindLabel, Counter>,
    /// The per-frame series, looked up once ([audio, video]): counting a frame is then one atomic add.
    received_by_kind: [Counter; 2],
    written_by_kind: [Counter; 2],
    spool: Gauge,
    uploads: Counter,
    upload_retries: Counter,
    upload_failures: Counter,
    upload_lag: Gauge<f64, AtomicU64>,
    /// Segments waiting for their upload, by ticket: when each was queued.
    pending: Mutex<BTreeMap<u64, Instant>>,
    next_ticket: AtomicU64,
}

impl RecorderMetrics {
    /// The metrics, registered under `fleet_recorder_`.
    pub fn register(registry: &mut Registry) -> std::sync::Arc<Self> {
        let mut metrics = RecorderMetrics::default();
        let by_kind = |family: &Family<KindLabel, Counter>| [Kind::Audio, Kind::Video].map(|kind| family.get_or_create(&KindLabel { kind }).clone());
        metrics.received_by_kind = by_kind(&metrics.frames_received);
        metrics.written_by_kind = by_kind(&metrics.frames_written);
        let metrics = std::sync::Arc::new(metrics);
        let r = registry.sub_registry_with_prefix("fleet_recorder");
        r.register("captures", "Recordings this node is capturing now", metrics.captures.clone());
        r.register("frames_received", "Media frames that arrived from the SFU, per track kind", metrics.frames_received.clone());
        r.register("frames_written", "Media frames written to the spool, per track kind", metrics.frames_written.clone());
        r.register("frames_dropped", "Frames that arrived but were not recorded, per track kind and reason", metrics.frames_dropped.clone());
        r.register("sequence_gaps", "Breaks in a track's RTP sequence (packets that never arrived), per track kind", metrics.sequence_gaps.clone());
        r.register_with_unit("spool", "Bytes in the spool directory (segments not yet confirmed by storage)", Unit::Bytes, metrics.spool.clone());
        r.register("segment_uploads", "Segments whose upload storage confirmed", metrics.uploads.clone());
        r.register("segment_upload_retries", "Failed segment upload attempts that were retried", metrics.upload_retries.clone());
        r.register("segment_upload_failures", "Segments given up on after retrying for the configured limit", metrics.upload_failures.clone());
        // Every known series starts at zero: rates work from the first frame, and dashboards see the names.
        for kind in [Kind::Audio, Kind::Video] {
            let _ = metrics.sequence_gaps.get_or_create(&KindLabel { kind });
            for reason in [DropReason::SfuBlank, DropReason::AwaitingKeyframe, DropReason::SteppedBack, DropReason::NotWritable] {
                let _ = metrics.frames_dropped.get_or_create(&DropLabels { kind, reason });
            }
        }
        r.register_with_unit(
            "upload_lag",
            "How long the oldest segment waiting for its upload has waited (0 when none waits)",
            Unit::Seconds,
            metrics.upload_lag.clone(),
        );
        metrics
    }

    pub fn set_captures(&self, running: usize) {
        self.captures.set(running as i64);
    }

    pub fn set_spool_bytes(&self, bytes: u64) {
        self.spool.set(bytes as i64);
    }

    pub fn frame_received(&self, kind: Kind) {
        self.received_by_kind[kind as usize].inc();
    }

    pub fn frame_written(&self, kind: Kind) {
        self.written_by_kind[kind as usize].inc();
    }

    pub fn frame_dropped(&self, kind: Kind, reason: DropReason) {
        self.frames_dropped.get_or_create(&DropLabels { kind, reason }).inc();
    }

    pub fn sequence_gap(&self, kind: Kind) {
        self.sequence_gaps.get_or_create(&KindLabel { kind }).inc();
    }

    /// A segment queued for upload: the ticket to report its end with.
    pub fn upload_queued(&self) -> u64 {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.pending.lock().unwrap().insert(ticket, Instant::now());
        ticket
    }

    pub fn upload_retried(&self) {
        self.upload_retries.inc();
    }

    /// A queued segment's upload ended: confirmed, or given up on.
    pub fn upload_ended(&self, ticket: u64, confirmed: bool) {
        self.pending.lock().unwrap().remove(&ticket);
        if confirmed {
            self.uploads.inc()
        } else {
            self.upload_failures.inc()
        };
    }

    /// Refreshes the upload lag from what waits now (called before each scrape-worthy moment: the heartbeat).
    pub fn refresh_upload_lag(&self, now: Instant) {
        let oldest = self.pending.lock().unwrap().values().min().copied();
        self.upload_lag.set(oldest.map_or(0.0, |queued| now.duration_since(queued).as_secs_f64()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_lag_is_the_oldest_waiting_segment() {
        let mut registry = Registry::default();
        let metrics = RecorderMetrics::register(&mut registry);
        let first = metrics.upload_queued();
        let second = metrics.upload_queued();
        let later = Instant::now() + std::time::Duration::from_secs(3);
        metrics.refresh_upload_lag(later);
        assert!(metrics.upload_lag.get() >= 3.0);
        metrics.upload_ended(first, true);
        metrics.upload_ended(second, false);
        metrics.refresh_upload_lag(later);
        assert_eq!(metrics.upload_lag.get(), 0.0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("fleet_recorder_segment_uploads_total 1"), "{text}");
        assert!(text.contains("fleet_recorder_segment_upload_failures_total 1"), "{text}");
        assert!(text.contains("# UNIT fleet_recorder_upload_lag_seconds seconds"), "{text}");
    }
}
