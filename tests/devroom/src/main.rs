//! `devroom`: run the LiveKit stand-in standalone, for the demo and for testing a recorder setup.

use anyhow::Context;
use clap::Parser;
use devroom::clips::ClipSet;
use devroom::scenario::Scenario;
use devroom::server::{Config, Server};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "A LiveKit-protocol server with synthetic participants, for tests and demos")]
struct Args {
    /// Address for signalling (WebSocket /rtc).
    #[arg(long, default_value = "127.0.0.1:7880", env = "DEVROOM_LISTEN")]
    listen: SocketAddr,
    /// Address of the media sockets; the only ICE candidate offered.
    #[arg(long, default_value = "127.0.0.1", env = "DEVROOM_RTC_IP")]
    rtc_ip: IpAddr,
    #[arg(long, default_value = "devkey", env = "DEVROOM_API_KEY")]
    api_key: String,
    #[arg(long, default_value = "devroom-secret-devroom-secret-0123", env = "DEVROOM_API_SECRET")]
    api_secret: String,
    /// Scenario file (TOML). Without one: room `demo` with three participants.
    #[arg(long, env = "DEVROOM_SCENARIO")]
    scenario: Option<PathBuf>,
    /// Where pre-encoded clips are cached.
    #[arg(long, default_value = "target/devroom-clips", env = "DEVROOM_CLIP_CACHE")]
    clip_cache: PathBuf,
    /// Writes the bound signalling address to this file once listening (for test harnesses).
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,str0m=warn".into()))
        .init();
    let args = Args::parse();
    let scenario = match &args.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::simple("demo", 3),
    };
    let cache = args.clip_cache.clone();
    let scenario_for_clips = scenario.clone();
    let clips = tokio::task::spawn_blocking(move || ClipSet::prepare(&scenario_for_clips, &cache)).await??;
    let server = Server::new(Config { api_key: args.api_key, api_secret: args.api_secret, scenario, rtc_ip: args.rtc_ip }, clips);
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "devroom listening (ws://{bound})");
    if let Some(path) = &args.ready_file {
        std::fs::write(path, bound.to_string())?;
    }
    axum::serve(listener, server.router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
