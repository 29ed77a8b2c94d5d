//! `recorder`: a recorder node, in mode `both` (records and transcodes) or `recorder-only`.

use anyhow::Context;
use clap::{Parser, ValueEnum};
use fleet_protocol::job_requests::embedded_transcoder_id;
use fleet_protocol::nats_access::Role;
use fleet_recorder::{Recorder, RecorderConfig};
use fleet_runtime::bus::{Bus, QueueSettings, Topology};
use fleet_runtime::config::{LogConfig, NatsConfig, StorageConfig};
use fleet_runtime::job_client::JobRequests;
use fleet_runtime::node_endpoints::{self, MetricsConfig};
use fleet_runtime::process::{host_name, shutdown_signal};
use fleet_runtime::storage::Storage;
use fleet_transcoder::metrics::TranscoderMetrics;
use fleet_transcoder::{Transcoder, TranscoderConfig, WorkerIdentity};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Mode {
    /// Record, and transcode too (transcoding backs off while recordings need the CPU).
    Both,
    /// Record only; transcode jobs go to transcoder nodes.
    RecorderOnly,
}

#[derive(Parser)]
#[command(version, about = "Recorder node: captures rooms into crash-safe segments")]
struct Args {
    /// TOML configuration file (see deploy/recorder.toml); FLEET_* environment variables override it.
    #[arg(long, short, env = "FLEET_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "both", env = "FLEET_MODE")]
    mode: Mode,
    /// Node id in the registry (default: the host name).
    #[arg(long)]
    node_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    node_id: Option<String>,
    nats: NatsConfig,
    queues: QueueSettings,
    storage: StorageConfig,
    recorder: RecorderConfig,
    /// The embedded transcoder of mode `both`.
    transcoder: TranscoderConfig,
    log: LogConfig,
    metrics: MetricsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: None,
            nats: NatsConfig::default(),
            queues: QueueSettings::default(),
            storage: StorageConfig::default(),
            recorder: RecorderConfig::default(),
            // As plugNmeet's `both` mode: leave the CPU to live recordings above 80 %.
            transcoder: TranscoderConfig { max_cpu_load: 0.8, ..TranscoderConfig::default() },
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fleet_runtime::tls::install_crypto_provider();
    let args = Args::parse();
    let mut config: Config = fleet_runtime::config::load(args.config.as_deref())?;
    config.recorder.streaming.branding = config.transcoder.branding.clone();
    config.recorder.streaming.logos = config.transcoder.logos.clone();
    fleet_runtime::logging::init(&config.log);
    let node_id = args.node_id.or(config.node_id).unwrap_or_else(host_name);
    fleet_protocol::SafeId::parse(node_id.as_str()).context("node id")?;
    let bus = Bus::connect(&config.nats, &config.queues, &node_id, Topology::Use).await.context("connecting to NATS")?;
    let storage = Storage::from_config(&config.storage).await.context("opening storage")?;

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mode_name = match args.mode {
        Mode::Both => "both",
        Mode::RecorderOnly => "recorder-only",
    };
    let role = if args.mode == Mode::Both { Role::Both } else { Role::Recorder };
    // One registry for the node: the embedded transcoder of mode `both` adds its own metrics to it.
    let mut registry = Registry::default();
    let recorder_metrics = fleet_recorder::metrics::RecorderMetrics::register(&mut registry);
    let transcoder_metrics = (args.mode == Mode::Both).then(|| TranscoderMetrics::register(&mut registry));
    let jobs = JobRequests::for_node(&bus, role, &node_id);
    let recorder = Recorder::new(bus.clone(), jobs, storage.clone(), config.recorder, node_id.clone(), mode_name.into(), recorder_metrics)?;
    let mut workers = tokio::task::JoinSet::new();
    workers.spawn(recorder.clone().run(shutdown_rx.clone()));
    if let Some(metrics) = transcoder_metrics {
        let identity = WorkerIdentity { node_id: embedded_transcoder_id(&node_id), mode: "both".into() };
        let recording = recorder.clone();
        let yield_to: fleet_runtime::queue::UrgentWork = std::sync::Arc::new(move || recording.is_recording());
        let transcoder = Transcoder::new(
            bus.clone(),
            JobRequests::for_node(&bus, Role::Both, &node_id),
            storage,
            config.transcoder,
            identity,
            Some(yield_to),
            metrics,
        )
        .await?;
        workers.spawn(transcoder.run(shutdown_rx.clone()));
    }
    node_endpoints::spawn(config.metrics.clone(), registry, bus.clone(), shutdown_rx);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = shutdown_tx.send(true);
    });
    while workers.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The sample configuration shipped in deploy/ loads: no key there that the code does not know.
    #[test]
    fn the_shipped_sample_configuration_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/recorder.toml");
        let loaded: Result<super::Config, _> = fleet_runtime::config::load(Some(&path));
        assert!(loaded.is_ok(), "{}: {}", path.display(), loaded.err().map(|e| e.to_string()).unwrap_or_default());
    }
}
