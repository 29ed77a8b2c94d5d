//! Webhooks: a durable consumer on the events stream turns each job state change into a signed POST to
//! the job's `webhook_url`. Being durable, it catches up on events that happened while the controller
//! was down.
//!
//! Signature: `X-Fleet-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with the Unix
//! timestamp in `X-Fleet-Timestamp`. Receivers recompute it and reject stale timestamps (replays).
//! `X-Fleet-Delivery` (`<job id>-<n>`, n the state change's number in the job) is the same on every retry
//! and every redelivery: use it to de-duplicate.

use crate::config::WebhookConfig;
use crate::event_sinks::{Delivery, EventSink, StateEvent};
use crate::http_post;
use crate::metrics::Metrics;
use backon::Retryable;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The fleet's own webhooks, as an event sink: each state change of a job with a `webhook_url`, signed and
/// POSTed (concurrently: each carries its revision and a delivery id to de-duplicate with).
pub struct FleetWebhooks {
    config: WebhookConfig,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
}

impl FleetWebhooks {
    pub fn new(config: WebhookConfig, metrics: Arc<Metrics>) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(config.timeout_s)).build().expect("http client");
        Self { config, metrics, http }
    }
}

impl EventSink for FleetWebhooks {
    fn consumer_name(&self) -> &str {
        &self.config.consumer
    }

    fn delivery(&self) -> Delivery {
        Delivery::Concurrent
    }

    async fn handle(&self, event: StateEvent) {
        let StateEvent { job_id, state, seq, revision, at_ms, record } = event;
        self.metrics.state_transition(state, &record);
        let Some(url) = record.request.webhook_url.clone() else { return };
        if self.config.secret.is_empty() {
            tracing::warn!(%job_id, "webhook requested but no webhook secret is configured; not sent");
            return;
        }
        let event_name = format!("recording.{}", state.as_str());
        let body = serde_json::to_vec(&serde_json::json!({
            "event": event_name,
            "job_id": job_id,
            "state": state,
            "revision": revision,
            "at_ms": at_ms,
            "recording": record,
        }))
        .expect("webhook body serializes");
        let delivery = format!("{job_id}-{seq}");
        let delivered = deliver(&self.http, &self.config, &url, &event_name, &delivery, body).await;
        self.metrics.webhook_sent(delivered);
    }
}

async fn deliver(http: &reqwest::Client, config: &WebhookConfig, url: &str, event: &str, delivery: &str, body: Vec<u8>) -> bool {
    let post = || async {
        let timestamp = fleet_protocol::time::now_ms() / 1000;
        let request = http
            .post(url)
            .header("content-type", "application/json")
            .header("x-fleet-event", event)
            .header("x-fleet-delivery", delivery)
            .header("x-fleet-timestamp", timestamp.to_string())
            .header("x-fleet-signature", sign(&config.secret, timestamp, &body))
            .body(body.clone());
        http_post::send(request).await
    };
    let schedule = fleet_runtime::retry::attempts(config.max_attempts.max(1) as usize, Duration::from_secs(1), Duration::from_secs(20));
    match post.retry(schedule).notify(|failed, _| tracing::warn!(delivery, url, %failed, "webhook failed; retrying")).await {
        Ok(()) => {
            tracing::debug!(delivery, url, "webhook delivered");
            true
        }
        Err(failed) => {
            tracing::error!(delivery, url, %failed, "webhook given up after {} attempts", config.max_attempts);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_timestamp_and_body() {
        let a = sign("secret", 100, b"{}");
        assert!(a.starts_with("v1=") && a.len() == 3 + 64);
        assert_ne!(a, sign("secret", 101, b"{}"));
        assert_ne!(a, sign("secret", 100, b"{ }"));
        assert_ne!(a, sign("other", 100, b"{}"));
    }
}
