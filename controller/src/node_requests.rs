//! Applies the job changes nodes ask for (`fleet_protocol::job_requests`): the requester is read from
//! the subject its login may publish on, checked against the record ([`authorize`]), and the transition
//! goes through `JobStore::apply`, the one write path. Controllers share the subscription as a queue
//! group, so any of them answers.

use fleet_protocol::job_requests::{ApplyReply, ApplyRequest, Requester, authorize, requester_from_subject};
use fleet_protocol::time::now_ms;
use fleet_runtime::bus::{Bus, BusError};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How long an answer is kept for a node whose reply was lost and who asks again with the same id.
const ANSWER_KEPT_MS: u64 = 5 * 60 * 1000;

/// Answers already given, by request id, so a retried request is answered, not applied twice.
#[derive(Default)]
pub struct AnsweredRequests {
    answers: HashMap<String, (u64, ApplyReply)>,
}

impl AnsweredRequests {
    pub fn get(&self, request_id: &str) -> Option<&ApplyReply> {
        self.answers.get(request_id).map(|(_, reply)| reply)
    }

    /// Keeps `reply` for `request_id`, forgetting answers older than [`ANSWER_KEPT_MS`] at `now_ms`.
    pub fn keep(&mut self, request_id: String, reply: ApplyReply, now_ms: u64) {
        self.answers.retain(|_, (at, _)| now_ms.saturating_sub(*at) < ANSWER_KEPT_MS);
        self.answers.insert(request_id, (now_ms, reply));
    }
}

/// Subscribes to every node's requests (before the controller says it is up, so none is missed).
pub async fn subscribe(bus: &Bus) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
    bus.client().queue_subscribe(format!("{}.>", bus.names().job_requests_prefix), "controllers".into()).await
}

pub async fn serve(bus: Bus, mut requests: async_nats::Subscriber) {
    let prefix = bus.names().job_requests_prefix.clone();
    let answered = Arc::new(Mutex::new(AnsweredRequests::default()));
    while let Some(message) = requests.next().await {
        let (bus, answered, prefix) = (bus.clone(), answered.clone(), prefix.clone());
        tokio::spawn(async move {
            let Some(reply_to) = message.reply.clone() else { return };
            let reply = answer(&bus, &answered, &prefix, &message).await;
            let payload = serde_json::to_vec(&reply).expect("replies serialize");
            if let Err(err) = bus.client().publish(reply_to, payload.into()).await {
                tracing::warn!(%err, "could not answer a node's job request");
            }
        });
    }
}

async fn answer(bus: &Bus, answered: &Mutex<AnsweredRequests>, prefix: &str, message: &async_nats::Message) -> ApplyReply {
    let Some(requester) = requester_from_subject(prefix, message.subject.as_str()) else {
        return ApplyReply::Failed { error: format!("no requester in subject {}", message.subject) };
    };
    let request: ApplyRequest = match serde_json::from_slice(&message.payload) {
        Ok(request) => request,
        Err(err) => return ApplyReply::Failed { error: format!("malformed request: {err}") },
    };
    if let Some(reply) = answered.lock().expect("not poisoned").get(&request.request_id) {
        return reply.clone();
    }
    let reply = apply(bus, &requester, &request).await;
    if !matches!(reply, ApplyReply::Failed { .. }) {
        answered.lock().expect("not poisoned").keep(request.request_id.clone(), reply.clone(), now_ms());
    }
    reply
}

async fn apply(bus: &Bus, requester: &Requester, request: &ApplyRequest) -> ApplyReply {
    let job_id = &request.job_id;
    let allowed = |record: &fleet_protocol::JobRecord| authorize(record, requester, &request.transition);
    match bus.jobs().apply_if(job_id, Some(&requester.node), request.transition.clone(), allowed).await {
        Ok((record, applied)) => ApplyReply::Applied { record: Box::new(record), applied },
        Err(BusError::Refused(refusal)) => ApplyReply::Refused { refusal },
        Err(BusError::Forbidden(reason)) => {
            tracing::warn!(%job_id, node = requester.node, role = requester.role.as_str(), %reason, "job change refused");
            ApplyReply::Forbidden { reason }
        }
        Err(BusError::NotFound(_)) => ApplyReply::NotFound,
        Err(err) => ApplyReply::Failed { error: err.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_for_retries_and_forgotten_later() {
        let mut answered = AnsweredRequests::default();
        answered.keep("a".into(), ApplyReply::NotFound, 1_000);
        assert_eq!(answered.get("a"), Some(&ApplyReply::NotFound));
        answered.keep("b".into(), ApplyReply::NotFound, 1_000 + ANSWER_KEPT_MS);
        assert_eq!(answered.get("a"), None, "older than the window");
        assert!(answered.get("b").is_some());
    }
}
