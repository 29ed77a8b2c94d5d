//! A node's side of `fleet_protocol::job_requests`: job record changes asked of the controller.

use crate::bus::{Bus, BusError};
use fleet_protocol::ids::SafeId;
use fleet_protocol::job::JobRecord;
use fleet_protocol::job_requests::{ApplyReply, ApplyRequest};
use fleet_protocol::nats_access::Role;
use fleet_protocol::transition::{Applied, Transition};
use std::time::Duration;

/// A node's side: sends transitions to the controller and waits for the answer, retrying (same
/// request id) while no controller answers, e.g. during its restart.
#[derive(Clone)]
pub struct JobRequests {
    client: async_nats::Client,
    subject: String,
    /// How long to keep asking while no controller answers.
    patience: Duration,
}

impl JobRequests {
    /// The job client of node `node`, whose login has `role`.
    pub fn for_node(bus: &Bus, role: Role, node: &str) -> Self {
        Self { client: bus.client().clone(), subject: bus.names().job_request_subject(role.as_str(), node), patience: Duration::from_secs(120) }
    }

    /// Applies `transition` to job `id` through the controller: the record as stored afterwards and what
    /// was done, or why not.
    pub async fn apply(&self, id: &SafeId, transition: Transition) -> Result<(JobRecord, Applied), BusError> {
        let request = ApplyRequest { request_id: random_request_id(), job_id: id.clone(), transition };
        let payload: bytes::Bytes = serde_json::to_vec(&request).expect("requests serialize").into();
        let ask = || async {
            let answer = tokio::time::timeout(Duration::from_secs(10), self.client.request(self.subject.clone(), payload.clone()))
                .await
                .map_err(|_| BusError::Nats("the controller did not answer in 10 s".into()))?
                .map_err(|err| BusError::Nats(format!("asking the controller: {err}")))?;
            let reply: ApplyReply =
                serde_json::from_slice(&answer.payload).map_err(|err| BusError::Nats(format!("unreadable answer from the controller: {err}")))?;
            match reply {
                ApplyReply::Failed { error } => Err(BusError::Nats(format!("the controller could not apply it: {error}"))),
                other => Ok(other),
            }
        };
        use backon::Retryable;
        let schedule = crate::retry::for_about(self.patience, Duration::from_millis(200), Duration::from_secs(5));
        let reply = ask
            .retry(schedule)
            .notify(
                |err, delay| tracing::warn!(%err, job_id = %id, retry_in_ms = delay.as_millis() as u64, "job change not applied yet; asking again"),
            )
            .await?;
        match reply {
            ApplyReply::Applied { record, applied } => Ok((*record, applied)),
            ApplyReply::Refused { refusal } => Err(BusError::Refused(refusal)),
            ApplyReply::Forbidden { reason } => Err(BusError::Forbidden(reason)),
            ApplyReply::NotFound => Err(BusError::NotFound(id.clone())),
            ApplyReply::Failed { .. } => unreachable!("retried above"),
        }
    }
}

pub fn random_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
