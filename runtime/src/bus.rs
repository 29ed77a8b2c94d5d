//! The NATS side of the contract (DESIGN.md section 4): connection, the streams/consumers/buckets created
//! idempotently by whichever process starts first, the job store with compare-and-set updates, events,
//! and node heartbeats.

use crate::config::NatsConfig;
use async_nats::jetstream::{self, consumer, kv, stream};
use fleet_protocol::events::{EventKind, JobEvent};
use fleet_protocol::ids::SafeId;
use fleet_protocol::job::{GpuPolicy, JobRecord, StateChange};
use fleet_protocol::names::FleetNames;
use fleet_protocol::node::NodeInfo;
use fleet_protocol::time::now_ms;
use fleet_protocol::transition::{Applied, Transition};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("nats: {0}")]
    Nats(String),
    #[error("job {0} not found")]
    NotFound(SafeId),
    #[error("job {0} already exists")]
    AlreadyExists(SafeId),
    #[error("update refused: {0}")]
    Refused(#[from] fleet_protocol::transition::Refusal),
    #[error("job record {0} is not valid JSON: {1}")]
    Corrupt(String, String),
    #[error("too many concurrent writers on job {0}")]
    Contention(SafeId),
    #[error("not allowed: {0}")]
    Forbidden(#[from] fleet_protocol::job_requests::Forbidden),
}

fn nats_err(err: impl std::fmt::Display) -> BusError {
    BusError::Nats(err.to_string())
}

/// Queue timing shared by every role: whichever process creates the consumers uses these.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// A recorder that stops sending AckProgress for this long loses its job to another recorder.
    pub record_ack_wait_s: u64,
    pub record_max_deliver: i64,
    pub transcode_ack_wait_s: u64,
    pub transcode_max_deliver: i64,
    /// How long events are kept for a controller that was down.
    pub events_max_age_s: u64,
    /// Copies of every stream and bucket on a NATS cluster (3 on a 3-server cluster: one server may be
    /// lost with nothing lost). Existing streams are brought to it by the controller.
    pub replicas: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            record_ack_wait_s: 5,
            record_max_deliver: 20,
            transcode_ack_wait_s: 30,
            transcode_max_deliver: 3,
            events_max_age_s: 7 * 24 * 3600,
            replicas: 1,
        }
    }
}

/// What a process does with the streams, consumers and buckets it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Create what is missing and bring consumers to this process's queue settings (the controller).
    Own,
    /// Use what exists; create only what is missing (and wait for it where this login may not).
    Use,
}

/// A connected process's view of the fleet's NATS resources.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    names: FleetNames,
    jobs: JobStore,
    nodes: kv::Store,
    record_consumer: consumer::PullConsumer,
    transcode_consumer: consumer::PullConsumer,
    transcode_gpu_consumer: consumer::PullConsumer,
    transcode_files_consumer: consumer::PullConsumer,
}

impl Bus {
    /// Connects (retrying until the server answers) and makes sure every stream, consumer and bucket exists.
    pub async fn connect(config: &NatsConfig, queues: &QueueSettings, client_name: &str, topology: Topology) -> Result<Self, BusError> {
        crate::tls::install_crypto_provider();
        let mut options =
            async_nats::ConnectOptions::new().name(client_name).retry_on_initial_connect().require_tls(config.tls_required).event_callback(
                |event| async move {
                    match event {
                        async_nats::Event::Connected => tracing::info!("nats connected"),
                        async_nats::Event::Disconnected => tracing::warn!("nats disconnected; reconnecting"),
                        other => tracing::info!(event = %other, "nats event"),
                    }
                },
            );
        if let Some(file) = &config.credentials_file {
            options = options.credentials_file(file).await.map_err(nats_err)?;
        }
        let password = match (&config.password, &config.password_file) {
            (Some(password), _) => Some(password.clone()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| nats_err(format!("reading the NATS password file {}: {e}", file.display())))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        if let (Some(user), Some(password)) = (&config.user, password) {
            options = options.user_and_password(user.clone(), password);
        }
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        if let Some(ca) = &config.tls_ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        let urls: Vec<&str> = config.url.split(',').map(str::trim).collect();
        let client = options.connect(urls).await.map_err(nats_err)?;
        let js = jetstream::new(client.clone());
        let names = config.names.clone();

        let mut attempt = 0u32;
        let (jobs_kv, nodes, record_consumer, [transcode_consumer, transcode_gpu_consumer, transcode_files_consumer]) = loop {
            match ensure_topology(&js, &names, queues, topology).await {
                Ok(parts) => break parts,
                Err(err) if attempt < 60 => {
                    attempt += 1;
                    tracing::warn!(%err, attempt, "nats topology not ready; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(err) => return Err(err),
            }
        };
        let jobs = JobStore { kv: jobs_kv };
        Ok(Self { client, js, names, jobs, nodes, record_consumer, transcode_consumer, transcode_gpu_consumer, transcode_files_consumer })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn names(&self) -> &FleetNames {
        &self.names
    }

    /// Job records: reads for everyone, writes for the controller (nodes use [`Self::job_requests`]).
    pub fn jobs(&self) -> &JobStore {
        &self.jobs
    }

    pub fn record_consumer(&self) -> &consumer::PullConsumer {
        &self.record_consumer
    }

    /// Transcodes any transcoder may take.
    pub fn transcode_consumer(&self) -> &consumer::PullConsumer {
        &self.transcode_consumer
    }

    /// Transcodes that require a GPU encoder.
    pub fn transcode_gpu_consumer(&self) -> &consumer::PullConsumer {
        &self.transcode_gpu_consumer
    }

    /// File jobs, for transcoders with the shared recordings root.
    pub fn transcode_files_consumer(&self) -> &consumer::PullConsumer {
        &self.transcode_files_consumer
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Publishes a job message on a work queue, de-duplicated by `message_id` within the stream's window.
    pub async fn enqueue(&self, subject: &str, message_id: &str, body: &impl Serialize) -> Result<(), BusError> {
        self.enqueue_at(subject, message_id, body).await.map(|_| ())
    }

    /// [`Bus::enqueue`], answering where the message is in its stream.
    pub async fn enqueue_at(&self, subject: &str, message_id: &str, body: &impl Serialize) -> Result<u64, BusError> {
        let payload = serde_json::to_vec(body).expect("job messages serialize");
        let publish = jetstream::message::PublishMessage::build().message_id(message_id).payload(payload.into());
        let ack = self.js.send_publish(subject.to_string(), publish).await.map_err(nats_err)?.await.map_err(nats_err)?;
        Ok(ack.sequence)
    }

    /// Whether the transcode queue still holds its message at `sequence` (a work queue drops a message
    /// once a transcoder has acknowledged it). False when that cannot be read.
    pub async fn transcode_queued(&self, sequence: u64) -> bool {
        match self.js.get_stream_no_info(&self.names.transcode_stream).await {
            Ok(stream) => stream.get_raw_message(sequence).await.is_ok(),
            Err(_) => false,
        }
    }

    /// The transcode queue's subject for a job: its transcoders must be able to run it (a GPU encoder
    /// for `gpu: require`, the shared recordings root for a file job).
    pub fn transcode_subject_for(&self, record: &JobRecord) -> &str {
        if record.files.is_some() {
            &self.names.transcode_files_subject
        } else if record.request.gpu == GpuPolicy::Require {
            &self.names.transcode_gpu_subject
        } else {
            &self.names.transcode_subject
        }
    }

    /// Writes this node's registry entry.
    pub async fn heartbeat(&self, info: &NodeInfo) -> Result<(), BusError> {
        let value = serde_json::to_vec(info).expect("node info serializes");
        self.nodes.put(&info.id, value.into()).await.map_err(nats_err)?;
        Ok(())
    }

    pub async fn remove_node(&self, node_id: &str) {
        if let Err(err) = self.nodes.delete(node_id).await {
            tracing::warn!(%err, node_id, "could not remove node entry");
        }
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>, BusError> {
        let keys: Vec<String> = self.nodes.keys().await.map_err(nats_err)?.try_collect().await.map_err(nats_err)?;
        let mut nodes = Vec::new();
        for key in keys {
            if let Some(value) = self.nodes.get(&key).await.map_err(nats_err)? {
                match serde_json::from_slice(&value) {
                    Ok(node) => nodes.push(node),
                    Err(err) => tracing::warn!(%err, key, "ignoring malformed node entry"),
                }
            }
        }
        nodes.sort_by(|a: &NodeInfo, b| a.id.cmp(&b.id));
        Ok(nodes)
    }
}

async fn ensure_topology(
    js: &jetstream::Context,
    names: &FleetNames,
    queues: &QueueSettings,
    topology: Topology,
) -> Result<(kv::Store, kv::Store, consumer::PullConsumer, [consumer::PullConsumer; 3]), BusError> {
    // The record stream also carries hand-over requests; the transcode stream has its GPU and file queues.
    let record_subjects = vec![names.record_subject.clone(), names.record_handover_subject.clone()];
    let replicas = queues.replicas.max(1);
    let record = work_queue_stream(js, &names.record_stream, record_subjects, replicas).await?;
    let transcode_subjects = vec![names.transcode_subject.clone(), names.transcode_gpu_subject.clone(), names.transcode_files_subject.clone()];
    let transcode = work_queue_stream(js, &names.transcode_stream, transcode_subjects, replicas).await?;
    let mut events = js
        .get_or_create_stream(stream::Config {
            name: names.events_stream.clone(),
            subjects: vec![names.events_wildcard()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(queues.events_max_age_s),
            max_messages: 1_000_000,
            duplicate_window: event_dedup_window(queues),
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(nats_err)?;
    // Streams made before state events had ids remembered the default two minutes.
    if topology == Topology::Own {
        let current = events.info().await.map_err(nats_err)?.config.clone();
        if current.duplicate_window != event_dedup_window(queues) {
            js.update_stream(stream::Config { duplicate_window: event_dedup_window(queues), ..current }).await.map_err(nats_err)?;
        }
    }

    let pull = |name: &str, ack_wait_s: u64, max_deliver: i64| consumer::pull::Config {
        durable_name: Some(name.to_string()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(ack_wait_s),
        max_deliver,
        max_ack_pending: 10_000,
        ..Default::default()
    };
    let record_config = pull(&names.recorder_consumer, queues.record_ack_wait_s, queues.record_max_deliver);
    let record_consumer = match topology {
        // `create_consumer` creates or updates: AckWait and MaxDeliver follow the owner's settings.
        Topology::Own => record.create_consumer(record_config).await,
        Topology::Use => record.get_or_create_consumer(&names.recorder_consumer, record_config).await,
    }
    .map_err(nats_err)?;
    // Three queues on one work-queue stream, told apart by subject. `create_consumer` creates or updates,
    // so a `transcoders` consumer made before the filters existed gets its filter.
    let mut transcode_consumers = Vec::new();
    for (name, subject) in [
        (&names.transcoder_consumer, &names.transcode_subject),
        (&names.transcoder_gpu_consumer, &names.transcode_gpu_subject),
        (&names.transcoder_files_consumer, &names.transcode_files_subject),
    ] {
        // A node looks it up first: its login may read the topology but not change it.
        if topology == Topology::Use
            && let Ok(mut existing) = transcode.get_consumer::<consumer::pull::Config>(name).await
            && existing.info().await.is_ok_and(|info| info.config.filter_subject == *subject)
        {
            transcode_consumers.push(existing);
            continue;
        }
        let config =
            consumer::pull::Config { filter_subject: subject.clone(), ..pull(name, queues.transcode_ack_wait_s, queues.transcode_max_deliver) };
        transcode_consumers.push(transcode.create_consumer(config).await.map_err(nats_err)?);
    }
    let transcode_consumers: [consumer::PullConsumer; 3] = transcode_consumers.try_into().map_err(|_| nats_err("three consumers"))?;

    let jobs = get_or_create_bucket(
        js,
        kv::Config {
            bucket: names.jobs_bucket.clone(),
            history: 10,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    let nodes = get_or_create_bucket(
        js,
        kv::Config {
            bucket: names.nodes_bucket.clone(),
            history: 1,
            max_age: Duration::from_secs(10),
            storage: stream::StorageType::Memory,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    if topology == Topology::Own {
        let streams = [&names.record_stream, &names.transcode_stream, &names.events_stream].map(String::clone);
        let buckets = [&names.jobs_bucket, &names.nodes_bucket].map(|bucket| format!("KV_{bucket}"));
        for name in streams.iter().chain(&buckets) {
            ensure_replicas(js, name, replicas).await?;
        }
    }
    Ok((jobs, nodes, record_consumer, transcode_consumers))
}

/// A work-queue stream on `subjects`, created when missing. One made by an older version, with fewer
/// subjects, gets the new ones.
async fn work_queue_stream(js: &jetstream::Context, name: &str, subjects: Vec<String>, replicas: usize) -> Result<stream::Stream, BusError> {
    let config = stream::Config {
        name: name.to_string(),
        subjects: subjects.clone(),
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        num_replicas: replicas,
        ..Default::default()
    };
    let mut stream = js.get_or_create_stream(config).await.map_err(nats_err)?;
    let current = stream.info().await.map_err(nats_err)?.config.clone();
    if subjects.iter().any(|s| !current.subjects.contains(s)) {
        js.update_stream(stream::Config { subjects, ..current }).await.map_err(nats_err)?;
    }
    Ok(stream)
}

/// Brings an existing stream to `replicas` copies (the server moves the data; a stream made on a single
/// server before the fleet moved to a cluster gets its copies this way).
async fn ensure_replicas(js: &jetstream::Context, name: &str, replicas: usize) -> Result<(), BusError> {
    let mut stream = js.get_stream(name).await.map_err(nats_err)?;
    let current = stream.info().await.map_err(nats_err)?.config.clone();
    if current.num_replicas != replicas {
        tracing::info!(stream = name, from = current.num_replicas, to = replicas, "changing the stream's replicas");
        js.update_stream(stream::Config { num_replicas: replicas, ..current }).await.map_err(nats_err)?;
    }
    Ok(())
}

/// Opens a bucket, creating it when missing; an existing bucket is used as it is.
async fn get_or_create_bucket(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, BusError> {
    match js.get_key_value(config.bucket.clone()).await {
        Ok(store) => Ok(store),
        Err(_) => match js.create_key_value(config.clone()).await {
            Ok(store) => Ok(store),
            // Another process created it between our get and create.
            Err(_) => js.get_key_value(config.bucket).await.map_err(nats_err),
        },
    }
}

/// Stores `event` in the events stream; with `message_id`, one already stored under that id within the
/// stream's duplicate window is not stored again.
pub async fn store_event(js: &jetstream::Context, names: &FleetNames, event: &JobEvent, message_id: Option<&str>) -> Result<(), BusError> {
    let payload = serde_json::to_vec(event).expect("events serialize");
    let subject = match event.kind {
        EventKind::State { .. } => names.event_subject(event.job_id.as_str()),
        EventKind::Progress { .. } => names.progress_event_subject(event.job_id.as_str()),
    };
    let mut message = jetstream::message::PublishMessage::build().payload(payload.into());
    if let Some(id) = message_id {
        message = message.message_id(id);
    }
    let result = async { js.send_publish(subject, message).await.map_err(nats_err)?.await.map_err(nats_err) };
    tokio::time::timeout(Duration::from_secs(5), result).await.unwrap_or_else(|_| Err(nats_err("timed out")))?;
    Ok(())
}

/// A state event's id in the events stream: one per job and state change.
pub fn state_event_id(job_id: &SafeId, seq: u32) -> String {
    format!("state-{job_id}-{seq}")
}

/// How long the events stream remembers event ids (a state event derived again within it is dropped).
pub const EVENT_DEDUP_WINDOW: Duration = Duration::from_secs(3600);

/// The server refuses a duplicate window longer than the stream keeps its messages.
fn event_dedup_window(queues: &QueueSettings) -> Duration {
    EVENT_DEDUP_WINDOW.min(Duration::from_secs(queues.events_max_age_s))
}

/// Job records in the `fleet-jobs` bucket. Every write is a compare-and-set on the revision. State events
/// are not published here: the controller derives them from the bucket's change stream
/// (`state_log` entries), so a writer that dies after its write loses none.
#[derive(Clone)]
pub struct JobStore {
    kv: kv::Store,
}

impl JobStore {
    /// Stores a new record; its state log starts with the state it is created in.
    pub async fn create(&self, record: &JobRecord) -> Result<u64, BusError> {
        let mut record = record.clone();
        record.state_log = vec![StateChange { seq: 1, state: record.state, at_ms: record.created_at_ms, node: None }];
        let value = serde_json::to_vec(&record).expect("records serialize");
        match self.kv.create(record.id.as_str(), value.into()).await {
            Ok(revision) => Ok(revision),
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => Err(BusError::AlreadyExists(record.id.clone())),
            Err(err) => Err(nats_err(err)),
        }
    }

    pub async fn get(&self, id: &SafeId) -> Result<Option<(JobRecord, u64)>, BusError> {
        let Some(entry) = self.kv.entry(id.as_str()).await.map_err(nats_err)? else { return Ok(None) };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let record = serde_json::from_slice(&entry.value).map_err(|e| BusError::Corrupt(id.to_string(), e.to_string()))?;
        Ok(Some((record, entry.revision)))
    }

    /// The one way a job record changes (the controller's: nodes ask it through `fleet_protocol::job_requests`): reads it, applies `transition` (the state machine in
    /// [`fleet_protocol::transition`]) and writes it back only if nobody wrote in between, retrying on races. A
    /// refusal leaves the record as it was. Returns the record as stored afterwards and what was done.
    pub async fn apply(&self, id: &SafeId, node: Option<&str>, transition: Transition) -> Result<(JobRecord, Applied), BusError> {
        self.apply_if(id, node, transition, None, |_| Ok(())).await
    }

    /// [`Self::apply`] for a node's request: when `allowed` passes on the record the transition is applied
    /// to (checked on every read, so a record changed in between is checked again), and once only for
    /// `request_id` (a retry gets the first answer, from the record, whichever controller answers it).
    pub async fn apply_if(
        &self,
        id: &SafeId,
        node: Option<&str>,
        transition: Transition,
        request_id: Option<&str>,
        allowed: impl Fn(&JobRecord) -> Result<(), fleet_protocol::job_requests::Forbidden>,
    ) -> Result<(JobRecord, Applied), BusError> {
        for _ in 0..50 {
            let (current, revision) = self.get(id).await?.ok_or_else(|| BusError::NotFound(id.clone()))?;
            if let Some(done) = request_id.and_then(|request| current.applied_request(request)) {
                let done = done.clone();
                return Ok((current, done));
            }
            allowed(&current)?;
            let mut next = current.clone();
            let applied = next.apply(transition.clone(), now_ms(), node)?;
            if !applied.changed() {
                return Ok((current, applied));
            }
            if let Some(request) = request_id {
                next.remember_request(request, applied.clone());
            }
            let value = serde_json::to_vec(&next).expect("records serialize");
            match self.kv.update(id.as_str(), value.into(), revision).await {
                Ok(_) => return Ok((next, applied)),
                Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tokio::time::sleep(Duration::from_millis(5 + rand::random::<u64>() % 20)).await;
                }
                Err(err) => return Err(nats_err(err)),
            }
        }
        Err(BusError::Contention(id.clone()))
    }

    /// Every job record (optionally only those passing `keep`), newest first.
    pub async fn list(&self, keep: impl Fn(&JobRecord) -> bool) -> Result<Vec<JobRecord>, BusError> {
        let keys: Vec<String> = match self.kv.keys().await {
            Ok(keys) => keys.try_collect().await.map_err(nats_err)?,
            Err(err) => return Err(nats_err(err)),
        };
        let mut records = Vec::new();
        for key in keys {
            let Ok(id) = SafeId::parse(key) else { continue };
            if let Some((record, _)) = self.get(&id).await?
                && keep(&record)
            {
                records.push(record);
            }
        }
        records.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(a.id.cmp(&b.id)));
        Ok(records)
    }

    /// Every key's current value, then every change as it happens: for an index kept in memory.
    /// `caught_up` is true from the change that brought the watcher to the bucket's present on.
    pub async fn changes_with_history(&self) -> Result<impl futures::Stream<Item = Result<RecordChange, BusError>> + use<>, BusError> {
        let watch = self.kv.watch_with_history(">").await.map_err(nats_err)?;
        Ok(watch.map(|entry| {
            let entry = entry.map_err(nats_err)?;
            let record = match entry.operation {
                kv::Operation::Put => match serde_json::from_slice(&entry.value) {
                    Ok(record) => Some(record),
                    Err(err) => {
                        tracing::warn!(key = entry.key, %err, "job record is not valid JSON; left out of the index");
                        None
                    }
                },
                kv::Operation::Delete | kv::Operation::Purge => None,
            };
            Ok(RecordChange { key: entry.key, revision: entry.revision, record, caught_up: entry.delta == 0 || entry.seen_current })
        }))
    }

    /// Whether the bucket holds no message at all (its watch would deliver nothing to catch up on).
    pub async fn is_empty(&self) -> Result<bool, BusError> {
        Ok(self.kv.status().await.map_err(nats_err)?.values() == 0)
    }

    /// Removes a record and its history, unless it changed since `revision`.
    pub async fn purge_if_unchanged(&self, id: &SafeId, revision: u64) -> Result<(), BusError> {
        self.kv.purge_expect_revision(id.as_str(), Some(revision)).await.map_err(nats_err)
    }

    /// Future changes of one job's record (not the current value).
    pub async fn watch(&self, id: &SafeId) -> Result<impl futures::Stream<Item = JobRecord> + use<>, BusError> {
        let watch = self.kv.watch(id.as_str()).await.map_err(nats_err)?;
        Ok(watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            serde_json::from_slice(&entry.value).ok()
        }))
    }
}

/// One key of the job bucket as it now is: its record, or `None` once deleted (or unreadable).
#[derive(Debug)]
pub struct RecordChange {
    pub key: String,
    pub revision: u64,
    pub record: Option<JobRecord>,
    pub caught_up: bool,
}

/// Parses a queue message body, naming what was wrong so the worker can log it and terminate the message.
pub fn parse_message<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, MalformedMessage> {
    serde_json::from_slice(payload).map_err(MalformedMessage)
}

/// A queue message body that is not the JSON its queue carries.
#[derive(Debug, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct MalformedMessage(#[source] pub serde_json::Error);
