use fleet_runtime::config::ConfigError;
use serde::{Deserialize, Serialize};

/// `[controller.egress]`: the LiveKit Egress-compatible API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    pub enabled: bool,
    /// The LiveKit API key and secret the callers sign their access tokens with.
    pub api_key: String,
    pub api_secret: String,
    /// Receivers of LiveKit-format webhooks (`egress_started`, `egress_updated`, `egress_ended`),
    /// signed as LiveKit signs them, for every job started through this API.
    pub webhook_urls: Vec<String>,
}

impl EgressConfig {
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.enabled && (self.api_key.is_empty() || self.api_secret.is_empty()) {
            return Err(ConfigError::new("controller.egress needs api_key and api_secret (LiveKit's)"));
        }
        if self.webhook_urls.iter().any(|u| !u.starts_with("http://") && !u.starts_with("https://")) {
            return Err(ConfigError::new("controller.egress.webhook_urls must be http(s) URLs"));
        }
        Ok(())
    }
}
