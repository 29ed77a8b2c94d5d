//! plugNmeet's own server (plugnmeet-server) with what it needs: MariaDB, Redis, and a NATS server set up
//! as plugNmeet asks (an account with JetStream, the server's nkey user, and an auth callout that the
//! server answers), all on free loopback ports in the test's folder.
//!
//! The server binary does not come from a registry this project installs from (the Go module proxy
//! refuses the module), so it is not built here: [`binary`] finds one an operator built, from
//! `FLEET_PLUGNMEET_SERVER` or `target/tools/plugnmeet-server`, and tests that need it say so when it
//! is missing.

use crate::livekit_server::{API_KEY, API_SECRET, LiveKitServer};
use crate::procs::{Proc, free_port, wait_for_port};
use hmac::{Hmac, Mac};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// plugNmeet's API key and secret (its `client` section): signs API calls, recorder logins and notifies.
pub const PNM_API_KEY: &str = "plugnmeet-test";
pub const PNM_API_SECRET: &str = "plugnmeet-test-secret-0123456789abcdef";
use crate::plugnmeet_nats::ACCOUNT;

/// The plugnmeet-server binary to test against, when one was built.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FLEET_PLUGNMEET_SERVER") {
        return Some(PathBuf::from(path));
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/plugnmeet-server");
    built.exists().then_some(built)
}

pub struct PlugnmeetServer {
    /// Dropped first: the server before what it uses.
    pub server: Proc,
    pub nats: Proc,
    _redis: Proc,
    _mariadb: Proc,
    pub port: u16,
    pub nats_port: u16,
    /// plugNmeet's `recording_files_path`: where it serves recordings from.
    pub recordings: PathBuf,
    /// The server's own NATS login (an nkey seed), for a test to look at its buckets.
    server_seed: String,
    dir: PathBuf,
    binary: PathBuf,
}

impl PlugnmeetServer {
    /// Starts MariaDB, Redis, NATS and plugnmeet-server (using `livekit`), webhooks to `webhook_url`.
    pub fn start(binary: &Path, dir: &Path, livekit: &LiveKitServer, webhook_url: &str) -> PlugnmeetServer {
        let dir = dir.join("plugnmeet");
        std::fs::create_dir_all(&dir).unwrap();
        let mariadb_port = free_port();
        let mariadb = start_mariadb(&dir, mariadb_port);
        let redis_port = free_port();
        let redis = Proc::spawn(
            "redis",
            Path::new("redis-server"),
            &["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", &dir.to_string_lossy()],
            &[],
            &dir,
        );
        wait_for_port(redis_port, Duration::from_secs(20));

        let keys = NatsKeys::new();
        let nats_port = free_port();
        let nats_config = dir.join("nats.conf");
        std::fs::write(&nats_config, keys.nats_config(nats_port, &dir.join("jetstream"))).unwrap();
        let nats = Proc::spawn("pnm-nats", Path::new("nats-server"), &["-c", &nats_config.to_string_lossy()], &[], &dir);
        wait_for_port(nats_port, Duration::from_secs(20));

        let recordings = dir.join("recording_files");
        let port = free_port();
        let config = dir.join("plugnmeet.yaml");
        let settings = Settings { port, dir: &dir, recordings: &recordings, livekit, redis_port, mariadb_port, nats_port, keys: &keys, webhook_url };
        std::fs::write(&config, settings.yaml()).unwrap();
        prepare_server_files(&dir);
        let server = spawn_server(binary, &dir, &config);
        wait_for_port(port, Duration::from_secs(60));
        PlugnmeetServer {
            server,
            nats,
            _redis: redis,
            _mariadb: mariadb,
            port,
            nats_port,
            recordings,
            server_seed: keys.server_user_seed,
            dir,
            binary: binary.to_path_buf(),
        }
    }

    /// Stops plugNmeet's NATS and starts it again on the same port and JetStream folder.
    pub fn restart_nats(&mut self) {
        stop(&mut self.nats);
        let config = self.dir.join("nats.conf");
        self.nats = Proc::spawn("pnm-nats", Path::new("nats-server"), &["-c", &config.to_string_lossy()], &[], &self.dir);
        wait_for_port(self.nats_port, Duration::from_secs(20));
    }

    /// Stops plugnmeet-server and starts it again on the same port, database and NATS.
    pub fn restart_server(&mut self) {
        stop(&mut self.server);
        self.server = spawn_server(&self.binary, &self.dir, &self.dir.join("plugnmeet.yaml"));
        wait_for_port(self.port, Duration::from_secs(60));
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.nats_port)
    }

    /// A connection as plugnmeet-server itself logs in (its nkey user, exempt from the callout).
    pub async fn server_connection(&self) -> async_nats::Client {
        async_nats::ConnectOptions::with_nkey(self.server_seed.clone()).connect(self.nats_url()).await.unwrap()
    }

    /// `[controller.plugnmeet]` for a fleet that records for this server, copying recordings under its
    /// recordings root in `sub_path`.
    pub fn controller_toml(&self, recorder_id: &str, sub_path: &str) -> String {
        format!(
            "[controller.plugnmeet]\nenabled = true\nnats_url = \"{}\"\nrecorder_id = \"{recorder_id}\"\napi_key = \"{PNM_API_KEY}\"\napi_secret = \"{PNM_API_SECRET}\"\nserver_url = \"{}\"\nmain_path = \"{}\"\nsub_path = \"{sub_path}\"\n",
            self.nats_url(),
            self.url(),
            self.recordings.display()
        )
    }

    /// An `/auth/...` call as plugNmeet's SDKs make it: JSON, `API-KEY`, and `HASH-SIGNATURE` = hex
    /// HMAC-SHA256 of the body with the API secret. Returns the JSON answer.
    pub async fn call(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let body = body.to_string();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(PNM_API_SECRET.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.url()))
            .header("API-KEY", PNM_API_KEY)
            .header("HASH-SIGNATURE", hex::encode(mac.finalize().into_bytes()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {status} {text:?}: {e}"))
    }

    /// A call a signed-in plugNmeet user makes (`/api/...`): protobuf body, the join token as
    /// `Authorization`. Returns the raw answer.
    pub async fn user_call(&self, path: &str, token: &str, body: Vec<u8>) -> Vec<u8> {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.url()))
            .header("Authorization", token)
            .header("content-type", "application/protobuf")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.bytes().await.unwrap().to_vec()
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("plugnmeet-server.log")).unwrap_or_default();
        log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// SIGTERM, then waits up to 10 s for the process to exit.
fn stop(proc: &mut Proc) {
    proc.signal_term();
    let exited = || if proc.exited() { Ok(()) } else { Err(String::new()) };
    let _ = crate::wait::poll_blocking(Duration::from_secs(10), Duration::from_millis(50), exited);
}

fn spawn_server(binary: &Path, dir: &Path, config: &Path) -> Proc {
    // plugNmeet checks at start that its whiteboard converters exist; recordings never call them.
    let path = format!("{}:{}", dir.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    Proc::spawn("plugnmeet-server", binary, &["--config", &config.to_string_lossy()], &[("PATH", &path)], dir)
}

/// What plugnmeet-server wants on disk besides its config: its web client's favicon and asset folders
/// (it serves the client; a missing favicon stops it at start), and the office and PDF converters it
/// checks for at start (stand-ins that refuse: no recording path calls them).
fn prepare_server_files(dir: &Path) {
    for folder in ["client/assets/imgs", "client/assets/css", "client/assets/js", "bin"] {
        std::fs::create_dir_all(dir.join(folder)).unwrap();
    }
    std::fs::write(dir.join("client/assets/imgs/favicon.ico"), b"").unwrap();
    for tool in ["mutool", "soffice", "img2pdf"] {
        let path = dir.join("bin").join(tool);
        std::fs::write(&path, "#!/bin/sh\necho \"not installed in this test\" >&2\nexit 1\n").unwrap();
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    }
}

/// A fresh MariaDB in `dir` on `port` with plugNmeet's database and user; the server makes its tables.
fn start_mariadb(dir: &Path, port: u16) -> Proc {
    let data = dir.join("mariadb");
    let socket = dir.join("mariadb.sock");
    let installed = Command::new("mariadb-install-db")
        .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
        .arg(format!("--datadir={}", data.display()))
        .output()
        .expect("mariadb-install-db runs (Debian's mariadb-server; deploy/dev.sh deps installs it)");
    assert!(installed.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&installed.stderr));
    let proc = Proc::spawn(
        "mariadb",
        Path::new("mariadbd"),
        &[
            "--no-defaults",
            "--user=root",
            &format!("--datadir={}", data.display()),
            &format!("--port={port}"),
            "--bind-address=127.0.0.1",
            &format!("--socket={}", socket.display()),
            &format!("--pid-file={}", dir.join("mariadb.pid").display()),
        ],
        &[],
        dir,
    );
    wait_for_port(port, Duration::from_secs(60));
    let sql = "CREATE DATABASE plugnmeet CHARACTER SET utf8mb4; CREATE USER 'plugnmeet'@'127.0.0.1' IDENTIFIED BY 'plugnmeet-db'; \
               GRANT ALL ON plugnmeet.* TO 'plugnmeet'@'127.0.0.1';";
    let created =
        Command::new("mariadb").args(["--no-defaults", "-uroot"]).arg(format!("--socket={}", socket.display())).args(["-e", sql]).output().unwrap();
    assert!(created.status.success(), "creating plugNmeet's database: {}", String::from_utf8_lossy(&created.stderr));
    proc
}

/// The nkeys of plugNmeet's NATS set-up, fresh per test: the server's user (exempt from the callout), the
/// callout's issuer (an account key) and its encryption key (a curve key).
struct NatsKeys {
    server_user_public: String,
    server_user_seed: String,
    issuer_public: String,
    issuer_seed: String,
    xkey_public: String,
    xkey_seed: String,
}

impl NatsKeys {
    fn new() -> Self {
        let user = nkeys::KeyPair::new_user();
        let issuer = nkeys::KeyPair::new_account();
        let xkey = nkeys::XKey::new();
        NatsKeys {
            server_user_public: user.public_key(),
            server_user_seed: user.seed().unwrap(),
            issuer_public: issuer.public_key(),
            issuer_seed: issuer.seed().unwrap(),
            xkey_public: xkey.public_key(),
            xkey_seed: xkey.seed().unwrap(),
        }
    }

    fn nats_config(&self, port: u16, store: &Path) -> String {
        crate::plugnmeet_nats::config_text(port, store, &self.server_user_public, &self.issuer_public, Some(&self.xkey_public))
    }
}

struct Settings<'a> {
    port: u16,
    dir: &'a Path,
    recordings: &'a Path,
    livekit: &'a LiveKitServer,
    redis_port: u16,
    mariadb_port: u16,
    nats_port: u16,
    keys: &'a NatsKeys,
    webhook_url: &'a str,
}

impl Settings<'_> {
    /// plugnmeet-server's configuration: what recording needs; notepad, SIP, insights and analytics off.
    fn yaml(&self) -> String {
        let d = self.dir.display();
        format!(
            r#"client:
  port: {port}
  debug: false
  path: "{d}/client"
  api_key: "{PNM_API_KEY}"
  secret: "{PNM_API_SECRET}"
  token_validity: 10m
  webhook_conf:
    enable: true
    url: "{webhook}"
    enable_for_per_meeting: false
room_default_settings:
  max_duration: 0
  max_participants: 0
  max_num_breakout_rooms: 6
  max_preloaded_wb_file_size: 5mb
log_settings:
  log_file: "{d}/plugnmeet-server.log"
  maxsize: 20
  maxbackups: 1
  maxage: 1
  log_level: "info"
livekit_info:
  host: "{livekit}"
  api_key: "{API_KEY}"
  secret: "{API_SECRET}"
livekit_sip_info:
  enabled: false
redis_info:
  host: "127.0.0.1:{redis_port}"
  username: ""
  password: ""
  db: 0
database_info:
  driver_name: mysql
  host: "127.0.0.1"
  port: {mariadb_port}
  username: "plugnmeet"
  password: "plugnmeet-db"
  db: "plugnmeet"
  prefix: "pnm_"
  charset: "utf8mb4"
  loc: "UTC"
  conn_max_lifetime: 4m
  max_open_conns: 10
nats_info:
  nats_urls: ["nats://127.0.0.1:{nats_port}"]
  nats_ws_urls: ["http://127.0.0.1:{nats_port}"]
  account: {ACCOUNT}
  nkey: "{server_seed}"
  auth_callout_issuer_private: "{issuer_seed}"
  auth_callout_xkey_private: "{xkey_seed}"
  num_replicas: 1
  room_stream_name: "pnm-room-stream"
  subjects:
    system_api_worker: "sysApiWorker"
    system_js_worker: "sysJsWorker"
    system_core_worker: "sysCoreWorker"
    system_public: "sysPublic"
    system_private: "sysPrivate"
    chat: "chat"
    whiteboard: "whiteboard"
    data_channel: "dataChannel"
  recorder:
    recorder_channel: "recorderChannel"
    recorder_info_kv: "pnm-recorderInfo"
    transcoding_jobs_subject: "pnm-RecorderTranscoderJobs"
upload_file_settings:
  path: "{d}/upload"
  max_size: 50
  max_size_whiteboard_file: 30
  keep_forever: false
  allowed_types: ["jpg", "png", "pdf"]
recorder_info:
  recording_files_path: "{recordings}"
  token_validity: 30m
  ping_timeout: 8s
  enable_del_recording_backup: false
shared_notepad:
  enabled: false
analytics_settings:
  enabled: false
artifacts_settings:
  storage_path: "{d}/artifacts"
  token_validity: 10m
  enable_del_artifacts_backup: false
"#,
            port = self.port,
            webhook = self.webhook_url,
            livekit = self.livekit.http_url(),
            redis_port = self.redis_port,
            mariadb_port = self.mariadb_port,
            nats_port = self.nats_port,
            server_seed = self.keys.server_user_seed,
            issuer_seed = self.keys.issuer_seed,
            xkey_seed = self.keys.xkey_seed,
            recordings = self.recordings.display(),
        )
    }
}
