//! End-to-end encrypted rooms (LiveKit's frame encryption): what a recording request may carry so the
//! transcoder can decrypt, and how it travels. A client sends the keys in plaintext (over TLS) or already
//! sealed; the controller seals plaintext keys to the transcoders' public key before the job exists, so the
//! record, NATS and storage only ever hold the sealed blob. Plaintext keys never serialize and never print.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most keys one request may carry (shared and per-participant together).
pub const MAX_KEYS: usize = 64;
/// Largest ratchet window: a receiver tries this many ratchets of a key before giving up on a frame.
pub const MAX_RATCHET_WINDOW: u32 = 256;
/// LiveKit's native SDKs try 16 ratchets (the JS SDK 8).
pub const DEFAULT_RATCHET_WINDOW: u32 = 16;
/// Longest passphrase or raw key (bytes, before encoding).
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest sealed blob accepted from a client (base64 characters).
pub const MAX_SEALED_CHARS: usize = 256 * 1024;

/// The `e2ee` part of a recording request.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct E2eeRequest {
    /// The room's keys in plaintext, as the client sends them. The controller seals them (to the
    /// transcoders' public key) before the job is stored: no record, event or answer ever shows them.
    #[serde(default, skip_serializing_if = "crate::never_serialized")]
    #[schema(write_only)]
    pub keys: Option<E2eeKeys>,
    /// The keys sealed to the transcoders' public key (base64 of an X25519 sealed box of the keys' JSON),
    /// set by the controller or sent ready-sealed by a client that never shows the controller its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 262144)]
    pub sealed_keys: Option<String>,
    /// Fail the job when an encrypted track has no key (default: record it as a placeholder tile and warn).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_keys: bool,
}

impl std::fmt::Debug for E2eeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2eeRequest")
            .field("keys", &self.keys.as_ref().map(|_| "<redacted>"))
            .field("sealed_keys", &self.sealed_keys.as_ref().map(|s| format!("<{} sealed characters>", s.len())))
            .field("require_keys", &self.require_keys)
            .finish()
    }
}

/// How a publisher turned its key material into the AES key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kdf {
    /// PBKDF2-HMAC-SHA256: passphrases (`setKey(string)` in the JS SDK; the Python/Rust SDKs' default).
    #[default]
    Pbkdf2,
    /// HKDF-SHA256: raw bytes given to the JS SDK's `setKey(ArrayBuffer)`, or `KeyDerivationFunction.HKDF`.
    Hkdf,
}

/// One key of a key ring: its index (the frame trailer names it) and its material.
#[derive(Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct E2eeKey {
    #[serde(default)]
    pub index: u8,
    /// The material as text (a passphrase: plugNmeet's room key, `shared_key=b"text"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 1024)]
    pub passphrase: Option<String>,
    /// The material as bytes, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 1400)]
    pub base64: Option<String>,
    #[serde(default)]
    pub kdf: Kdf,
}

impl std::fmt::Debug for E2eeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2eeKey").field("index", &self.index).field("kdf", &self.kdf).finish_non_exhaustive()
    }
}

/// The keys of a room: shared by everyone, and per participant (by identity), which win for their owner.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct E2eeKeys {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 64)]
    pub shared: Vec<E2eeKey>,
    /// Per-participant keys by identity; they win over shared keys for their owner.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub participants: BTreeMap<String, Vec<E2eeKey>>,
    /// Ratchets tried per key when a frame does not decrypt (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 256)]
    pub ratchet_window: Option<u32>,
    /// The KDF salt (LiveKit's default `LKFrameEncryptionKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub ratchet_salt: Option<String>,
}

impl std::fmt::Debug for E2eeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2eeKeys")
            .field("shared", &self.shared.len())
            .field("participants", &self.participants.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why an `e2ee` request is not valid. Never names key material.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("e2ee: {0}")]
pub struct InvalidE2ee(pub String);

impl E2eeKey {
    /// The key material's bytes, as the publisher's SDK was given them.
    pub fn material(&self) -> Result<Vec<u8>, InvalidE2ee> {
        use base64::Engine as _;
        match (&self.passphrase, &self.base64) {
            (Some(text), None) => Ok(text.as_bytes().to_vec()),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| InvalidE2ee(format!("key index {}: base64 is not valid base64", self.index))),
            _ => Err(InvalidE2ee(format!("key index {}: give exactly one of passphrase or base64", self.index))),
        }
    }
}

impl E2eeKeys {
    pub fn ratchet_window(&self) -> u32 {
        self.ratchet_window.unwrap_or(DEFAULT_RATCHET_WINDOW)
    }

    pub fn key_count(&self) -> usize {
        self.shared.len() + self.participants.values().map(Vec::len).sum::<usize>()
    }

    pub fn validate(&self) -> Result<(), InvalidE2ee> {
        if self.key_count() == 0 {
            return Err(InvalidE2ee("keys holds no key: give shared or participants keys".into()));
        }
        if self.key_count() > MAX_KEYS {
            return Err(InvalidE2ee(format!("at most {MAX_KEYS} keys")));
        }
        if self.ratchet_window.is_some_and(|w| w > MAX_RATCHET_WINDOW) {
            return Err(InvalidE2ee(format!("ratchet_window must be at most {MAX_RATCHET_WINDOW}")));
        }
        if self.ratchet_salt.as_ref().is_some_and(|s| s.is_empty() || s.len() > 256) {
            return Err(InvalidE2ee("ratchet_salt must be 1-256 bytes".into()));
        }
        for identity in self.participants.keys() {
            if identity.is_empty() || identity.len() > 256 || identity.chars().any(char::is_control) {
                return Err(InvalidE2ee("participants: identities must be 1-256 characters without control characters".into()));
            }
        }
        for ring in std::iter::once(&self.shared).chain(self.participants.values()) {
            let mut seen = std::collections::HashSet::new();
            for key in ring {
                let material = key.material()?;
                if material.is_empty() || material.len() > MAX_KEY_BYTES {
                    return Err(InvalidE2ee(format!("key index {}: material must be 1-{MAX_KEY_BYTES} bytes", key.index)));
                }
                if !seen.insert(key.index) {
                    return Err(InvalidE2ee(format!("key index {} is given twice for the same owner", key.index)));
                }
            }
        }
        Ok(())
    }
}

impl E2eeRequest {
    /// Checks the request's shape: exactly one of `keys` and `sealed_keys`, keys that can be used.
    pub fn validate(&self) -> Result<(), InvalidE2ee> {
        match (&self.keys, &self.sealed_keys) {
            (Some(keys), None) => keys.validate(),
            (None, Some(sealed)) => {
                use base64::Engine as _;
                if sealed.len() > MAX_SEALED_CHARS || base64::engine::general_purpose::STANDARD.decode(sealed).is_err() {
                    return Err(InvalidE2ee(format!("sealed_keys must be base64, at most {MAX_SEALED_CHARS} characters")));
                }
                Ok(())
            }
            (Some(_), Some(_)) => Err(InvalidE2ee("give keys or sealed_keys, not both".into())),
            (None, None) => Err(InvalidE2ee("give keys (sealed by the controller) or sealed_keys".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passphrase(index: u8, text: &str) -> E2eeKey {
        E2eeKey { index, passphrase: Some(text.into()), base64: None, kdf: Kdf::Pbkdf2 }
    }

    #[test]
    fn plaintext_keys_never_serialize_or_print() {
        let request = E2eeRequest {
            keys: Some(E2eeKeys { shared: vec![passphrase(0, "hunter2-secret")], ..Default::default() }),
            sealed_keys: None,
            require_keys: false,
        };
        let json = serde_json::to_string(&request).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(!format!("{request:?}").contains("hunter2"));
        assert!(!format!("{:?}", request.keys).contains("hunter2"));
    }

    #[test]
    fn requests_are_checked() {
        let keys = |keys: Vec<E2eeKey>| E2eeRequest { keys: Some(E2eeKeys { shared: keys, ..Default::default() }), ..Default::default() };
        assert!(keys(vec![passphrase(0, "a")]).validate().is_ok());
        assert!(keys(vec![]).validate().is_err());
        assert!(keys(vec![passphrase(0, "a"), passphrase(0, "b")]).validate().is_err());
        assert!(keys(vec![passphrase(0, "")]).validate().is_err());
        let both = E2eeKey { index: 0, passphrase: Some("a".into()), base64: Some("YQ==".into()), kdf: Kdf::Hkdf };
        assert!(keys(vec![both]).validate().is_err());
        let bad_base64 = E2eeKey { index: 0, passphrase: None, base64: Some("!!".into()), kdf: Kdf::Hkdf };
        let error = keys(vec![bad_base64]).validate().unwrap_err().to_string();
        assert!(error.contains("base64") && !error.contains("!!"), "{error}");
        assert!(E2eeRequest::default().validate().is_err());
        let sealed = E2eeRequest { sealed_keys: Some("c2VhbGVk".into()), ..Default::default() };
        assert!(sealed.validate().is_ok());
        let parsed: Result<E2eeRequest, _> = serde_json::from_str(r#"{"keys":{"shared":[{"passphrase":"x","colour":1}]}}"#);
        assert!(parsed.is_err(), "unknown fields are refused");
    }
}
