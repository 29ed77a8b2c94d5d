use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerConfig {
    /// Address the API listens on.
    pub listen: String,
    /// HTTPS: a PEM certificate chain (leaf first) and its PEM private key. Both or neither; without
    /// them the API is plain HTTP (behind a TLS-terminating proxy, or on loopback).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub auth: AuthConfig,
    pub webhooks: WebhookConfig,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// plugNmeet drop-in recorder (off unless enabled).
    pub plugnmeet: crate::plugnmeet::config::PlugnmeetConfig,
    /// LiveKit Egress-compatible API (off unless enabled).
    pub egress: crate::egress::config::EgressConfig,
    /// Recordings started and stopped by livekit-server's webhooks (off unless enabled).
    pub auto_record: crate::auto_record::config::AutoRecordConfig,
    /// The transcoders' public key (base64, printed by `transcoder e2ee-keygen`): E2EE keys in requests are
    /// sealed to it. Absent: requests with plaintext keys are refused (ready-sealed keys still pass).
    pub e2ee_public_key: Option<String>,
    /// Finding killed recorders before AckWait.
    pub failover: crate::failover::FailoverConfig,
    /// How long ended jobs' records are kept.
    pub retention: crate::retention::RetentionConfig,
    /// Recorders capturing each room at once when a request does not say (`redundancy`, 1 or 2); jobs
    /// with live outputs always have one.
    pub default_redundancy: u8,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            tls_cert_file: None,
            tls_key_file: None,
            auth: AuthConfig::default(),
            webhooks: WebhookConfig::default(),
            max_body_bytes: 64 * 1024,
            plugnmeet: Default::default(),
            egress: Default::default(),
            auto_record: Default::default(),
            e2ee_public_key: None,
            failover: Default::default(),
            retention: Default::default(),
            default_redundancy: 1,
        }
    }
}

/// API keys are stored as SHA-256 hashes only (`controller hash-key KEY` prints one).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub keys: Vec<ApiKeyEntry>,
    /// A file of `name:sha256hex` lines, read at start; remove a line and restart to revoke a key.
    pub keys_file: Option<PathBuf>,
    /// Serve `/metrics` without a key (for Prometheus scrapers on a private network).
    pub public_metrics: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    pub name: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// HMAC-SHA256 signing secret. Jobs asking for a webhook are refused while it is empty.
    pub secret: String,
    pub max_attempts: u32,
    pub timeout_s: u64,
    /// Durable consumer on the events stream that feeds webhooks.
    pub consumer: String,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self { secret: String::new(), max_attempts: 6, timeout_s: 10, consumer: "controller-webhooks".into() }
    }
}
