//! State events from the job bucket's own history. Writers only write records; this loop reads the
//! bucket's change stream in revision order (a durable consumer, one message in flight, so two
//! controllers cannot reorder it) and publishes an event for every `state_log` entry not yet published.
//! What was published is read back from the events stream itself (the job's last state event) whenever
//! a record has an entry this controller has not seen published, so a restart or a second controller
//! publishes nothing twice; the events stream's de-duplication by id covers a crash between a publish
//! and its acknowledgement. A writer that dies after its write loses no event.

use async_nats::jetstream::{self, AckKind, consumer};
use fleet_protocol::SafeId;
use fleet_protocol::events::{EventKind, JobEvent};
use fleet_protocol::job::JobRecord;
use fleet_runtime::bus::{Bus, BusError, state_event_id, store_event};
use fleet_runtime::retry;
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

const CONSUMER: &str = "state-events";

/// The events one write of `record` (at KV `revision`) calls for, given the last state change already
/// published for the job (`None`: unknown, e.g. after a restart; the stream's de-duplication then drops
/// what was published recently). Each comes with its `state_log` seq.
pub fn events_for(record: &JobRecord, revision: u64, published: Option<u32>) -> Vec<(u32, JobEvent)> {
    record
        .state_log
        .iter()
        .filter(|change| published.is_none_or(|seq| change.seq > seq))
        .map(|change| {
            let event = JobEvent {
                job_id: record.id.clone(),
                at_ms: change.at_ms,
                node: change.node.clone(),
                kind: EventKind::State { state: change.state, seq: change.seq, revision, record: Box::new(record.clone().for_clients()) },
            };
            (change.seq, event)
        })
        .collect()
}

/// The durable consumer on the bucket's stream, from its first revision.
pub async fn prepare(bus: &Bus) -> Result<consumer::PullConsumer, BusError> {
    let nats = |err: &dyn std::fmt::Display| BusError::Nats(err.to_string());
    let stream = bus.js().get_stream(format!("KV_{}", bus.names().jobs_bucket)).await.map_err(|e| nats(&e))?;
    let config = consumer::pull::Config {
        durable_name: Some(CONSUMER.into()),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 1,
        ..Default::default()
    };
    stream.create_consumer(config).await.map_err(|e| nats(&e))
}

pub async fn run(bus: Bus, consumer: consumer::PullConsumer) {
    let prefix = format!("$KV.{}.", bus.names().jobs_bucket);
    let events = loop {
        match bus.js().get_stream(&bus.names().events_stream).await {
            Ok(events) => break events,
            Err(err) => {
                tracing::warn!(%err, "cannot open the events stream; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut published: HashMap<SafeId, u32> = HashMap::new();
    loop {
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(err) => {
                tracing::warn!(%err, "cannot read the job bucket's changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            match message {
                Ok(message) => handle(&bus, &events, &prefix, &mut published, message).await,
                Err(err) => {
                    tracing::warn!(%err, "job bucket change stream interrupted");
                    break;
                }
            }
        }
    }
}

async fn handle(bus: &Bus, events: &jetstream::stream::Stream, prefix: &str, published: &mut HashMap<SafeId, u32>, message: jetstream::Message) {
    let revision = message.info().map(|info| info.stream_sequence).unwrap_or(0);
    let is_put = message.headers.as_ref().and_then(|h| h.get("KV-Operation")).is_none();
    let key = message.subject.as_str().strip_prefix(prefix).unwrap_or_default();
    let record = match is_put.then(|| serde_json::from_slice::<JobRecord>(&message.payload)) {
        Some(Ok(record)) if record.id.as_str() == key => Some(record),
        Some(Ok(_)) | Some(Err(_)) => {
            tracing::warn!(key, revision, "job record that is not valid JSON for its key: no events from it");
            None
        }
        None => None,
    };
    if !is_put && let Ok(id) = SafeId::parse(key) {
        // Deleted or purged (retention): nothing more to publish for it.
        published.remove(&id);
    }
    if let Some(record) = record {
        let newest = record.state_log.last().map_or(0, |change| change.seq);
        let mut known = published.get(&record.id).copied();
        if known.is_none_or(|seen| seen < newest) {
            let stored = last_published(bus, events, &message, &record.id).await;
            known = Some(known.unwrap_or(0).max(stored));
        }
        for (seq, event) in events_for(&record, revision, known) {
            store_until_stored(bus, &message, &state_event_id(&record.id, seq), &event).await;
            published.insert(record.id.clone(), seq);
        }
    }
    if let Err(err) = message.ack().await {
        tracing::warn!(%err, revision, "could not acknowledge a job change (it comes again; its events are not doubled)");
    }
}

/// The `seq` of the job's last state event in the events stream (0: none), asked until the stream answers.
async fn last_published(bus: &Bus, events: &jetstream::stream::Stream, message: &jetstream::Message, job_id: &SafeId) -> u32 {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    use backon::BackoffBuilder;
    let subject = bus.names().event_subject(job_id.as_str());
    let mut delays = retry::for_about(Duration::MAX, Duration::from_millis(100), Duration::from_secs(5)).build();
    loop {
        match events.get_last_raw_message_by_subject(&subject).await {
            Ok(last) => {
                return match serde_json::from_slice::<JobEvent>(&last.payload) {
                    Ok(JobEvent { kind: EventKind::State { seq, .. }, .. }) => seq,
                    _ => 0,
                };
            }
            Err(err) if matches!(err.kind(), LastRawMessageErrorKind::NoMessageFound) => return 0,
            Err(err) => {
                tracing::warn!(%err, %job_id, "cannot read the job's last state event yet; retrying");
                let _ = message.ack_with(AckKind::Progress).await;
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
            }
        }
    }
}

/// Events are not dropped: the loop waits for the events stream (keeping the change it reads) rather
/// than skip one.
async fn store_until_stored(bus: &Bus, message: &jetstream::Message, id: &str, event: &JobEvent) {
    use backon::BackoffBuilder;
    let mut delays = retry::for_about(Duration::MAX, Duration::from_millis(100), Duration::from_secs(5)).build();
    loop {
        match store_event(bus.js(), bus.names(), event, Some(id)).await {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(%err, job_id = %event.job_id, "state event not stored yet; retrying");
                let _ = message.ack_with(AckKind::Progress).await;
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_protocol::{JobRequest, JobState, Transition};

    #[test]
    fn every_state_change_not_yet_published_becomes_one_event() {
        let request: JobRequest = serde_json::from_str(r#"{"room":"r"}"#).unwrap();
        let mut record = JobRecord::new(SafeId::parse("rec_a").unwrap(), request, 10);
        record.apply(Transition::OpenSession { node: "rec-1".into(), replica: 0 }, 20, Some("rec-1")).unwrap();
        record.apply(Transition::RequestStop, 30, None).unwrap();
        let ids = |events: &[(u32, JobEvent)]| events.iter().map(|(seq, e)| state_event_id(&e.job_id, *seq)).collect::<Vec<_>>();
        let states = |events: &[(u32, JobEvent)]| {
            events
                .iter()
                .map(|(_, e)| match &e.kind {
                    EventKind::State { state, .. } => (*state, e.at_ms, e.node.clone()),
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>()
        };
        let all = events_for(&record, 7, None);
        assert_eq!(ids(&all), ["state-rec_a-1", "state-rec_a-2"]);
        assert_eq!(states(&all), [(JobState::Queued, 10, None), (JobState::Starting, 20, Some("rec-1".into()))]);
        assert!(events_for(&record, 7, Some(2)).is_empty(), "a write that changed no state publishes nothing");
        // A change the loop did not see (the bucket keeps a few revisions only) is still published.
        record.apply(Transition::MediaWriting { session: SafeId::parse("s1").unwrap(), wall_zero_ms: 40 }, 40, Some("rec-1")).unwrap();
        let late = events_for(&record, 9, Some(1));
        assert_eq!(ids(&late), ["state-rec_a-2", "state-rec_a-3"]);
        assert!(late.iter().all(|(_, e)| matches!(&e.kind, EventKind::State { revision: 9, record, .. } if record.state == JobState::Recording)));
    }
}
