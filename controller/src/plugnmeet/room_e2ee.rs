//! A plugNmeet room's end-to-end encryption, as plugnmeet-server keeps it in the room's metadata
//! (`room_features.end_to_end_encryption_features`): off; on with a key the server generated (a
//! passphrase the web client gives LiveKit's `setKey(string)`, no ratchet), which the recording then uses;
//! or on with a key the users typed themselves, which no server ever sees: plugNmeet does not record those,
//! and neither does the drop-in.

use fleet_protocol::e2ee::{E2eeKey, E2eeKeys, E2eeRequest, Kdf};
use serde_json::Value;

/// plugNmeet's own words for a recording of a room with a self-inserted key (its client's
/// `notifications.cloud-recording-not-supported-self-key`).
pub const SELF_INSERTED_KEY_REFUSAL: &str = "Cloud recording is not available when using a custom security key.";

#[derive(PartialEq)]
pub enum RoomE2ee {
    Off,
    /// The server's key (a passphrase).
    ServerKey(String),
    SelfInsertedKey,
}

/// Never prints the key.
impl std::fmt::Debug for RoomE2ee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoomE2ee::Off => f.write_str("Off"),
            RoomE2ee::ServerKey(_) => f.write_str("ServerKey(<redacted>)"),
            RoomE2ee::SelfInsertedKey => f.write_str("SelfInsertedKey"),
        }
    }
}

/// Reads it from a `getActiveRoomInfo` answer (`room.room_info.metadata`, itself a JSON string). None
/// when the answer does not carry the room's metadata.
pub fn from_active_room_info(answer: &Value) -> Option<RoomE2ee> {
    let metadata: Value = serde_json::from_str(answer.pointer("/room/room_info/metadata")?.as_str()?).ok()?;
    let features =
        ["/room_features/end_to_end_encryption_features", "/roomFeatures/endToEndEncryptionFeatures"].iter().find_map(|path| metadata.pointer(path));
    let Some(features) = features else { return Some(RoomE2ee::Off) };
    let flag = |snake: &str, camel: &str| features.get(snake).or_else(|| features.get(camel)).and_then(Value::as_bool).unwrap_or(false);
    if !flag("is_enabled", "isEnabled") {
        return Some(RoomE2ee::Off);
    }
    if flag("enabled_self_insert_encryption_key", "enabledSelfInsertEncryptionKey") {
        return Some(RoomE2ee::SelfInsertedKey);
    }
    let key = features.get("encryption_key").or_else(|| features.get("encryptionKey")).and_then(Value::as_str).filter(|k| !k.is_empty());
    Some(key.map_or(RoomE2ee::SelfInsertedKey, |key| RoomE2ee::ServerKey(key.to_string())))
}

/// The recording request's `e2ee` for the server's key: one shared passphrase, no ratchet (the web client
/// sets a ratchet window of 0 and never ratchets).
pub fn request_for(key: &str) -> E2eeRequest {
    E2eeRequest {
        keys: Some(E2eeKeys {
            shared: vec![E2eeKey { index: 0, passphrase: Some(key.to_string()), base64: None, kdf: Kdf::Pbkdf2 }],
            ratchet_window: Some(0),
            ..Default::default()
        }),
        sealed_keys: None,
        require_keys: false,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("reading the room's settings from plugnmeet-server: {0}")]
pub struct FetchError(#[from] reqwest::Error);

/// Asks plugnmeet-server (`/auth/room/getActiveRoomInfo`, signed like every API call) for the room's
/// encryption. `Ok(None)`: the server answered without the room's metadata (the room is not active).
pub async fn fetch(http: &reqwest::Client, server_url: &str, api_key: &str, api_secret: &str, room_id: &str) -> Result<Option<RoomE2ee>, FetchError> {
    let url = format!("{}/auth/room/getActiveRoomInfo", server_url.trim_end_matches('/'));
    let body = serde_json::to_vec(&serde_json::json!({ "room_id": room_id })).expect("JSON serializes");
    let answer: Value = http
        .post(&url)
        .header("content-type", "application/json")
        // plugNmeet waits for the start's answer: an unreachable server must not hold it long.
        .timeout(std::time::Duration::from_secs(3))
        .header("API-KEY", api_key)
        .header("HASH-SIGNATURE", super::notify::signature(api_secret, &body))
        .body(body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(from_active_room_info(&answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(features: Value) -> Value {
        let metadata = json!({ "room_title": "t", "room_features": { "end_to_end_encryption_features": features } });
        json!({ "status": true, "room": { "room_info": { "room_id": "r", "metadata": metadata.to_string() } } })
    }

    #[test]
    fn reads_plugnmeets_room_metadata() {
        let key = "uHFhodqIjMH9McOaDkIXQ9DzhBrM19vP";
        let server = answer(json!({ "is_enabled": true, "enabled_self_insert_encryption_key": false, "encryption_key": key }));
        assert_eq!(from_active_room_info(&server), Some(RoomE2ee::ServerKey(key.into())));
        let own = answer(json!({ "is_enabled": true, "enabled_self_insert_encryption_key": true }));
        assert_eq!(from_active_room_info(&own), Some(RoomE2ee::SelfInsertedKey));
        assert_eq!(from_active_room_info(&answer(json!({ "is_enabled": false }))), Some(RoomE2ee::Off));
        let camel = json!({ "room": { "room_info": { "metadata": json!({ "roomFeatures": { "endToEndEncryptionFeatures": { "isEnabled": true, "encryptionKey": "k" } } }).to_string() } } });
        assert_eq!(from_active_room_info(&camel), Some(RoomE2ee::ServerKey("k".into())));
        assert_eq!(from_active_room_info(&json!({ "status": false, "room": null })), None);
        let request = request_for(key);
        assert!(request.validate().is_ok());
        assert!(!serde_json::to_string(&request).unwrap().contains(key));
    }
}
