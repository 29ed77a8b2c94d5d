//! Is a recorder still capturing a job? The recorder answers requests on its alive subject for as long
//! as it holds the job; anyone may ask. Only the server's "no responders" (nobody subscribes: the
//! recorder's connection is gone) means dead: a request that times out means slow, never dead.

use crate::bus::Bus;
use async_nats::{RequestErrorKind, Subscriber};
use futures::StreamExt;
use std::time::Duration;

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Alive,
    /// Nobody subscribes to the subject: the recorder released the job or its connection is gone.
    NoResponders,
    /// No answer in time, or NATS trouble: nothing can be concluded.
    Unknown,
}

/// Asks whether `node` still captures `job_id`.
pub async fn probe(bus: &Bus, node: &str, job_id: &str, timeout: Duration) -> Probe {
    let subject = bus.names().alive_subject(node, job_id);
    let request = async_nats::Request::new().timeout(Some(timeout));
    match bus.client().send_request(subject, request).await {
        Ok(_) => Probe::Alive,
        Err(err) if err.kind() == RequestErrorKind::NoResponders => Probe::NoResponders,
        Err(_) => Probe::Unknown,
    }
}

/// Answers this node's alive probes for one job until dropped.
pub struct AliveResponder {
    task: tokio::task::JoinHandle<()>,
}

impl AliveResponder {
    /// Subscribes and waits until the server has the subscription, so a probe made after this returns
    /// (e.g. once the capture session is in the job record) finds it.
    pub async fn start(bus: &Bus, node: &str, job_id: &str) -> Result<Self, async_nats::Error> {
        let client = bus.client().clone();
        let subscriber: Subscriber = client.subscribe(bus.names().alive_subject(node, job_id)).await?;
        client.flush().await?;
        let task = tokio::spawn(async move {
            let mut subscriber = subscriber;
            while let Some(request) = subscriber.next().await {
                if let Some(reply) = request.reply {
                    let _ = client.publish(reply, bytes::Bytes::new()).await;
                }
            }
        });
        Ok(Self { task })
    }
}

impl Drop for AliveResponder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
