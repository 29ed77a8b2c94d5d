//! `controller`: the fleet's API server.

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleet_controller::api::{AppState, router};
use fleet_controller::auth::{ApiKeys, hash_key};
use fleet_controller::job_index::JobIndex;
use fleet_controller::metrics::Metrics;
use fleet_controller::{ControllerConfig, event_sinks, failover, node_requests, retention, state_events, webhooks};
use fleet_controller::{egress, plugnmeet, tls};
use fleet_runtime::bus::{Bus, QueueSettings, Topology};
use fleet_runtime::config::{LogConfig, NatsConfig, StorageConfig};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

mod nats_users;

#[derive(Parser)]
#[command(version, about = "Controller: REST API and job scheduling for the recording fleet")]
struct Args {
    /// TOML configuration file (see deploy/controller.toml); FLEET_* environment variables override it.
    #[arg(long, short, env = "FLEET_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the SHA-256 hash of an API key, for the `auth.keys` configuration. The key is read from
    /// standard input (its first line) unless given: an argument shows in `ps` and shell history.
    HashKey { key: Option<String> },
    /// Write nats-server users with least-privilege permissions, one per fleet process, and a fresh
    /// password file for each (see deploy/nats-server.conf).
    NatsUsers {
        /// Folder for `fleet-users.conf` (include it from the server's configuration) and `<name>.password`.
        #[arg(long)]
        out: PathBuf,
        /// The controller's user name.
        #[arg(long, default_value = "controller")]
        controller: String,
        /// Recorder-only nodes, by node id.
        #[arg(long = "recorder")]
        recorders: Vec<String>,
        /// Transcoder nodes, by node id.
        #[arg(long = "transcoder")]
        transcoders: Vec<String>,
        /// Nodes in mode `both`, by node id.
        #[arg(long = "both")]
        both: Vec<String>,
    },
    /// Print the API's OpenAPI document (what `/v1/openapi.json` serves; docs/openapi.json is a copy).
    Openapi,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    controller: ControllerConfig,
    nats: NatsConfig,
    queues: QueueSettings,
    /// Object storage, read only by the plugNmeet door to copy finished recordings under its `main_path`.
    storage: StorageConfig,
    log: LogConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fleet_runtime::tls::install_crypto_provider();
    let args = Args::parse();
    match args.command {
        Some(Command::HashKey { key }) => {
            let key = match key.filter(|k| k != "-") {
                Some(key) => key,
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line).context("reading the key from standard input")?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            anyhow::ensure!(!key.is_empty(), "no key given (pass it on standard input)");
            println!("{}", hash_key(&key));
            return Ok(());
        }
        Some(Command::NatsUsers { out, controller, recorders, transcoders, both }) => {
            let config: Config = fleet_runtime::config::load(args.config.as_deref())?;
            return nats_users::write(&config.nats.names, &out, controller, recorders, transcoders, both);
        }
        Some(Command::Openapi) => {
            println!("{}", fleet_controller::openapi::json());
            return Ok(());
        }
        None => {}
    }
    let config: Config = fleet_runtime::config::load(args.config.as_deref())?;
    fleet_runtime::logging::init(&config.log);
    let keys = ApiKeys::from_config(&config.controller.auth)?;
    let e2ee_seal = fleet_controller::e2ee::public_key(config.controller.e2ee_public_key.as_deref())?;
    let bus = Bus::connect(&config.nats, &config.queues, "controller", Topology::Own).await.context("connecting to NATS")?;
    let job_changes = state_events::prepare(&bus).await.context("reading the job bucket's changes")?;
    tokio::spawn(state_events::run(bus.clone(), job_changes));
    let node_job_requests = node_requests::subscribe(&bus).await.context("subscribing to the nodes' job requests")?;
    tokio::spawn(node_requests::serve(bus.clone(), node_job_requests));
    let metrics = Arc::new(Metrics::default());
    let fleet_webhooks = Arc::new(webhooks::FleetWebhooks::new(config.controller.webhooks.clone(), metrics.clone()));
    event_sinks::prepare(&bus, fleet_webhooks.as_ref()).await.map_err(|e| anyhow::anyhow!("creating the webhook consumer: {e}"))?;
    tokio::spawn(event_sinks::run(bus.clone(), fleet_webhooks));

    config.controller.egress.check()?;
    config.controller.auto_record.check()?;
    let max = fleet_protocol::job::MAX_REDUNDANCY;
    anyhow::ensure!((1..=max).contains(&config.controller.default_redundancy), "controller.default_redundancy must be between 1 and {max}");
    if config.controller.egress.enabled && !config.controller.egress.webhook_urls.is_empty() {
        let egress_webhooks = Arc::new(egress::webhooks::EgressWebhooks::new(config.controller.egress.clone()));
        event_sinks::prepare(&bus, egress_webhooks.as_ref()).await.map_err(|e| anyhow::anyhow!("creating the egress webhook consumer: {e}"))?;
        tokio::spawn(event_sinks::run(bus.clone(), egress_webhooks));
    }
    let plugnmeet_door = if config.controller.plugnmeet.enabled {
        let storage = match config.controller.plugnmeet.main_path {
            Some(_) => Some(fleet_runtime::storage::Storage::from_config(&config.storage).await.context("opening storage")?),
            None => None,
        };
        Some(
            plugnmeet::Door::start(
                bus.clone(),
                config.controller.plugnmeet.clone(),
                storage,
                e2ee_seal.clone(),
                fleet_controller::jobs::Defaults::of(&config.controller),
            )
            .await
            .context("plugNmeet drop-in")?,
        )
    } else {
        None
    };

    let tls = match (&config.controller.tls_cert_file, &config.controller.tls_key_file) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!("[controller] tls_cert_file and tls_key_file go together: set both or neither"),
    };
    let listener =
        tokio::net::TcpListener::bind(&config.controller.listen).await.with_context(|| format!("listening on {}", config.controller.listen))?;
    tracing::info!(address = %listener.local_addr()?, https = tls.is_some(), "controller listening");
    let index = Arc::new(JobIndex::default());
    tokio::spawn({
        let (index, bus) = (index.clone(), bus.clone());
        async move { index.follow(bus).await }
    });
    tokio::spawn(failover::run(bus.clone(), index.clone(), config.controller.failover.clone(), metrics.clone()));
    tokio::spawn(retention::run(bus.clone(), index.clone(), config.controller.retention.clone()));
    // The recordings' storage, for links to finished files; without it the controller still runs.
    let storage = match fleet_runtime::storage::Storage::from_config(&config.storage).await {
        Ok(storage) => Some(storage),
        Err(err) => {
            tracing::warn!(%err, "cannot open the recordings' storage: links to recordings' files are off");
            None
        }
    };
    let media = Arc::new(fleet_controller::media::MediaLinks::new(storage));
    let state = AppState { bus, keys, metrics, config: Arc::new(config.controller), e2ee_seal, index, media };
    match tls {
        Some(acceptor) => tls::serve(listener, acceptor, router(state), fleet_runtime::process::shutdown_signal()).await,
        None => axum::serve(listener, router(state)).with_graceful_shutdown(fleet_runtime::process::shutdown_signal()).await?,
    }
    if let Some(door) = plugnmeet_door {
        door.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The sample configuration shipped in deploy/ loads: no key there that the code does not know.
    #[test]
    fn the_shipped_sample_configuration_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller.toml");
        let loaded: Result<super::Config, _> = fleet_runtime::config::load(Some(&path));
        assert!(loaded.is_ok(), "{}: {}", path.display(), loaded.err().map(|e| e.to_string()).unwrap_or_default());
    }
}
