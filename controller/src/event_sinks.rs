//! Job state events to the servers that want them. Each sink (the fleet's own webhooks, LiveKit-format
//! webhooks for Egress jobs, plugNmeet's reports) reads the events stream through a durable consumer of its
//! own, so each catches up by itself after a restart; one loop, here, runs them all.

use async_nats::jetstream::{AckKind, consumer};
use fleet_protocol::events::{EventKind, JobEvent};
use fleet_protocol::{JobRecord, JobState, SafeId};
use fleet_runtime::bus::Bus;
use futures::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How many events a sink may hold unacknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Many at once (fleet webhooks are delivered concurrently; each carries its revision).
    Concurrent,
    /// One: the next event comes only once this one is handled, so reports keep the events' order however
    /// long one takes (and nothing behind it is redelivered meanwhile).
    OneAtATime,
}

/// One job state change, as a sink receives it.
#[derive(Debug, Clone)]
pub struct StateEvent {
    pub job_id: SafeId,
    pub state: JobState,
    /// Its number among the job's state changes: with the job id, what identifies the event.
    pub seq: u32,
    pub revision: u64,
    pub at_ms: u64,
    pub record: JobRecord,
}

pub trait EventSink: Send + Sync + 'static {
    /// The sink's durable consumer on the events stream.
    fn consumer_name(&self) -> &str;
    fn delivery(&self) -> Delivery;
    /// Handles one event; it is acknowledged when this returns (kept alive meanwhile).
    fn handle(&self, event: StateEvent) -> impl Future<Output = ()> + Send;
}

/// Creates the sink's durable consumer. Called before the API serves: a consumer created later (it starts
/// from new events) would miss the first events of jobs created in between.
pub async fn prepare(bus: &Bus, sink: &impl EventSink) -> Result<(), async_nats::Error> {
    events_consumer(bus, sink.consumer_name(), sink.delivery()).await.map(|_| ())
}

/// Feeds the sink for as long as the controller runs (the consumer is made again after an error).
pub async fn run<S: EventSink>(bus: Bus, sink: Arc<S>) {
    loop {
        if let Err(err) = consume(&bus, &sink).await {
            tracing::warn!(%err, consumer = sink.consumer_name(), "event consumer stopped; restarting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn consume<S: EventSink>(bus: &Bus, sink: &Arc<S>) -> Result<(), async_nats::Error> {
    let consumer = events_consumer(bus, sink.consumer_name(), sink.delivery()).await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let event = match serde_json::from_slice::<JobEvent>(&message.payload) {
            Ok(JobEvent { job_id, at_ms, kind: EventKind::State { state, seq, revision, record }, .. }) => {
                StateEvent { job_id, state, seq, revision, at_ms, record: *record }
            }
            Ok(_) => {
                let _ = message.ack().await;
                continue;
            }
            Err(err) => {
                tracing::warn!(%err, subject = %message.subject, consumer = sink.consumer_name(), "ignoring malformed event");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            }
        };
        let handled = {
            let sink = sink.clone();
            async move {
                let keepalive = keep_alive(message.clone());
                sink.handle(event).await;
                keepalive.abort();
                let _ = message.ack().await;
            }
        };
        match sink.delivery() {
            Delivery::Concurrent => {
                tokio::spawn(handled);
            }
            Delivery::OneAtATime => handled.await,
        }
    }
    Ok(())
}

/// Tells JetStream the event is still being worked on, until aborted.
fn keep_alive(message: async_nats::jetstream::Message) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let _ = message.ack_with(AckKind::Progress).await;
        }
    })
}

/// A durable consumer of every job event, named `name`.
async fn events_consumer(bus: &Bus, name: &str, delivery: Delivery) -> Result<consumer::PullConsumer, async_nats::Error> {
    let stream = bus.js().get_stream(&bus.names().events_stream).await?;
    let consumer = stream
        .get_or_create_consumer(
            name,
            consumer::pull::Config {
                durable_name: Some(name.to_string()),
                filter_subject: bus.names().events_wildcard(),
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
