//! Configuration shared by every role, and the loader: built-in defaults, then a TOML file, then
//! environment variables (`FLEET_SECTION__KEY=value`, e.g. `FLEET_NATS__URL=nats://10.0.0.5:4222`).

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::path::{Path, PathBuf};

use fleet_protocol::names::FleetNames;

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }
}

/// Loads a role's configuration. `path` may be absent: the defaults then run a single-machine fleet.
pub fn load<T: DeserializeOwned + Serialize + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = path {
        if !path.exists() {
            return Err(ConfigError(format!("file {} does not exist", path.display())));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment
        // Only `FLEET_<SECTION>__<KEY>` variables configure; others of the prefix (`FLEET_CONFIG`, the test
        // harness's `FLEET_BIN_DIR`) are not configuration keys.
        .merge(Env::prefixed("FLEET_").filter(|key| key.as_str().contains("__")).split("__"))
        .extract()
        .map_err(|e| ConfigError(e.to_string()))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    pub url: String,
    /// Optional credentials file (NATS decentralised auth), user/password or token.
    pub credentials_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// The password in a file (as `controller nats-users` writes it), instead of `password`.
    pub password_file: Option<PathBuf>,
    pub token: Option<String>,
    /// Require TLS to the server; a custom CA may be given.
    pub tls_required: bool,
    pub tls_ca_file: Option<PathBuf>,
    pub names: FleetNames,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            credentials_file: None,
            user: None,
            password: None,
            password_file: None,
            token: None,
            tls_required: false,
            tls_ca_file: None,
            names: FleetNames::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    #[default]
    Local,
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub kind: StorageKind,
    /// Root directory for `kind = "local"`.
    pub local_root: PathBuf,
    /// Prefix put before every key (`<prefix>/<job id>/...`); may be empty.
    pub prefix: String,
    pub s3: S3Config,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { kind: StorageKind::Local, local_root: PathBuf::from("/var/lib/fleet/storage"), prefix: "recordings".into(), s3: S3Config::default() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Custom endpoint (MinIO, Garage, Ceph, ...); empty means AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most self-hosted servers.
    pub force_path_style: bool,
    /// Static credentials; when absent the usual AWS chain (environment, profile, instance role) is used.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// PEM CA certificate(s) trusted for an `https://` endpoint besides the system's (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Files at least this large (MiB) upload in parts: S3 refuses a single PUT above 5 GiB (a 720p
    /// recording passes that after about 3.8 hours), and a failed part is sent again alone.
    pub multipart_threshold_mb: u64,
    /// The size of each part (MiB; S3's minimum is 5).
    pub multipart_part_mb: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket: "recordings".into(),
            endpoint: None,
            region: "us-east-1".into(),
            force_path_style: true,
            access_key_id: None,
            secret_access_key: None,
            ca_file: None,
            multipart_threshold_mb: 64,
            multipart_part_mb: 16,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `fleet_recorder=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Human, level: "info".into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Sample {
        nats: NatsConfig,
        storage: StorageConfig,
    }

    #[test]
    // figment's Jail takes a closure returning its own (large) error type.
    #[allow(clippy::result_large_err)]
    fn file_then_environment_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[nats]\nurl = \"nats://file:1\"\n[storage]\nkind = \"s3\"\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("FLEET_STORAGE__PREFIX", "from-env");
            jail.set_env("FLEET_BIN_DIR", "/not/a/config/key");
            let cfg: Sample = load(Some(&file)).unwrap();
            assert_eq!(cfg.nats.url, "nats://file:1");
            assert_eq!(cfg.storage.kind, StorageKind::S3);
            assert_eq!(cfg.storage.prefix, "from-env");
            assert_eq!(cfg.nats.names.record_stream, "FLEET_RECORD");
            Ok(())
        });
    }

    #[test]
    fn missing_file_and_unknown_keys_are_errors() {
        assert!(load::<Sample>(Some(Path::new("/nonexistent/x.toml"))).is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[nats]\nurll = \"x\"\n").unwrap();
        assert!(load::<Sample>(Some(&file)).is_err());
    }
}
