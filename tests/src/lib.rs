//! Test harness: starts real servers (nats-server with JetStream, the s3s-fs S3 server that checks
//! signatures) and the fleet's own binaries as processes on free loopback ports, each logging to a file
//! whose tail is printed when a test fails.

pub mod api;
pub mod bench;
pub mod capture_bench;
pub mod chunks;
pub mod devroom;
pub mod frames;
pub mod livekit_server;
pub mod media;
pub mod netns;
pub mod plugnmeet_nats;
pub mod plugnmeet_server;
pub mod procs;
pub mod publisher;
pub mod rtmp;
pub mod sync;
pub mod tcp_relay;
pub mod wait;
pub mod webhook;

use api::Api;
use procs::{Proc, free_port, wait_for_port};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const API_KEY: &str = "test-api-key";
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";
pub const S3_ACCESS_KEY: &str = "fleet-test-access";
pub const S3_SECRET_KEY: &str = "fleet-test-secret-key";
pub const S3_BUCKET: &str = "recordings";

/// Where the fleet binaries are: `FLEET_BIN_DIR`, else the workspace's `target/debug`.
pub fn bin_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("FLEET_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        target.join("debug")
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first (deploy/dev.sh test does)", path.display());
    path
}

/// A real nats-server with JetStream and its own store directory.
pub struct Nats {
    pub port: u16,
    store: PathBuf,
    proc: Option<Proc>,
    logs: PathBuf,
    /// A configuration file (users and permissions), when the server has one.
    config: Option<PathBuf>,
}

impl Nats {
    pub fn start(dir: &Path) -> Self {
        Self::start_with_config(dir, None)
    }

    /// `config`: extra nats-server configuration, e.g. `include "users.conf"` (paths relative to `dir`).
    pub fn start_with_config(dir: &Path, config: Option<&str>) -> Self {
        let port = free_port();
        let config = config.map(|text| {
            let path = dir.join("nats-server.conf");
            std::fs::write(&path, text).unwrap();
            path
        });
        let mut nats = Self { port, store: dir.join("jetstream"), proc: None, logs: dir.to_path_buf(), config };
        nats.restart();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A JetStream cluster of `size` servers on loopback, each with its own store, routed to each other.
    pub fn start_cluster(dir: &Path, size: usize) -> Vec<Nats> {
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports.iter().map(|(_, route)| format!("\"nats-route://127.0.0.1:{route}\"")).collect();
        let members: Vec<Nats> = ports
            .iter()
            .enumerate()
            .map(|(i, (port, route))| {
                let member = dir.join(format!("nats-{}", i + 1));
                std::fs::create_dir_all(&member).unwrap();
                let config = member.join("nats-server.conf");
                let text = format!(
                    "server_name: n{}\ncluster {{\n  name: fleet-test\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                    i + 1,
                    routes.join(", ")
                );
                std::fs::write(&config, text).unwrap();
                Self { port: *port, store: member.join("jetstream"), proc: None, logs: member.clone(), config: Some(config) }
            })
            .collect();
        let mut members = members;
        for member in &mut members {
            member.spawn();
        }
        for member in &members {
            wait_for_port(member.port, Duration::from_secs(10));
        }
        members
    }

    /// The URLs of several servers, as the fleet's `[nats] url` takes them.
    pub fn urls(members: &[Nats]) -> String {
        members.iter().map(Nats::url).collect::<Vec<_>>().join(",")
    }

    /// The cluster member leading `stream` (asked of the cluster itself), among `members`.
    pub async fn leader_of<'a>(members: impl IntoIterator<Item = &'a mut Nats>, stream: &str) -> &'a mut Nats {
        let members: Vec<&'a mut Nats> = members.into_iter().collect();
        let urls: Vec<String> = members.iter().map(|m| m.url()).collect();
        let client = async_nats::connect(urls).await.unwrap();
        let mut found = async_nats::jetstream::new(client).get_stream(stream).await.unwrap();
        let leader = found.info().await.unwrap().cluster.clone().and_then(|c| c.leader).expect("a leader");
        members.into_iter().find(|m| m.is_named(&leader)).expect("the leader is one of the members")
    }

    /// The server name a cluster member runs under (`n1`, ...).
    pub fn is_named(&self, name: &str) -> bool {
        self.config.as_ref().is_some_and(|c| std::fs::read_to_string(c).unwrap_or_default().contains(&format!("server_name: {name}\n")))
    }

    /// Starts (again) on the same port and store.
    pub fn restart(&mut self) {
        self.spawn();
        wait_for_port(self.port, Duration::from_secs(10));
    }

    fn spawn(&mut self) {
        self.proc = None;
        let (port, store) = (self.port.to_string(), self.store.to_string_lossy().to_string());
        let mut args = vec!["-js", "-a", "127.0.0.1", "-p", &port, "-sd", &store];
        let config = self.config.as_ref().map(|c| c.to_string_lossy().to_string());
        if let Some(config) = &config {
            args.extend(["-c", config]);
        }
        self.proc = Some(Proc::spawn("nats-server", Path::new("nats-server"), &args, &[], &self.logs));
    }

    pub fn kill(&mut self) {
        self.proc = None;
    }
}

/// The s3s-fs S3 server (SigV4-checking) with one bucket.
pub struct S3 {
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl S3 {
    pub fn start(dir: &Path) -> Self {
        let mut s3 = Self { port: free_port(), dir: dir.to_path_buf(), proc: None };
        s3.restart();
        s3
    }

    /// An outage: the server is killed; `restart` brings it back on the same port and files.
    pub fn kill(&mut self) {
        self.proc = None;
    }

    pub fn restart(&mut self) {
        self.proc = None;
        let (dir, port) = (&self.dir, self.port);
        let root = dir.join("s3-root");
        std::fs::create_dir_all(root.join(S3_BUCKET)).unwrap();
        let proc = Proc::spawn(
            "s3s-fs",
            Path::new("s3s-fs"),
            &[
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                S3_ACCESS_KEY,
                "--secret-key",
                S3_SECRET_KEY,
                &root.to_string_lossy(),
            ],
            &[],
            dir,
        );
        wait_for_port(port, Duration::from_secs(10));
        self.proc = Some(proc);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(S3_ACCESS_KEY, S3_SECRET_KEY, None, None, "test"))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub async fn get(&self, key: &str) -> Vec<u8> {
        let object = self.client().await.get_object().bucket(S3_BUCKET).key(key).send().await.unwrap();
        object.body.collect().await.unwrap().into_bytes().to_vec()
    }
}

/// Where a fleet stores recordings.
#[derive(Clone)]
pub enum StorageSetup {
    Local(PathBuf),
    /// `ca_file`: the private CA an `https://` endpoint's certificate comes from.
    S3 {
        endpoint: String,
        ca_file: Option<PathBuf>,
    },
}

impl StorageSetup {
    fn toml(&self) -> String {
        match self {
            StorageSetup::Local(root) => format!("[storage]\nkind = \"local\"\nlocal_root = \"{}\"\nprefix = \"recordings\"\n", root.display()),
            StorageSetup::S3 { endpoint, ca_file } => format!(
                "[storage]\nkind = \"s3\"\nprefix = \"recordings\"\n[storage.s3]\nbucket = \"{S3_BUCKET}\"\nendpoint = \"{endpoint}\"\nforce_path_style = true\naccess_key_id = \"{S3_ACCESS_KEY}\"\nsecret_access_key = \"{S3_SECRET_KEY}\"\n{}",
                ca_file.as_ref().map(|ca| format!("ca_file = \"{}\"\n", ca.display())).unwrap_or_default()
            ),
        }
    }
}

/// Writes role configs and starts fleet processes against one NATS server.
pub struct Fleet {
    pub dir: PathBuf,
    pub nats_url: String,
    pub storage: StorageSetup,
    /// Appended to every recorder's config (e.g. `[recorder.livekit]` for a devroom).
    pub recorder_extra: String,
    /// Added to every recorder's `[recorder]` section (e.g. `max_spool_mb = 1`).
    pub recorder_settings: String,
    /// Appended to every `[transcoder]` section (transcoder nodes and recorders in mode both).
    pub transcoder_extra: String,
    /// Appended to the controller's config (front doors, `[storage]`).
    pub controller_extra: String,
    /// Added to the controller's `[controller]` section (e.g. `e2ee_public_key = "..."`).
    pub controller_settings: String,
    /// The controller's webhook secret; without one it refuses jobs that ask for webhooks.
    pub webhook_secret: Option<String>,
    /// Where `controller nats-users` wrote the passwords, when NATS requires each process's own login
    /// (the controller logs in as `controller`, nodes by node id).
    pub nats_logins: Option<PathBuf>,
    /// The CA every process trusts for a NATS server that requires TLS.
    pub nats_tls_ca: Option<PathBuf>,
    /// The controller's HTTPS certificate chain and key.
    pub controller_tls: Option<(PathBuf, PathBuf)>,
    /// Appended to every process's config (e.g. `[queues]\nreplicas = 3\n` on a NATS cluster).
    pub common_extra: String,
    /// The recorders' admission limit: 1.0 (none) in tests, so a loaded test machine never holds a job.
    pub recorder_max_cpu_load: f64,
}

impl Fleet {
    pub fn new(dir: &Path, nats: &Nats, storage: StorageSetup) -> Self {
        Self {
            dir: dir.to_path_buf(),
            nats_url: nats.url(),
            storage,
            recorder_extra: String::new(),
            recorder_settings: String::new(),
            transcoder_extra: String::new(),
            controller_extra: String::new(),
            controller_settings: String::new(),
            webhook_secret: Some(WEBHOOK_SECRET.to_string()),
            nats_logins: None,
            nats_tls_ca: None,
            controller_tls: None,
            common_extra: String::new(),
            recorder_max_cpu_load: 1.0,
        }
    }

    /// `login`: the process's NATS user when the fleet has logins.
    fn write_config(&self, name: &str, login: &str, body: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.toml"));
        let credentials = match &self.nats_logins {
            Some(dir) => format!("user = \"{login}\"\npassword_file = \"{}\"\n", dir.join(format!("{login}.password")).display()),
            None => String::new(),
        };
        let tls = match &self.nats_tls_ca {
            Some(ca) => format!("tls_required = true\ntls_ca_file = \"{}\"\n", ca.display()),
            None => String::new(),
        };
        let common = format!("[nats]\nurl = \"{}\"\n{credentials}{tls}[log]\nlevel = \"info\"\n{}", self.nats_url, self.common_extra);
        std::fs::write(&path, format!("{common}{body}")).unwrap();
        path
    }

    /// Starts a controller on `port` (pick one with [`free_port`] to restart on the same address).
    pub fn controller(&self, port: u16) -> Proc {
        let hash = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(API_KEY.as_bytes()))
        };
        let config = self.write_config(
            "controller",
            "controller",
            &format!(
                "[controller]\nlisten = \"127.0.0.1:{port}\"\n{}{}[[controller.auth.keys]]\nname = \"test\"\nsha256 = \"{hash}\"\n{}{}{}",
                self.controller_settings,
                match &self.controller_tls {
                    Some((cert, key)) => format!("tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n", cert.display(), key.display()),
                    None => String::new(),
                },
                match &self.webhook_secret {
                    Some(secret) => format!("[controller.webhooks]\nsecret = \"{secret}\"\n"),
                    None => String::new(),
                },
                self.controller_extra,
                // The fleet's storage (links to recordings' files), unless the test gave the controller its own.
                if self.controller_extra.contains("[storage]") { String::new() } else { self.storage.toml() }
            ),
        );
        let proc = Proc::spawn("controller", &bin_path("controller"), &["--config", &config.to_string_lossy()], &[], &self.dir);
        wait_for_port(port, Duration::from_secs(20));
        proc
    }

    /// A recorder node; `mode` is `both` or `recorder-only`.
    pub fn recorder(&self, node_id: &str, mode: &str, slots: u32) -> Proc {
        let spool = self.dir.join(format!("spool-{node_id}"));
        let scratch = self.dir.join(format!("scratch-{node_id}"));
        let config = self.write_config(
            &format!("recorder-{node_id}"),
            node_id,
            &format!(
                "{}[recorder]\nslots = {slots}\nmax_cpu_load = {:?}\nspool_dir = \"{}\"\nsegment_seconds = 2\n{}[recorder.test_source]\nwidth = 320\nheight = 180\nvideo_bitrate_bps = 300000\n[transcoder]\nmax_cpu_load = 1.0\nscratch_dir = \"{}\"\n{}{}",
                self.storage.toml(),
                self.recorder_max_cpu_load,
                spool.display(),
                self.recorder_settings,
                scratch.display(),
                self.transcoder_extra,
                self.recorder_extra
            ),
        );
        Proc::spawn(node_id, &bin_path("recorder"), &["--config", &config.to_string_lossy(), "--mode", mode, "--node-id", node_id], &[], &self.dir)
    }

    pub fn transcoder(&self, node_id: &str) -> Proc {
        let scratch = self.dir.join(format!("scratch-{node_id}"));
        let config = self.write_config(
            &format!("transcoder-{node_id}"),
            node_id,
            &format!("{}[transcoder]\nmax_cpu_load = 1.0\nscratch_dir = \"{}\"\n{}", self.storage.toml(), scratch.display(), self.transcoder_extra),
        );
        Proc::spawn(node_id, &bin_path("transcoder"), &["--config", &config.to_string_lossy(), "--node-id", node_id], &[], &self.dir)
    }
}

/// NATS, a controller and local storage in a fresh directory; tests add the nodes they need.
/// Fields drop in order: processes first, the directory they write to last.
pub struct Setup {
    pub controller: Option<Proc>,
    pub nats: Nats,
    /// The other servers when NATS is a cluster.
    pub nats_peers: Vec<Nats>,
    pub fleet: Fleet,
    pub api: Api,
    pub root: std::path::PathBuf,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn local() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("storage");
        Self::with_storage(dir, StorageSetup::Local(root.clone()), root)
    }

    /// With `FLEET_KEEP_TEST_DIRS` set, the test's folder (storage, logs, outputs) outlives it, for a
    /// failure to be looked into.
    pub fn with_storage(dir: tempfile::TempDir, storage: StorageSetup, root: std::path::PathBuf) -> Self {
        let nats = Nats::start(dir.path());
        let fleet = Fleet::new(dir.path(), &nats, storage);
        Self::assemble(dir, nats, fleet, root)
    }

    /// Local storage and a 3-server JetStream cluster; every process is given all three servers, and
    /// every stream and bucket has 3 replicas.
    pub fn local_on_nats_cluster() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("storage");
        Self::on_nats_cluster(dir, StorageSetup::Local(root.clone()), root)
    }

    /// [`Self::local_on_nats_cluster`] with the given storage.
    pub fn on_nats_cluster(dir: tempfile::TempDir, storage: StorageSetup, root: PathBuf) -> Self {
        let mut members = Nats::start_cluster(dir.path(), 3);
        let mut fleet = Fleet::new(dir.path(), &members[0], storage);
        fleet.nats_url = Nats::urls(&members);
        fleet.common_extra = "[queues]\nreplicas = 3\n".into();
        let first = members.remove(0);
        let mut setup = Self::assemble(dir, first, fleet, root);
        setup.nats_peers = members;
        setup
    }

    /// Local storage and a NATS server that requires logins: `controller nats-users` makes one user per
    /// process (the controller, and nodes by id and role), and each process logs in as its own.
    pub fn local_with_nats_logins(recorders: &[&str], transcoders: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let logins = dir.path().join("nats-users");
        let mut command = std::process::Command::new(bin_path("controller"));
        command.arg("nats-users").arg("--out").arg(&logins);
        for id in recorders {
            command.args(["--recorder", id]);
        }
        for id in transcoders {
            command.args(["--transcoder", id]);
        }
        let status = command.status().unwrap();
        assert!(status.success(), "controller nats-users failed");
        let nats = Nats::start_with_config(dir.path(), Some("include \"nats-users/fleet-users.conf\"\n"));
        let root = dir.path().join("storage");
        let mut fleet = Fleet::new(dir.path(), &nats, StorageSetup::Local(root.clone()));
        fleet.nats_logins = Some(logins);
        Self::assemble(dir, nats, fleet, root)
    }

    /// A NATS server that takes TLS only and a controller that serves HTTPS only, with certificates of
    /// the test CA in `certs`, which every process is told to trust.
    pub fn over_tls(dir: tempfile::TempDir, certs: &TestCertificates, storage: StorageSetup, root: PathBuf) -> Self {
        let nats = Nats::start_with_config(
            dir.path(),
            Some(&format!("tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n", certs.cert.display(), certs.key.display())),
        );
        let mut fleet = Fleet::new(dir.path(), &nats, storage);
        fleet.nats_url = nats.url().replacen("nats://", "tls://", 1);
        fleet.nats_tls_ca = Some(certs.ca.clone());
        fleet.controller_tls = Some((certs.cert.clone(), certs.key.clone()));
        let mut setup = Self::assemble(dir, nats, fleet, root);
        setup.api = Api::https(setup.port, &std::fs::read(&certs.ca).unwrap());
        setup
    }

    fn assemble(mut dir: tempfile::TempDir, nats: Nats, fleet: Fleet, root: PathBuf) -> Self {
        if std::env::var_os("FLEET_KEEP_TEST_DIRS").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping the test folder {}", dir.path().display());
        }
        let port = free_port();
        let controller = Some(fleet.controller(port));
        Self { controller, nats, nats_peers: Vec::new(), fleet, api: Api::new(port), root, port, dir }
    }

    pub fn read_output(&self, record: &serde_json::Value) -> (Vec<u8>, serde_json::Value) {
        let id = record["id"].as_str().unwrap();
        let mp4 = std::fs::read(self.root.join(format!("recordings/{id}/{id}.mp4"))).unwrap();
        let manifest = serde_json::from_slice(&std::fs::read(self.root.join(format!("recordings/{id}/manifest.json"))).unwrap()).unwrap();
        (mp4, manifest)
    }
}

/// A transcoders' key pair for end-to-end encrypted rooms, made by `transcoder e2ee-keygen` in `dir`:
/// the public key (the controller's `e2ee_public_key`) and the private key's file.
pub fn transcoder_key_pair(dir: &Path) -> (String, PathBuf) {
    let private_file = dir.join("transcoders-e2ee.key");
    let out = std::process::Command::new(bin_path("transcoder"))
        .args(["e2ee-keygen", "--out"])
        .arg(&private_file)
        .output()
        .expect("transcoder e2ee-keygen runs");
    assert!(out.status.success(), "e2ee-keygen: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8(out.stdout).unwrap().trim().to_string(), private_file)
}

/// PEM files of a test CA and of a server certificate it signed for `localhost` and `127.0.0.1`.
pub struct TestCertificates {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn test_ca(dir: &Path) -> TestCertificates {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "fleet test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap().signed_by(&server_key, &ca).unwrap();
    let files = TestCertificates { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    std::fs::write(&files.ca, ca.pem()).unwrap();
    std::fs::write(&files.cert, server.pem()).unwrap();
    std::fs::write(&files.key, server_key.serialize_pem()).unwrap();
    files
}

/// Puts HTTPS in front of a loopback server that speaks plain HTTP (the S3 test server): terminates TLS
/// with `certs` on a port of its own and relays the bytes. Returns that port.
pub async fn tls_proxy(certs: &TestCertificates, to_port: u16) -> u16 {
    // The controller's own certificate loading; no ALPN, as the relayed server speaks HTTP/1.1 only.
    let config = fleet_controller::tls::server_config(&certs.cert, &certs.key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut client) = acceptor.accept(client).await else { return };
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to_port)).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    port
}
