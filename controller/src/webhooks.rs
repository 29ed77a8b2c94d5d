//! Webhooks: a durable consumer on the events stream turns each job state change into a signed POST to
//! the job's `webhook_url`. Being durable, it catches up on events that happened while the controller
//! was down.
//!
//! Signature: `X-Fleet-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with the Unix
//! timestamp in `X-Fleet-Timestamp`. Receivers recompute it and reject stale timestamps (replays).
//! `X-Fleet-Delivery` (`<job id>-<revision>`) is the same on every retry: use it to de-duplicate.

use crate::config::WebhookConfig;
use crate::metrics::Metrics;
use async_nats::jetstream::{AckKind, consumer};
use backon::Retryable;
use fleet_protocol::bus::Bus;
use fleet_protocol::events::{EventKind, JobEvent};
use futures::StreamExt;
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

pub async fn run(bus: Bus, config: WebhookConfig, metrics: Arc<Metrics>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(config.timeout_s)).build().expect("http client");
    loop {
        if let Err(err) = consume(&bus, &config, &metrics, &http).await {
            tracing::warn!(%err, "webhook consumer stopped; restarting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Creates the durable webhook consumer if it does not exist yet. Called before the API serves: a
/// consumer created later (it starts from new events) would miss the first events of jobs created in
/// between.
pub async fn prepare(bus: &Bus, config: &WebhookConfig) -> Result<(), async_nats::Error> {
    events_consumer(bus, &config.consumer, Delivery::Concurrent).await.map(|_| ())
}

/// How many events a consumer may hold unacknowledged.
pub(crate) enum Delivery {
    /// Many at once (fleet webhooks are delivered concurrently; each carries its revision).
    Concurrent,
    /// One: the next event comes only once this one is acknowledged, so reports keep the events' order
    /// however long one takes (and nothing behind it is redelivered meanwhile).
    OneAtATime,
}

/// Tells JetStream the event is still being worked on, until aborted.
pub(crate) fn keep_alive(message: async_nats::jetstream::Message) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let _ = message.ack_with(AckKind::Progress).await;
        }
    })
}

/// A durable consumer of every job event, named `name`; the front doors that report to their servers use
/// one each, so each catches up on its own after a restart.
pub(crate) async fn events_consumer(bus: &Bus, name: &str, delivery: Delivery) -> Result<consumer::PullConsumer, async_nats::Error> {
    let stream = bus.js.get_stream(&bus.names.events_stream).await?;
    let consumer = stream
        .get_or_create_consumer(
            name,
            consumer::pull::Config {
                durable_name: Some(name.to_string()),
                filter_subject: bus.names.events_wildcard(),
                // A new controller starts from now; an existing durable resumes where it stopped.
                deliver_policy: consumer::DeliverPolicy::New,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: match delivery {
                    Delivery::Concurrent => 1000,
                    Delivery::OneAtATime => 1,
                },
                ..Default::default()
            },
        )
        .await?;
    Ok(consumer)
}

async fn consume(bus: &Bus, config: &WebhookConfig, metrics: &Arc<Metrics>, http: &reqwest::Client) -> Result<(), async_nats::Error> {
    let consumer = events_consumer(bus, &config.consumer, Delivery::Concurrent).await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let event: JobEvent = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(%err, subject = %message.subject, "ignoring malformed event");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            }
        };
        let EventKind::State { state, revision, record } = &event.kind else {
            let _ = message.ack().await;
            continue;
        };
        metrics.state_transition(state.as_str());
        let Some(url) = record.request.webhook_url.clone() else {
            let _ = message.ack().await;
            continue;
        };
        if config.secret.is_empty() {
            tracing::warn!(job_id = %event.job_id, "webhook requested but no webhook secret is configured; not sent");
            let _ = message.ack().await;
            continue;
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "event": format!("recording.{}", state.as_str()),
            "job_id": event.job_id,
            "state": state,
            "revision": revision,
            "at_ms": event.at_ms,
            "recording": record,
        }))
        .expect("webhook body serializes");
        let delivery = format!("{}-{revision}", event.job_id);
        let (http, config, metrics) = (http.clone(), config.clone(), metrics.clone());
        let event_name = format!("recording.{}", state.as_str());
        tokio::spawn(async move {
            let delivered = deliver(&http, &config, &url, &event_name, &delivery, body, &message).await;
            metrics.inc(if delivered { "fleet_webhooks_delivered_total" } else { "fleet_webhooks_failed_total" });
            let _ = message.ack().await;
        });
    }
    Ok(())
}

async fn deliver(
    http: &reqwest::Client,
    config: &WebhookConfig,
    url: &str,
    event: &str,
    delivery: &str,
    body: Vec<u8>,
    message: &async_nats::jetstream::Message,
) -> bool {
    let post = || async {
        let timestamp = fleet_protocol::time::now_ms() / 1000;
        let sent = http
            .post(url)
            .header("content-type", "application/json")
            .header("x-fleet-event", event)
            .header("x-fleet-delivery", delivery)
            .header("x-fleet-timestamp", timestamp.to_string())
            .header("x-fleet-signature", sign(&config.secret, timestamp, &body))
            .body(body.clone())
            .send()
            .await;
        let failed = match sent {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => DeliveryFailed::Status(response.status()),
            Err(err) => DeliveryFailed::Transport(err),
        };
        // The event stays ours while we retry.
        let _ = message.ack_with(AckKind::Progress).await;
        Err(failed)
    };
    let schedule = fleet_protocol::retry::attempts(config.max_attempts.max(1) as usize, Duration::from_secs(1), Duration::from_secs(20));
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

#[derive(Debug, thiserror::Error)]
enum DeliveryFailed {
    #[error("{0}")]
    Transport(#[source] reqwest::Error),
    #[error("refused: {0}")]
    Status(reqwest::StatusCode),
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
