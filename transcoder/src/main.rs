//! `transcoder`: the transcoder-only node (mode `transcoder-only`), e.g. for GPU machines.

use anyhow::Context;
use clap::Parser;
use fleet_runtime::bus::{Bus, QueueSettings, Topology};
use fleet_runtime::config::{LogConfig, NatsConfig, StorageConfig};
use fleet_runtime::node_endpoints::{self, MetricsConfig};
use fleet_runtime::storage::Storage;
use fleet_transcoder::{Transcoder, TranscoderConfig, WorkerIdentity};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Transcoder node: turns recorded segments into faststart MP4s")]
struct Args {
    /// TOML configuration file (see deploy/transcoder.toml); FLEET_* environment variables override it.
    #[arg(long, short, env = "FLEET_CONFIG")]
    config: Option<PathBuf>,
    /// Node id in the registry (default: host name + "-transcoder").
    #[arg(long)]
    node_id: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Makes the transcoders' key pair for end-to-end encrypted rooms: writes the private key to a new file
    /// (readable by its owner only; give it to every transcoder as `e2ee_private_key_file`) and prints the
    /// public key (the controller's `e2ee_public_key`, which seals jobs' keys to it).
    E2eeKeygen {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    node_id: Option<String>,
    nats: NatsConfig,
    queues: QueueSettings,
    storage: StorageConfig,
    transcoder: TranscoderConfig,
    log: LogConfig,
    metrics: MetricsConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fleet_runtime::tls::install_crypto_provider();
    let args = Args::parse();
    if let Some(Command::E2eeKeygen { out }) = &args.command {
        let pair = fleet_e2ee::TranscoderKeyPair::generate();
        write_private(out, &pair.private_base64()).with_context(|| format!("writing {}", out.display()))?;
        println!("{}", pair.public().to_base64());
        return Ok(());
    }
    let config: Config = fleet_runtime::config::load(args.config.as_deref())?;
    fleet_runtime::logging::init(&config.log);
    let node_id = args.node_id.or(config.node_id).unwrap_or_else(|| format!("{}-transcoder", fleet_runtime::process::host_name()));
    let bus = Bus::connect(&config.nats, &config.queues, &node_id, Topology::Use).await.context("connecting to NATS")?;
    let storage = Storage::from_config(&config.storage).await.context("opening storage")?;
    let identity = WorkerIdentity { node_id, mode: "transcoder-only".into() };
    let jobs = fleet_runtime::job_client::JobRequests::for_node(&bus, fleet_protocol::nats_access::Role::Transcoder, &identity.node_id);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = fleet_transcoder::metrics::TranscoderMetrics::register(&mut registry);
    let transcoder = Transcoder::new(bus.clone(), jobs, storage, config.transcoder, identity, None, metrics).await?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    node_endpoints::spawn(config.metrics.clone(), registry, bus, shutdown_rx.clone());
    tokio::spawn(async move {
        fleet_runtime::process::shutdown_signal().await;
        tracing::info!("shutdown requested: finishing running transcodes");
        let _ = shutdown_tx.send(true);
    });
    transcoder.run(shutdown_rx).await;
    Ok(())
}

/// Creates `path` (never overwrites one) readable and writable by its owner only.
fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    /// The sample configuration shipped in deploy/ loads: no key there that the code does not know.
    #[test]
    fn the_shipped_sample_configuration_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/transcoder.toml");
        let loaded: Result<super::Config, _> = fleet_runtime::config::load(Some(&path));
        assert!(loaded.is_ok(), "{}: {}", path.display(), loaded.err().map(|e| e.to_string()).unwrap_or_default());
    }
}
