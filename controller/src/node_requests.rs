//! Applies the job changes nodes ask for (`fleet_protocol::job_requests`): the requester is read from
//! the subject its login may publish on, checked against the record ([`authorize`]), and the transition
//! goes through `JobStore::apply_if`, the one write path, once per request id (the record remembers the
//! answer, so a retry that reaches another controller, or one restarted, is not applied twice).
//! Controllers share the subscription as a queue group, so any of them answers.

use fleet_protocol::events::{EventKind, JobEvent};
use fleet_protocol::job::Progress;
use fleet_protocol::job_requests::{ApplyReply, ApplyRequest, Requester, authorize, requester_from_subject};
use fleet_protocol::time::now_ms;
use fleet_protocol::{SafeId, Transition};
use fleet_runtime::bus::{Bus, BusError, store_event};
use futures::StreamExt;

/// Subscribes to every node's requests (before the controller says it is up, so none is missed).
pub async fn subscribe(bus: &Bus) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
    bus.client().queue_subscribe(format!("{}.>", bus.names().job_requests_prefix), "controllers".into()).await
}

pub async fn serve(bus: Bus, mut requests: async_nats::Subscriber) {
    let prefix = bus.names().job_requests_prefix.clone();
    while let Some(message) = requests.next().await {
        let (bus, prefix) = (bus.clone(), prefix.clone());
        tokio::spawn(async move {
            let Some(reply_to) = message.reply.clone() else { return };
            let reply = answer(&bus, &prefix, &message).await;
            let payload = serde_json::to_vec(&reply).expect("replies serialize");
            if let Err(err) = bus.client().publish(reply_to, payload.into()).await {
                tracing::warn!(%err, "could not answer a node's job request");
            }
        });
    }
}

async fn answer(bus: &Bus, prefix: &str, message: &async_nats::Message) -> ApplyReply {
    let Some(requester) = requester_from_subject(prefix, message.subject.as_str()) else {
        return ApplyReply::Failed { error: format!("no requester in subject {}", message.subject) };
    };
    let request: ApplyRequest = match serde_json::from_slice(&message.payload) {
        Ok(request) => request,
        Err(err) => return ApplyReply::Failed { error: format!("malformed request: {err}") },
    };
    apply(bus, &requester, &request).await
}

async fn apply(bus: &Bus, requester: &Requester, request: &ApplyRequest) -> ApplyReply {
    let job_id = &request.job_id;
    let allowed = |record: &fleet_protocol::JobRecord| authorize(record, requester, &request.transition);
    let applied = bus.jobs().apply_if(job_id, Some(&requester.node), request.transition.clone(), Some(&request.request_id), allowed).await;
    match applied {
        Ok((record, applied)) => {
            if let (Transition::Progress(progress), true) = (&request.transition, applied.changed()) {
                publish_progress(bus, job_id, &requester.node, progress.clone()).await;
            }
            ApplyReply::Applied { record: Box::new(record), applied }
        }
        Err(BusError::Refused(refusal)) => ApplyReply::Refused { refusal },
        Err(BusError::Forbidden(reason)) => {
            tracing::warn!(%job_id, node = requester.node, role = requester.role.as_str(), %reason, "job change refused");
            ApplyReply::Forbidden { reason }
        }
        Err(BusError::NotFound(_)) => ApplyReply::NotFound,
        Err(err) => ApplyReply::Failed { error: err.to_string() },
    }
}

/// Progress events come from the controller too (nodes may not publish events): one per applied report.
async fn publish_progress(bus: &Bus, job_id: &SafeId, node: &str, progress: Progress) {
    let event = JobEvent { job_id: job_id.clone(), at_ms: now_ms(), node: Some(node.to_string()), kind: EventKind::Progress { progress } };
    if let Err(err) = store_event(bus.js(), bus.names(), &event, None).await {
        tracing::debug!(%err, %job_id, "progress event not stored");
    }
}
