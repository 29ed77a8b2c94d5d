//! API-key authentication. Keys are compared as SHA-256 hashes in constant time; no plaintext key is
//! ever stored. A missing key is 401, a wrong one 403.

use crate::config::AuthConfig;
use crate::error::ApiError;
use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum KeyConfigError {
    #[error("no API keys configured: add [[auth.keys]] entries or auth.keys_file (`controller hash-key KEY` prints a hash)")]
    NoKeys,
    #[error("API key {0:?}: sha256 must be 64 hex characters")]
    BadHash(String),
    #[error("keys file {0}: {1}")]
    File(String, String),
}

#[derive(Clone)]
pub struct ApiKeys {
    keys: Vec<(String, [u8; 32])>,
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl ApiKeys {
    pub fn from_config(config: &AuthConfig) -> Result<Self, KeyConfigError> {
        let mut entries: Vec<(String, String)> = config.keys.iter().map(|k| (k.name.clone(), k.sha256.clone())).collect();
        if let Some(path) = &config.keys_file {
            let text = std::fs::read_to_string(path).map_err(|e| KeyConfigError::File(path.display().to_string(), e.to_string()))?;
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                let (name, hash) =
                    line.split_once(':').ok_or_else(|| KeyConfigError::File(path.display().to_string(), "lines must be name:sha256hex".into()))?;
                entries.push((name.trim().to_string(), hash.trim().to_string()));
            }
        }
        let mut keys = Vec::new();
        for (name, hash) in entries {
            let bytes = hex::decode(&hash).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or(KeyConfigError::BadHash(name.clone()))?;
            keys.push((name, bytes));
        }
        if keys.is_empty() {
            return Err(KeyConfigError::NoKeys);
        }
        Ok(Self { keys })
    }

    /// Returns the name of the key presented in `Authorization: Bearer` or `X-API-Key`.
    pub fn check(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let presented = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")))
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let Some(presented) = presented else {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "an API key is required (Authorization: Bearer <key>)"));
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compare against every key so timing does not reveal which one matched.
        let mut matched = None;
        for (name, hash) in &self.keys {
            if bool::from(hash.ct_eq(&digest)) {
                matched = Some(name.clone());
            }
        }
        matched.ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "forbidden", "the API key is not valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKeyEntry;
    use axum::response::IntoResponse;

    #[test]
    fn keys_are_checked_by_hash() {
        let config = AuthConfig { keys: vec![ApiKeyEntry { name: "ops".into(), sha256: hash_key("s3cret") }], ..Default::default() };
        let keys = ApiKeys::from_config(&config).unwrap();
        let mut headers = HeaderMap::new();
        let missing = keys.check(&headers).unwrap_err().into_response();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(missing.headers()["www-authenticate"], r#"Bearer realm="fleet""#, "a 401 names its scheme");
        headers.insert("authorization", "Bearer wrong".parse().unwrap());
        assert_eq!(keys.check(&headers).unwrap_err().status, StatusCode::FORBIDDEN);
        headers.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert_eq!(keys.check(&headers).unwrap(), "ops");
    }

    #[test]
    fn no_keys_or_bad_hashes_refuse_to_start() {
        assert!(matches!(ApiKeys::from_config(&AuthConfig::default()), Err(KeyConfigError::NoKeys)));
        let config = AuthConfig { keys: vec![ApiKeyEntry { name: "x".into(), sha256: "abc".into() }], ..Default::default() };
        assert!(matches!(ApiKeys::from_config(&config), Err(KeyConfigError::BadHash(_))));
    }
}
