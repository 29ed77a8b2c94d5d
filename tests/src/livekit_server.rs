//! The real livekit-server (LiveKit's SFU, built by `deploy/dev.sh deps` into `target/tools`) on free
//! ports with a config file of the test's own.

use crate::procs::{Proc, free_port, wait_for_port};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const API_KEY: &str = "lk-test-key";
pub const API_SECRET: &str = "lk-test-secret-0123456789abcdef0123456789";

/// Where the project's scripts put the tools they build (livekit-server, lk).
pub fn tool_path(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools").join(name);
    assert!(path.exists(), "{} is missing: run `deploy/dev.sh deps` (builds the real LiveKit parts)", path.display());
    path
}

/// Settings a test may change; `Default` is a server that creates rooms on first join.
#[derive(Clone)]
pub struct LiveKitOptions {
    /// The address publishers reach for media: [`crate::netns::SERVER_IP`] inside a test's namespace.
    pub node_ip: String,
    pub auto_create: bool,
    /// Seconds an empty room lives (`room.empty_timeout`) and after the last participant left
    /// (`room.departure_timeout`).
    pub empty_timeout_s: u32,
    pub departure_timeout_s: u32,
    /// Webhook receiver (signed with the server's API key).
    pub webhook_url: Option<String>,
    /// Media over ICE/TCP only (the server's `rtc.force_tcp`, "for testing, disable UDP"); implies
    /// `node_ip_only`.
    pub force_tcp: bool,
    /// Candidates gathered on `node_ip` alone (no loopback candidate). Needed for ICE/TCP here: with every
    /// interface of the namespace rewritten to `node_ip`, pion keeps one TCP candidate of several, and a
    /// TCP connection to `node_ip` lands on an address its TCP mux does not serve.
    pub node_ip_only: bool,
}

impl Default for LiveKitOptions {
    fn default() -> Self {
        LiveKitOptions {
            node_ip: "127.0.0.1".into(),
            auto_create: true,
            empty_timeout_s: 60,
            departure_timeout_s: 20,
            webhook_url: None,
            force_tcp: false,
            node_ip_only: false,
        }
    }
}

pub struct LiveKitServer {
    pub proc: Proc,
    pub port: u16,
}

impl LiveKitServer {
    pub fn start(dir: &Path, options: &LiveKitOptions) -> LiveKitServer {
        let (port, rtc_tcp, rtc_udp) = (free_port(), free_port(), free_udp_port());
        let webhook = match &options.webhook_url {
            Some(url) => format!("webhook:\n  api_key: {API_KEY}\n  urls:\n    - {url}\n"),
            None => String::new(),
        };
        let mut candidates = if options.force_tcp || options.node_ip_only {
            format!("  ips:\n    includes:\n      - {}/32\n", options.node_ip)
        } else {
            "  enable_loopback_candidate: true\n".into()
        };
        if options.force_tcp {
            candidates.push_str("  force_tcp: true\n");
        }
        let config = format!(
            "port: {port}\nrtc:\n  tcp_port: {rtc_tcp}\n  udp_port: {rtc_udp}\n  use_external_ip: false\n  node_ip: {node_ip}\n{candidates}keys:\n  {API_KEY}: {API_SECRET}\nroom:\n  auto_create: {auto_create}\n  \
             empty_timeout: {empty}\n  departure_timeout: {departure}\nlogging:\n  level: {log_level}\n  pion_level: {pion_level}\n{webhook}",
            node_ip = options.node_ip,
            auto_create = options.auto_create,
            empty = options.empty_timeout_s,
            departure = options.departure_timeout_s,
            // `FLEET_LIVEKIT_LOG_LEVEL=debug` for the server and its pion (ICE, DTLS) logs when a test needs them.
            log_level = std::env::var("FLEET_LIVEKIT_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
            pion_level = std::env::var("FLEET_LIVEKIT_LOG_LEVEL").unwrap_or_else(|_| "error".into()),
        );
        let path = dir.join("livekit.yaml");
        std::fs::write(&path, config).unwrap();
        let proc = Proc::spawn_remote("livekit-server", &tool_path("livekit-server"), &["--config", &path.to_string_lossy()], &[], dir);
        wait_for_port(port, Duration::from_secs(30));
        LiveKitServer { proc, port }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `[recorder.livekit]` pointing at this server.
    pub fn recorder_toml(&self, empty_timeout_s: u64) -> String {
        format!(
            "[recorder.livekit]\nurl = \"{}\"\napi_key = \"{API_KEY}\"\napi_secret = \"{API_SECRET}\"\nempty_timeout_s = {empty_timeout_s}\n",
            self.url()
        )
    }

    pub fn room_client(&self) -> livekit_api::services::room::RoomClient {
        livekit_api::services::room::RoomClient::with_api_key(&self.http_url(), API_KEY, API_SECRET)
    }

    /// The room as RoomService `ListRooms` shows it, if it exists.
    pub async fn room(&self, name: &str) -> Option<livekit_protocol::Room> {
        self.room_client().list_rooms(vec![name.to_string()]).await.ok()?.into_iter().find(|r| r.name == name)
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}
