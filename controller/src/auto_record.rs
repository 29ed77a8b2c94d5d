//! Auto-record: livekit-server's webhooks (signed as LiveKit signs them: a JWT of the server's API key
//! with the body's SHA-256) start a recording when a room matching a rule starts, and stop it when the
//! room finishes, as LiveKit's auto egress and plugNmeet's auto-record do. Configured in
//! `[controller.auto_record]`; served at `POST /livekit/webhook`.
//!
//! One job per room session: its id derives from the room's sid, so a redelivered `room_started` finds the
//! job it already made, and `room_finished` knows which job to stop.

use crate::api::AppState;
use crate::error::ApiError;
use crate::jobs;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use fleet_protocol::job::InvalidRequest;
use fleet_protocol::job::Origin;
use fleet_protocol::{JobRequest, SafeId};
use fleet_runtime::config::ConfigError;
use livekit_api::access_token::TokenVerifier;
use livekit_api::webhooks::WebhookReceiver;
use serde::{Deserialize, Serialize};

/// `[controller.auto_record]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoRecordConfig {
    pub enabled: bool,
    /// The LiveKit API key and secret livekit-server signs its webhooks with (its `webhook.api_key`).
    pub api_key: String,
    pub api_secret: String,
    /// A room is recorded when any rule matches it.
    pub rules: Vec<AutoRecordRule>,
}

/// A room matches when its name matches `room` (a pattern where `*` stands for any run of characters)
/// and, if `metadata_flag` is set, its metadata is a JSON object with that key set to `true`. A rule
/// with neither matches every room.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoRecordRule {
    pub room: Option<String>,
    pub metadata_flag: Option<String>,
    /// Overrides of the recording request (`layout`, `video_preset`, `audio_only`, ...), as the native
    /// API takes them; `room` is the room's.
    pub request: Option<serde_json::Value>,
}

impl AutoRecordConfig {
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.enabled && (self.api_key.is_empty() || self.api_secret.is_empty()) {
            return Err(ConfigError::new("controller.auto_record needs api_key and api_secret (those livekit-server signs its webhooks with)"));
        }
        for rule in &self.rules {
            if let Some(request) = &rule.request {
                request_for(rule, "room-name-check").map_err(|e| ConfigError::new(format!("controller.auto_record rule {request}: {e}")))?;
            }
        }
        Ok(())
    }

    /// The first rule that matches the room, if any.
    pub fn rule_for(&self, room: &str, metadata: &str) -> Option<&AutoRecordRule> {
        self.rules.iter().find(|rule| rule.matches(room, metadata))
    }
}

impl AutoRecordRule {
    fn matches(&self, room: &str, metadata: &str) -> bool {
        let name_ok = self.room.as_deref().is_none_or(|pattern| wildcard_match(pattern, room));
        let flag_ok = self.metadata_flag.as_deref().is_none_or(|flag| {
            serde_json::from_str::<serde_json::Value>(metadata).ok().and_then(|m| m.get(flag).and_then(|v| v.as_bool())) == Some(true)
        });
        name_ok && flag_ok
    }
}

/// `*` matches any run of characters (none included); everything else matches itself.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else { return pattern == text };
    if parts.len() == 1 {
        return pattern == text;
    }
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn request_for(rule: &AutoRecordRule, room: &str) -> Result<JobRequest, InvalidRequest> {
    let mut request = rule.request.clone().unwrap_or_else(|| serde_json::json!({}));
    let object = request.as_object_mut().ok_or(InvalidRequest::from("request must be a table"))?;
    object.insert("room".into(), room.into());
    let request: JobRequest = serde_json::from_value(request).map_err(|e| InvalidRequest(e.to_string()))?;
    request.validate()?;
    Ok(request)
}

/// The job of one room session (`auto_<room sid>`).
fn job_id(room_sid: &str) -> Result<SafeId, ApiError> {
    SafeId::parse(format!("auto_{room_sid}")).map_err(|e| ApiError::invalid(format!("room sid {room_sid:?}: {e}")))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/livekit/webhook", post(receive))
}

async fn receive(State(state): State<AppState>, headers: HeaderMap, body: String) -> Result<StatusCode, ApiError> {
    let config = &state.config.auto_record;
    if !config.enabled {
        return Err(ApiError::not_found("auto-record is not enabled on this controller (controller.auto_record.enabled)"));
    }
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let receiver = WebhookReceiver::new(TokenVerifier::with_api_key(&config.api_key, &config.api_secret));
    let event = receiver.receive(&body, auth).map_err(|e| ApiError::unauthorized(format!("webhook not signed by the LiveKit key: {e}")))?;
    let Some(room) = event.room else { return Ok(StatusCode::OK) };
    match event.event.as_str() {
        "room_started" => {
            let Some(rule) = config.rule_for(&room.name, &room.metadata) else {
                tracing::debug!(room = %room.name, "room started; no auto-record rule matches");
                return Ok(StatusCode::OK);
            };
            let request = request_for(rule, &room.name).map_err(|e| ApiError::invalid(e.to_string()))?;
            let origin = Origin::AutoRecord { room_sid: room.sid.clone() };
            match jobs::create_with_id(&state.bus, job_id(&room.sid)?, request, Some(origin)).await {
                Ok(record) => tracing::info!(job_id = %record.id, room = %room.name, "auto-record: recording the room"),
                Err(err) if err.is_conflict() => tracing::info!(room = %room.name, "auto-record: the room is recorded already"),
                Err(err) => return Err(err),
            }
        }
        "room_finished" => match jobs::stop(&state.bus, &job_id(&room.sid)?).await {
            Ok(record) => tracing::info!(job_id = %record.id, room = %room.name, "auto-record: the room finished; recording stops"),
            Err(err) => tracing::debug!(room = %room.name, reason = %err.message, "auto-record: nothing to stop"),
        },
        _ => {}
    }
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("class-*", "class-7b"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exact2"));
        assert!(!wildcard_match("class-*", "lobby"));
        assert!(!wildcard_match("a*bc", "abc-bd"));
        assert!(!wildcard_match("ab*ba", "aba"), "the prefix and suffix may not overlap");
    }

    #[test]
    fn rules_match_names_and_metadata_flags() {
        let config = AutoRecordConfig {
            enabled: true,
            api_key: "k".into(),
            api_secret: "s".into(),
            rules: vec![
                AutoRecordRule { room: Some("class-*".into()), ..Default::default() },
                AutoRecordRule {
                    metadata_flag: Some("record".into()),
                    request: Some(serde_json::json!({"layout": "speaker"})),
                    ..Default::default()
                },
            ],
        };
        assert!(config.check().is_ok());
        assert!(config.rule_for("class-1", "").is_some());
        assert!(config.rule_for("lobby", "").is_none());
        assert!(config.rule_for("lobby", r#"{"record": false}"#).is_none());
        assert!(config.rule_for("lobby", "not json").is_none());
        let rule = config.rule_for("lobby", r#"{"record": true, "title": "x"}"#).unwrap();
        let request = request_for(rule, "lobby").unwrap();
        assert_eq!(request.room, "lobby");
        assert_eq!(serde_json::to_value(request.layout).unwrap(), "speaker");
    }

    #[test]
    fn a_bad_rule_request_is_refused_at_start() {
        let config = AutoRecordConfig {
            enabled: true,
            api_key: "k".into(),
            api_secret: "s".into(),
            rules: vec![AutoRecordRule { request: Some(serde_json::json!({"layout": "mosaic"})), ..Default::default() }],
        };
        assert!(config.check().is_err());
        let unsigned = AutoRecordConfig { enabled: true, ..Default::default() };
        assert!(unsigned.check().is_err());
    }
}
