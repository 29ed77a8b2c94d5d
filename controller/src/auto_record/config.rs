//! `[controller.auto_record]`: which rooms are recorded, and with what request. Pure: no I/O.

use fleet_protocol::JobRequest;
use fleet_protocol::job::InvalidRequest;
use fleet_runtime::config::ConfigError;
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

pub(crate) fn request_for(rule: &AutoRecordRule, room: &str) -> Result<JobRequest, InvalidRequest> {
    let mut request = rule.request.clone().unwrap_or_else(|| serde_json::json!({}));
    let object = request.as_object_mut().ok_or(InvalidRequest::from("request must be a table"))?;
    object.insert("room".into(), room.into());
    let request: JobRequest = serde_json::from_value(request).map_err(|e| InvalidRequest(e.to_string()))?;
    request.validate()?;
    Ok(request)
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
