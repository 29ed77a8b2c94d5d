//! The transcoder's Prometheus metrics (served by `fleet_runtime::node_endpoints`): transcodes running
//! and how their deliveries ended, media encoded per encoder and the time it took (their ratio is the
//! speed), the encoders this node has, and fallbacks from a GPU encoder to the CPU.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// What a transcode message asked for.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Work {
    /// A whole recording, or the split of a long one into chunks.
    Recording,
    /// One chunk (and the join, by whichever chunk completes the plan).
    Chunk,
    /// A progressive transcode's look at what became final.
    CatchUp,
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Asked to come back later (a join another node holds).
    Later,
    /// Failed; delivered again.
    Retried,
    /// Failed for good: the job is marked failed.
    Failed,
}

impl EncodeLabelValue for Work {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            Work::Recording => "recording",
            Work::Chunk => "chunk",
            Work::CatchUp => "catch_up",
        })
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            Outcome::Done => "done",
            Outcome::Later => "later",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    work: Work,
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EncoderLabel {
    encoder: String,
}

#[derive(Default)]
pub struct TranscoderMetrics {
    running: Gauge,
    deliveries: Family<DeliveryLabels, Counter>,
    media_encoded: Family<EncoderLabel, Counter<f64, AtomicU64>>,
    encoding_time: Family<EncoderLabel, Counter<f64, AtomicU64>>,
    encoders: Family<EncoderLabel, Gauge>,
    fallbacks: Counter,
}

impl TranscoderMetrics {
    /// The metrics, registered under `fleet_transcoder_`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Arc::new(TranscoderMetrics::default());
        let r = registry.sub_registry_with_prefix("fleet_transcoder");
        r.register("running", "Transcodes (whole recordings, chunks, catch-ups) running on this node now", metrics.running.clone());
        r.register("deliveries", "Transcode messages handled, by what they asked for and how they ended", metrics.deliveries.clone());
        r.register_with_unit(
            "media_encoded",
            "Seconds of recording encoded, per H.264 encoder (the speed is its rate over encoding_time's)",
            Unit::Seconds,
            metrics.media_encoded.clone(),
        );
        r.register_with_unit("encoding_time", "Wall-clock seconds spent encoding, per H.264 encoder", Unit::Seconds, metrics.encoding_time.clone());
        r.register("encoders", "The H.264 encoders that work on this node (1), the one in use first in preference", metrics.encoders.clone());
        r.register("encoder_fallbacks", "Encodes that failed on a GPU encoder and were redone on the CPU", metrics.fallbacks.clone());
        // Every known series starts at zero: rates work from the first delivery, and dashboards see the names.
        for work in [Work::Recording, Work::Chunk, Work::CatchUp] {
            for outcome in [Outcome::Done, Outcome::Later, Outcome::Retried, Outcome::Failed] {
                let _ = metrics.deliveries.get_or_create(&DeliveryLabels { work, outcome });
            }
        }
        metrics
    }

    pub fn set_encoders(&self, working: &[String]) {
        for encoder in working {
            let label = EncoderLabel { encoder: encoder.clone() };
            self.encoders.get_or_create(&label).set(1);
            let _ = (self.media_encoded.get_or_create(&label), self.encoding_time.get_or_create(&label));
        }
    }

    pub fn set_running(&self, running: usize) {
        self.running.set(running as i64);
    }

    pub fn delivery(&self, work: Work, outcome: Outcome) {
        self.deliveries.get_or_create(&DeliveryLabels { work, outcome }).inc();
    }

    /// An encode finished: `media_s` of the recording in `wall_s`.
    pub fn encoded(&self, encoder: &str, media_s: f64, wall_s: f64) {
        let label = EncoderLabel { encoder: encoder.to_string() };
        self.media_encoded.get_or_create(&label).inc_by(media_s);
        self.encoding_time.get_or_create(&label).inc_by(wall_s);
    }

    pub fn fallback(&self) {
        self.fallbacks.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_carry_units_and_labels() {
        let mut registry = Registry::default();
        let metrics = TranscoderMetrics::register(&mut registry);
        metrics.set_encoders(&["x264enc".into()]);
        metrics.delivery(Work::Chunk, Outcome::Done);
        metrics.encoded("x264enc", 30.0, 12.0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("fleet_transcoder_deliveries_total{work=\"chunk\",outcome=\"done\"} 1"), "{text}");
        assert!(text.contains("fleet_transcoder_media_encoded_seconds_total{encoder=\"x264enc\"} 30.0"), "{text}");
        assert!(text.contains("fleet_transcoder_encoders{encoder=\"x264enc\"} 1"), "{text}");
    }
}
