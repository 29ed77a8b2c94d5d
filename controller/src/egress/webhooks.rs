//! LiveKit-format webhooks for jobs started through the Egress API: `egress_started` when the job is
//! accepted, `egress_updated` as it records and finishes, `egress_ended` at the end. The body is the
//! `WebhookEvent` as LiveKit's JSON; `Authorization` carries a LiveKit access token whose `sha256` claim
//! is the body's SHA-256 (base64), which LiveKit's `WebhookReceiver`s verify.

use super::config::EgressConfig;
use super::convert;
use crate::event_sinks::{Delivery, EventSink, StateEvent};
use crate::http_post::{self, PostFailed};
use backon::Retryable;
use base64::Engine;
use fleet_protocol::job::Origin;
use fleet_protocol::{JobRecord, JobState};
use livekit_api::access_token::AccessToken;
use livekit_protocol as lk;
use sha2::{Digest, Sha256};
use std::time::Duration;

const EVENTS_CONSUMER: &str = "controller-egress-webhooks";
const ATTEMPTS: usize = 5;

pub fn event_name(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "egress_started",
        JobState::Starting | JobState::Recording | JobState::Finalizing | JobState::Transcoding => "egress_updated",
        JobState::Complete | JobState::Failed | JobState::Aborted => "egress_ended",
    }
}

pub fn body(state: JobState, seq: u32, record: &JobRecord, at_ms: u64) -> Vec<u8> {
    let event = lk::WebhookEvent {
        event: event_name(state).into(),
        egress_info: Some(convert::egress_info(record)),
        id: format!("EV_{}-{seq}", record.id),
        created_at: (at_ms / 1000) as i64,
        ..Default::default()
    };
    serde_json::to_vec(&event).expect("webhook events serialize")
}

/// The `Authorization` header value: a short-lived token binding the body's hash.
pub fn authorization(api_key: &str, api_secret: &str, body: &[u8]) -> Result<String, livekit_api::access_token::AccessTokenError> {
    let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
    AccessToken::with_api_key(api_key, api_secret).with_ttl(Duration::from_secs(300)).with_sha256(&digest).to_jwt()
}

/// LiveKit-format webhooks for jobs started through the Egress API, as an event sink: one event at a time,
/// to every configured URL, so receivers see each job's events in order.
pub struct EgressWebhooks {
    config: EgressConfig,
    http: reqwest::Client,
}

impl EgressWebhooks {
    pub fn new(config: EgressConfig) -> Self {
        Self { config, http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client") }
    }
}

impl EventSink for EgressWebhooks {
    fn consumer_name(&self) -> &str {
        EVENTS_CONSUMER
    }

    fn delivery(&self) -> Delivery {
        Delivery::OneAtATime
    }

    async fn handle(&self, event: StateEvent) {
        if !matches!(event.record.origin, Some(Origin::Egress { .. })) {
            return;
        }
        let body = body(event.state, event.seq, &event.record, event.at_ms);
        for url in &self.config.webhook_urls {
            deliver(&self.http, &self.config, url, &body, event_name(event.state)).await;
        }
    }
}

async fn deliver(http: &reqwest::Client, config: &EgressConfig, url: &str, body: &[u8], event: &str) {
    let post = || async {
        // Signed per attempt: the token is short-lived.
        let auth = authorization(&config.api_key, &config.api_secret, body).map_err(DeliveryFailed::Signing)?;
        let request = http.post(url).header("content-type", "application/webhook+json").header("authorization", auth).body(body.to_vec());
        Ok(http_post::send(request).await?)
    };
    let result = post
        .retry(fleet_runtime::retry::attempts(ATTEMPTS, Duration::from_millis(500), Duration::from_secs(10)))
        .when(|failed| !matches!(failed, DeliveryFailed::Signing(_)))
        .notify(|failed, _| tracing::warn!(url, event, %failed, "egress webhook failed; retrying"))
        .await;
    if let Err(failed) = result {
        tracing::error!(url, event, %failed, "egress webhook given up");
    }
}

#[derive(Debug, thiserror::Error)]
enum DeliveryFailed {
    #[error("cannot sign LiveKit webhooks: {0}")]
    Signing(#[source] livekit_api::access_token::AccessTokenError),
    #[error(transparent)]
    Post(#[from] PostFailed),
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_api::access_token::TokenVerifier;
    use livekit_api::webhooks::WebhookReceiver;

    #[test]
    fn livekits_receiver_accepts_our_webhooks_and_rejects_tampering() {
        let request = serde_json::from_str(r#"{"room":"r"}"#).unwrap();
        let mut record = JobRecord::new(fleet_protocol::SafeId::parse("EG_abc").unwrap(), request, 1);
        record.state = JobState::Complete;
        let body = body(JobState::Complete, 9, &record, 2_000);
        let auth = authorization("key", "secret-secret", &body).unwrap();
        let receiver = WebhookReceiver::new(TokenVerifier::with_api_key("key", "secret-secret"));
        let event = receiver.receive(std::str::from_utf8(&body).unwrap(), &auth).unwrap();
        assert_eq!(event.event, "egress_ended");
        assert_eq!(event.egress_info.unwrap().status, lk::EgressStatus::EgressComplete as i32);
        let tampered = String::from_utf8(body).unwrap().replace("EG_abc", "EG_abd");
        assert!(receiver.receive(&tampered, &auth).is_err());
    }
}
