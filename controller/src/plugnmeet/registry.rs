//! Presence in plugNmeet's `pnm-recorderInfo` bucket: the whole fleet shows as one recorder whose
//! capacity, load and cores are the sums (CPU: the mean) of the live recorder nodes in the fleet registry.
//! Keys are `recorder_<id>-FIELD_<n>` with decimal string values; the server drops a recorder whose last
//! ping is older than 8 s, so pings go every 3 s.

use async_nats::jetstream::kv;
use fleet_protocol::node::{NodeInfo, NodeRole};
use std::time::Duration;

pub const PING_INTERVAL: Duration = Duration::from_secs(3);
/// How long one bucket request may take. Shorter than the ping interval: a request lost with its
/// connection (plugNmeet's NATS restarting) must not hold the pings up for JetStream's default 5 s, or
/// plugNmeet's 8 s ping timeout can pass before the fleet pings again.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A JetStream context for plugNmeet's bucket, with [`REQUEST_TIMEOUT`].
pub fn context(client: &async_nats::Client) -> async_nats::jetstream::Context {
    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(REQUEST_TIMEOUT);
    js
}

/// plugNmeet's `RecorderInfoKeys`, by their wire numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    MaxLimit = 0,
    LastPing = 1,
    TotalCores = 2,
    CurrentProgress = 3,
    CpuScore = 4,
}

pub const ALL_FIELDS: [Field; 5] = [Field::MaxLimit, Field::LastPing, Field::TotalCores, Field::CurrentProgress, Field::CpuScore];

pub fn key(recorder_id: &str, field: Field) -> String {
    format!("recorder_{recorder_id}-FIELD_{}", field as u8)
}

/// What the fleet advertises: recordings it can take, running recordings, cores, CPU use 0..1.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    pub max_limit: u32,
    pub running: u32,
    pub cores: u32,
    pub cpu: f64,
}

impl Load {
    pub fn of_fleet(nodes: &[NodeInfo]) -> Load {
        let recorders: Vec<&NodeInfo> = nodes.iter().filter(|n| n.role == NodeRole::Recorder).collect();
        let taking: Vec<&&NodeInfo> = recorders.iter().filter(|n| !n.draining).collect();
        let cpu = if recorders.is_empty() { 0.0 } else { recorders.iter().map(|n| n.cpu_load).sum::<f64>() / recorders.len() as f64 };
        Load {
            max_limit: taking.iter().map(|n| n.slots).sum(),
            running: recorders.iter().map(|n| n.running_jobs.len() as u32).sum(),
            // plugNmeet divides by the cores: never advertise zero.
            cores: recorders.iter().map(|n| n.cores).sum::<u32>().max(1),
            cpu: cpu.clamp(0.0, 1.0),
        }
    }

    /// Whether a start can be taken now. plugnmeet-server picks a recorder by score alone, with no capacity
    /// filter, so a full fleet must say no itself (queueing would leave plugNmeet waiting for a start).
    pub fn has_free_slot(&self) -> bool {
        self.running < self.max_limit
    }

    /// Every field's value as plugNmeet writes it.
    pub fn values(&self, now_ms: u64) -> [(Field, String); 5] {
        [
            (Field::MaxLimit, self.max_limit.to_string()),
            (Field::LastPing, now_ms.to_string()),
            (Field::TotalCores, self.cores.to_string()),
            (Field::CurrentProgress, self.running.to_string()),
            (Field::CpuScore, format!("{:.4}", self.cpu)),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("plugNmeet's bucket {0} is missing (plugnmeet-server creates it): {1}")]
    NoBucket(String, String),
    #[error("another recorder with id {0:?} pinged {1} ms ago; refusing to start twice")]
    Duplicate(String, u64),
    #[error("nats: {0}")]
    Nats(String),
}

/// Opens plugNmeet's bucket for `recorder_id`: `NoBucket` until plugnmeet-server has created it, and
/// `Duplicate` while a twin with our id pings (`ours`: the last ping this process wrote, which is no twin's).
pub async fn open_as(
    js: &async_nats::jetstream::Context,
    bucket: &str,
    recorder_id: &str,
    ours: Option<u64>,
    now_ms: u64,
) -> Result<kv::Store, RegistryError> {
    let store = js.get_key_value(bucket).await.map_err(|e| RegistryError::NoBucket(bucket.to_string(), e.to_string()))?;
    refuse_twin(&store, recorder_id, ours, now_ms).await?;
    Ok(store)
}

/// Refuses a second recorder with our id: one pinged within two intervals.
async fn refuse_twin(store: &kv::Store, recorder_id: &str, ours: Option<u64>, now_ms: u64) -> Result<(), RegistryError> {
    let last = store.get(key(recorder_id, Field::LastPing)).await.map_err(|e| RegistryError::Nats(e.to_string()))?;
    let last = last.and_then(|v| String::from_utf8_lossy(&v).parse::<u64>().ok());
    match twin_age(last, ours, now_ms) {
        Some(age) => Err(RegistryError::Duplicate(recorder_id.to_string(), age)),
        None => Ok(()),
    }
}

/// How long ago a live twin pinged, if one did: a stored ping that is not ours and younger than two
/// intervals (a live twin's last ping may be a whole interval old when we look).
fn twin_age(stored: Option<u64>, ours: Option<u64>, now_ms: u64) -> Option<u64> {
    let stored = stored.filter(|stored| Some(*stored) != ours)?;
    let age = now_ms.saturating_sub(stored);
    (age < 2 * PING_INTERVAL.as_millis() as u64).then_some(age)
}

pub async fn write(store: &kv::Store, recorder_id: &str, load: &Load, now_ms: u64) -> Result<(), RegistryError> {
    for (field, value) in load.values(now_ms) {
        store.put(key(recorder_id, field), value.into_bytes().into()).await.map_err(|e| RegistryError::Nats(e.to_string()))?;
    }
    Ok(())
}

/// On a clean shutdown: the server sees the purges and forgets this recorder at once.
pub async fn purge(store: &kv::Store, recorder_id: &str) {
    for field in ALL_FIELDS {
        if let Err(err) = store.purge(key(recorder_id, field)).await {
            tracing::warn!(%err, recorder_id, "could not purge plugNmeet registration");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, role: NodeRole, slots: u32, running: usize, cpu: f64, cores: u32) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            role,
            mode: "both".into(),
            version: "0".into(),
            slots,
            running_jobs: (0..running).map(|i| format!("j{i}")).collect(),
            cpu_load: cpu,
            cores,
            encoders: vec![],
            draining: false,
            spool_bytes: 0,
            holding: None,
            started_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn keys_and_values_have_plugnmeets_format() {
        assert_eq!(key("fleet", Field::MaxLimit), "recorder_fleet-FIELD_0");
        assert_eq!(key("node_01", Field::CpuScore), "recorder_node_01-FIELD_4");
        let load = Load { max_limit: 4, running: 1, cores: 8, cpu: 0.123456 };
        let values = load.values(1_700_000_000_123);
        assert_eq!(values[1].1, "1700000000123");
        assert_eq!(values[4].1, "0.1235");
    }

    #[test]
    fn a_fresh_ping_is_a_twin_unless_it_is_our_own() {
        assert_eq!(twin_age(None, None, 10_000), None);
        assert_eq!(twin_age(Some(8_000), None, 10_000), Some(2_000));
        assert_eq!(twin_age(Some(8_000), Some(8_000), 10_000), None, "our own last ping");
        assert_eq!(twin_age(Some(8_000), Some(5_000), 10_000), Some(2_000), "someone wrote after us");
        assert_eq!(twin_age(Some(3_000), None, 10_000), None, "older than two intervals: dead");
    }

    #[test]
    fn load_sums_recorders_only() {
        let nodes = [
            node("r1", NodeRole::Recorder, 2, 1, 0.2, 2),
            node("r2", NodeRole::Recorder, 3, 0, 0.4, 4),
            node("t1", NodeRole::Transcoder, 1, 1, 1.0, 16),
        ];
        let load = Load::of_fleet(&nodes);
        assert_eq!((load.max_limit, load.running, load.cores), (5, 1, 6));
        assert!((load.cpu - 0.3).abs() < 1e-9);
        assert_eq!(Load::of_fleet(&[]).cores, 1);
        assert!(load.has_free_slot());
        assert!(!Load::of_fleet(&[]).has_free_slot(), "no recorder: no slot");
        assert!(!Load::of_fleet(&[node("r1", NodeRole::Recorder, 1, 1, 0.2, 2)]).has_free_slot(), "one slot, taken");
    }
}
