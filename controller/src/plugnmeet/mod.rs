//! The plugNmeet drop-in: the fleet appears to plugnmeet-server as one recorder. It registers and pings
//! in `pnm-recorderInfo`, answers `PlugNmeetToRecorder` requests on the recorder channel by creating and
//! stopping fleet jobs, and reports each job's progress back with signed `RecorderToPlugNmeet` notifies,
//! placing the finished MP4 where plugNmeet serves recordings from.
//!
//! What it cannot do: plugNmeet's recorder films its web page (whiteboard, chat, shared notes); the fleet
//! records the room's media tracks only. START_RTMP streams the room live (a stream-only job).

pub mod config;
pub mod files;
pub mod notify;
pub mod proto;
pub mod registry;
pub mod requests;
pub mod room_e2ee;
pub mod token;
pub mod transcoding;

use crate::event_sinks::{self, Delivery, EventSink, StateEvent};
use crate::jobs;
use async_nats::jetstream::{AckKind, kv};
use backon::Retryable;
use config::PlugnmeetConfig;
use fleet_protocol::job::Origin;
use fleet_protocol::streams::StreamUrl;
use fleet_protocol::time::now_ms;
use fleet_protocol::{JobRecord, JobRequest, SafeId};
use fleet_runtime::bus::Bus;
use fleet_runtime::storage::Storage;
use futures::StreamExt;
use notify::Notice;
use prost::Message;
use requests::Action;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Durable consumer on the fleet's events stream that feeds plugNmeet's notifies.
const EVENTS_CONSUMER: &str = "controller-plugnmeet";

#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    #[error(transparent)]
    Config(#[from] fleet_runtime::config::ConfigError),
    #[error("connecting to plugNmeet's NATS: {0}")]
    Connect(String),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error("nats: {0}")]
    Nats(String),
}

pub struct Door {
    bus: Bus,
    /// plugNmeet's NATS (the fleet's own connection when they share a server).
    pnm: async_nats::Client,
    config: PlugnmeetConfig,
    http: reqwest::Client,
    /// For copying finished recordings under `main_path`.
    storage: Option<Storage>,
    /// plugNmeet's bucket once it exists; dropped and reopened when a ping fails (plugnmeet-server or its
    /// NATS restarted without the bucket), so the fleet registers again when the server recreates it.
    registry: tokio::sync::Mutex<Option<kv::Store>>,
    /// plugNmeet room table id -> the fleet job recording it (stops name the room, not the recording).
    held: Held,
    /// The same for the room's RTMP stream (a job of its own: plugNmeet starts and stops it apart).
    held_rtmp: Held,
    /// Jobs whose START_RECORDING went out (a failover re-enters `recording`).
    started: Mutex<HashSet<SafeId>>,
    starts_and_stops: tokio::sync::Mutex<()>,
    /// Stopped before the purge on shutdown, or a late ping would bring the registration back.
    pinger: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Seals the key of a room plugnmeet-server encrypts (none: such rooms are refused).
    e2ee_seal: Option<fleet_e2ee::TranscoderPublicKey>,
    defaults: jobs::Defaults,
}

type Held = Mutex<HashMap<i64, SafeId>>;

impl Door {
    /// Connects, registers (refusing a duplicate recorder id) and starts serving plugNmeet.
    pub async fn start(
        bus: Bus,
        config: PlugnmeetConfig,
        storage: Option<Storage>,
        e2ee_seal: Option<fleet_e2ee::TranscoderPublicKey>,
        defaults: jobs::Defaults,
    ) -> Result<Arc<Door>, DoorError> {
        config.check()?;
        if config.main_path.is_some() && storage.is_none() {
            return Err(fleet_runtime::config::ConfigError::new("controller.plugnmeet.main_path needs the controller's [storage] section").into());
        }
        let pnm = if config.nats_url.is_empty() { bus.client().clone() } else { connect(&config).await? };
        let js = registry::context(&pnm);
        // Start order does not matter: without the bucket yet, the pinger waits for plugnmeet-server to make it.
        let registry = match registry::open_as(&js, &config.recorder_info_bucket, &config.recorder_id, None, now_ms()).await {
            Ok(store) => Some(store),
            Err(err @ registry::RegistryError::NoBucket(..)) => {
                tracing::warn!(%err, "plugNmeet's recorder bucket is not there yet; registering when plugnmeet-server creates it");
                None
            }
            Err(err) => return Err(err.into()),
        };

        // Recordings this door started before a restart are still stoppable.
        let (mut held, mut held_rtmp) = (HashMap::new(), HashMap::new());
        for record in bus.jobs().list(|r| r.state.is_capturing()).await.map_err(|e| DoorError::Nats(e.to_string()))? {
            if let Some(Origin::Plugnmeet { room_table_id, .. }) = &record.origin {
                let map = if record.request.records_file() { &mut held } else { &mut held_rtmp };
                map.insert(*room_table_id, record.id.clone());
            }
        }
        let door = Arc::new(Door {
            bus,
            pnm,
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client"),
            config,
            storage,
            registry: tokio::sync::Mutex::new(registry),
            held: Mutex::new(held),
            held_rtmp: Mutex::new(held_rtmp),
            started: Mutex::new(HashSet::new()),
            starts_and_stops: tokio::sync::Mutex::new(()),
            pinger: Mutex::new(None),
            e2ee_seal,
            defaults,
        });
        let subscription = door.pnm.subscribe(door.config.recorder_channel.clone()).await.map_err(|e| DoorError::Nats(e.to_string()))?;
        *door.pinger.lock().unwrap() = Some(tokio::spawn(door.clone().ping()));
        tokio::spawn(door.clone().serve(subscription));
        event_sinks::prepare(&door.bus, door.as_ref()).await.map_err(|e| DoorError::Nats(e.to_string()))?;
        tokio::spawn(event_sinks::run(door.bus.clone(), door.clone()));
        if door.config.main_path.is_some() {
            tokio::spawn(door.clone().transcoding_tasks());
        }
        tracing::info!(recorder_id = %door.config.recorder_id, channel = %door.config.recorder_channel, "plugNmeet drop-in serving");
        Ok(door)
    }

    /// On a clean shutdown: plugNmeet forgets this recorder at once instead of after its ping timeout.
    pub async fn shutdown(&self) {
        if let Some(pinger) = self.pinger.lock().unwrap().take() {
            pinger.abort();
        }
        if let Some(store) = self.registry.lock().await.as_ref() {
            registry::purge(store, &self.config.recorder_id).await;
        }
        let _ = self.pnm.flush().await;
    }

    async fn ping(self: Arc<Self>) {
        let js = registry::context(&self.pnm);
        let mut tick = tokio::time::interval(registry::PING_INTERVAL);
        let mut warned = false;
        // Our own last ping: found in the bucket on a reopen, it is not a twin's.
        let mut last_ping = None;
        loop {
            tick.tick().await;
            let mut registry = self.registry.lock().await;
            if registry.is_none() {
                match registry::open_as(&js, &self.config.recorder_info_bucket, &self.config.recorder_id, last_ping, now_ms()).await {
                    Ok(store) => {
                        tracing::info!(bucket = %self.config.recorder_info_bucket, "plugNmeet's recorder bucket is there; registering");
                        *registry = Some(store);
                        warned = false;
                    }
                    Err(err) => {
                        // Once per outage, not every 3 s.
                        if !warned {
                            tracing::warn!(%err, "plugNmeet registration waiting");
                            warned = true;
                        }
                        continue;
                    }
                }
            }
            let store = registry.as_ref().expect("opened above");
            let nodes = self.bus.list_nodes().await.unwrap_or_default();
            let load = registry::Load::of_fleet(&nodes);
            let now = now_ms();
            match registry::write(store, &self.config.recorder_id, &load, now).await {
                Ok(()) => last_ping = Some(now),
                Err(err) => {
                    tracing::warn!(%err, "plugNmeet ping failed; reopening its bucket at the next ping");
                    *registry = None;
                }
            }
        }
    }

    async fn serve(self: Arc<Self>, mut subscription: async_nats::Subscriber) {
        while let Some(message) = subscription.next().await {
            let door = self.clone();
            tokio::spawn(async move {
                let reply = door.answer(&message.payload).await;
                if let (Some(reply), Some(inbox)) = (reply, message.reply)
                    && let Err(err) = door.pnm.publish(inbox, reply.encode_to_vec().into()).await
                {
                    tracing::warn!(%err, "could not answer plugNmeet");
                }
            });
        }
        tracing::error!("plugNmeet recorder channel subscription ended");
    }

    /// The reply to one request, or `None` where plugNmeet's recorders stay silent.
    async fn answer(&self, payload: &[u8]) -> Option<proto::CommonResponse> {
        let request = match proto::PlugNmeetToRecorder::decode(payload) {
            Ok(request) => request,
            Err(err) => {
                tracing::warn!(%err, "ignoring an undecodable message on the recorder channel");
                return None;
            }
        };
        match requests::decide(&request, &self.config.recorder_id, self.config.main_path.is_some()) {
            Action::Ignore(why) => {
                tracing::debug!(why, task = request.task, "plugNmeet request not for us");
                None
            }
            Action::Refuse(reply) => {
                tracing::info!(room_id = %request.room_id, reason = %reply.msg, "plugNmeet request refused");
                if request.task == proto::RecordingTasks::StartRtmp as i32 {
                    let report = notify::rtmp_refused(&request, &self.config.recorder_id, &reply.msg);
                    let (http, c) = (self.http.clone(), self.config.clone());
                    tokio::spawn(async move { notify::send(&http, &c.server_url, &c.api_key, &c.api_secret, c.notify_attempts, &report).await });
                }
                Some(reply)
            }
            // One start or stop at a time: a start racing its retry (or a stop) would see the room as not
            // held while the first one still creates the job.
            Action::Start { room_id, room_sid, recording_id, room_table_id } => {
                let _one_at_a_time = self.starts_and_stops.lock().await;
                Some(self.start_recording(room_id, room_sid, recording_id, room_table_id).await)
            }
            Action::Stop { room_table_id } => {
                let _one_at_a_time = self.starts_and_stops.lock().await;
                self.stop_recording(room_table_id).await
            }
            Action::StartRtmp { room_id, room_sid, recording_id, room_table_id, url } => {
                let _one_at_a_time = self.starts_and_stops.lock().await;
                Some(self.start_rtmp(room_id, room_sid, recording_id, room_table_id, url).await)
            }
            Action::StopRtmp { room_table_id } => {
                let _one_at_a_time = self.starts_and_stops.lock().await;
                let job = self.held_job(&self.held_rtmp, room_table_id).await?;
                Some(match jobs::stop(&self.bus, &job).await {
                    Ok(_) => requests::success(),
                    Err(err) => requests::from_api_error(err),
                })
            }
        }
    }

    async fn start_recording(&self, room_id: String, room_sid: String, recording_id: String, room_table_id: i64) -> proto::CommonResponse {
        if let Some(job) = self.held_job(&self.held, room_table_id).await {
            return requests::refusal(proto::StatusCode::Conflict, format!("this room is already being recorded ({job})"));
        }
        let load = registry::Load::of_fleet(&self.bus.list_nodes().await.unwrap_or_default());
        if !load.has_free_slot() {
            let why = format!("the fleet has no free recorder slot ({} recording, {} slots)", load.running, load.max_limit);
            return requests::refusal(proto::StatusCode::Conflict, why);
        }
        let mut request: JobRequest = match serde_json::from_value(serde_json::json!({ "room": room_id })) {
            Ok(request) => request,
            Err(err) => return requests::refusal(proto::StatusCode::InvalidParameters, err.to_string()),
        };
        if let Err(refusal) = self.add_room_keys(&mut request).await {
            return refusal;
        }
        let origin = Origin::Plugnmeet { recording_id: recording_id.clone(), room_sid, room_table_id, recorder_id: self.config.recorder_id.clone() };
        match jobs::create(&self.bus, request, Some(origin), "rec", self.defaults).await {
            Ok(record) => {
                tracing::info!(job_id = %record.id, %recording_id, room_table_id, "plugNmeet recording started");
                self.held.lock().unwrap().insert(room_table_id, record.id);
                requests::success()
            }
            Err(err) => requests::from_api_error(err),
        }
    }

    /// START_RTMP: a stream-only job of the room (plugNmeet records and streams a room separately).
    async fn start_rtmp(&self, room_id: String, room_sid: String, recording_id: String, room_table_id: i64, url: StreamUrl) -> proto::CommonResponse {
        if let Some(job) = self.held_job(&self.held_rtmp, room_table_id).await {
            return requests::refusal(proto::StatusCode::Conflict, format!("this room is already being streamed ({job})"));
        }
        let json = serde_json::json!({ "room": room_id, "outputs": { "file": false, "rtmp": [url.expose()] } });
        let request: JobRequest = match serde_json::from_value(json) {
            Ok(request) => request,
            Err(err) => return requests::refusal(proto::StatusCode::InvalidParameters, err.to_string()),
        };
        let origin = Origin::Plugnmeet { recording_id, room_sid, room_table_id, recorder_id: self.config.recorder_id.clone() };
        match jobs::create(&self.bus, request, Some(origin), "rtmp", self.defaults).await {
            Ok(record) => {
                tracing::info!(job_id = %record.id, url = %url.redacted(), room_table_id, "plugNmeet RTMP stream started");
                self.held_rtmp.lock().unwrap().insert(room_table_id, record.id);
                requests::success()
            }
            Err(err) => requests::from_api_error(err),
        }
    }

    /// A room plugnmeet-server encrypts with its own key is recorded with that key (sealed at once); one
    /// whose users chose their key is refused in plugNmeet's words. When the room's settings cannot be read
    /// the recording goes ahead: an encrypted track then stays ciphertext, and the job says so.
    async fn add_room_keys(&self, request: &mut JobRequest) -> Result<(), proto::CommonResponse> {
        let c = &self.config;
        let found = room_e2ee::fetch(&self.http, &c.server_url, &c.api_key, &c.api_secret, &request.room).await;
        match found {
            Ok(Some(room_e2ee::RoomE2ee::ServerKey(key))) => {
                request.e2ee = Some(room_e2ee::request_for(&key));
                crate::e2ee::seal_request(request, self.e2ee_seal.as_ref()).map_err(requests::from_api_error)
            }
            Ok(Some(room_e2ee::RoomE2ee::SelfInsertedKey)) => {
                tracing::info!(room = %request.room, reason = room_e2ee::SELF_INSERTED_KEY_REFUSAL, "plugNmeet recording refused");
                Err(requests::refusal(proto::StatusCode::InvalidParameters, room_e2ee::SELF_INSERTED_KEY_REFUSAL.to_string()))
            }
            Ok(Some(room_e2ee::RoomE2ee::Off)) => Ok(()),
            Ok(None) => {
                tracing::warn!(room = %request.room, "plugnmeet-server gave no settings for the room; recording it without keys");
                Ok(())
            }
            Err(err) => {
                tracing::warn!(room = %request.room, %err, "recording the room without keys");
                Ok(())
            }
        }
    }

    async fn stop_recording(&self, room_table_id: i64) -> Option<proto::CommonResponse> {
        let job = self.held_job(&self.held, room_table_id).await?;
        match jobs::stop(&self.bus, &job).await {
            Ok(_) => Some(requests::success()),
            Err(err) => Some(requests::from_api_error(err)),
        }
    }

    /// The job recording this room, if it is still capturing (stale entries are dropped).
    async fn held_job(&self, held: &Held, room_table_id: i64) -> Option<SafeId> {
        let job = held.lock().unwrap().get(&room_table_id).cloned()?;
        match self.bus.jobs().get(&job).await {
            Ok(Some((record, _))) if record.state.is_capturing() => Some(job),
            Err(err) => {
                tracing::warn!(%err, job_id = %job, "could not read a held job; treating it as held");
                Some(job)
            }
            _ => {
                held.lock().unwrap().remove(&room_table_id);
                None
            }
        }
    }

    /// Sends one report; false when the rest of this event's reports must not follow (the file could
    /// not be placed: plugNmeet then hears of the failure instead of a success).
    async fn report_one(&self, notice: &Notice, record: &JobRecord) -> bool {
        if matches!(notice, Notice::Started | Notice::RtmpStarted) && !self.started.lock().unwrap().insert(record.id.clone()) {
            return true;
        }
        let file = match notice {
            Notice::Proceeded => match self.file_for_with_retries(record).await {
                Ok(file) => Some(file),
                Err(reason) => {
                    tracing::error!(job_id = %record.id, %reason, "recording not placed for plugNmeet");
                    let failed = Notice::TranscodeFinished { ok: false, msg: format!("recording not placed: {reason}") };
                    self.post(&failed, record, None).await;
                    return false;
                }
            },
            _ => None,
        };
        self.post(notice, record, file).await;
        true
    }

    /// Storage or the shared mount may fail for a moment: a few tries before plugNmeet hears of a failure.
    async fn file_for_with_retries(&self, record: &JobRecord) -> Result<(String, f32), files::PlaceError> {
        (|| self.file_for(record))
            .retry(fleet_runtime::retry::attempts(4, Duration::from_secs(1), Duration::from_secs(16)))
            .notify(|reason, _| tracing::warn!(job_id = %record.id, %reason, "placing the recording failed; retrying"))
            .await
    }

    async fn post(&self, notice: &Notice, record: &JobRecord, file: Option<(String, f32)>) {
        if let Some(report) = notify::message(notice, record, file) {
            let c = &self.config;
            notify::send(&self.http, &c.server_url, &c.api_key, &c.api_secret, c.notify_attempts, &report).await;
        }
    }

    /// plugNmeet's transcoder queue: each task becomes a fleet file job (the queue and its consumer are
    /// plugnmeet-server's; the door only binds to them).
    async fn transcoding_tasks(self: Arc<Self>) {
        loop {
            if let Err(err) = self.consume_transcoding_tasks().await {
                tracing::warn!(%err, queue = %self.config.transcoder_jobs, "plugNmeet transcoder queue not available; retrying");
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }

    async fn consume_transcoding_tasks(&self) -> Result<(), async_nats::Error> {
        let js = async_nats::jetstream::new(self.pnm.clone());
        // Bound by consumer info alone: plugNmeet's recorder login may not read the stream's info.
        let consumer: async_nats::jetstream::consumer::PullConsumer =
            js.get_consumer_from_stream(&self.config.transcoder_consumer, &self.config.transcoder_jobs).await?;
        let mut messages = consumer.messages().await?;
        tracing::info!(queue = %self.config.transcoder_jobs, "consuming plugNmeet transcoding tasks");
        while let Some(message) = messages.next().await {
            let message = message?;
            match self.take_transcoding_task(&message.payload).await {
                Ok(()) => {
                    let _ = message.ack().await;
                }
                Err(reason @ TaskNotTaken::Unavailable(_)) => {
                    tracing::warn!(%reason, "plugNmeet transcoding task not taken; will retry");
                    let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
                }
                Err(reason) => {
                    tracing::error!(%reason, "plugNmeet transcoding task refused");
                    let _ = message.ack_with(AckKind::Term).await;
                }
            }
        }
        Ok(())
    }

    async fn take_transcoding_task(&self, payload: &[u8]) -> Result<(), TaskNotTaken> {
        let task = proto::TranscodingTask::decode(payload).map_err(|e| TaskNotTaken::Refused(format!("undecodable TranscodingTask: {e}")))?;
        let main_path = self.config.main_path.as_deref().ok_or_else(|| TaskNotTaken::Refused("no main_path".into()))?;
        let origin = Origin::Plugnmeet {
            recording_id: task.recording_id.clone(),
            room_sid: task.room_sid.clone(),
            room_table_id: task.room_table_id,
            recorder_id: task.recorder_id.clone(),
        };
        let room = if task.room_id.is_empty() { "plugnmeet".to_string() } else { task.room_id.clone() };
        let request: JobRequest = serde_json::from_value(serde_json::json!({ "room": room })).map_err(|e| TaskNotTaken::Refused(e.to_string()))?;
        let files = match transcoding::file_job(&task, main_path) {
            Ok(files) => files,
            Err(refused) => {
                // plugNmeet hears of a task it sent that cannot run, as from its own transcoder.
                let mut record = fleet_protocol::JobRecord::new(SafeId::random("file"), request, now_ms());
                record.origin = Some(origin);
                let reason = refused.to_string();
                self.post(&Notice::TranscodeFinished { ok: false, msg: reason.clone() }, &record, None).await;
                return Err(TaskNotTaken::Refused(reason));
            }
        };
        // A request the fleet refuses stays refused; a fleet that could not store or queue it may recover.
        jobs::create_file_job(&self.bus, request, origin, files, &task.recording_id)
            .await
            .map_err(|e| if e.status.is_server_error() { TaskNotTaken::Unavailable(e.message) } else { TaskNotTaken::Refused(e.message) })?;
        Ok(())
    }

    /// Puts the finished recording where plugNmeet serves it; returns (file_path, size in MB).
    async fn file_for(&self, record: &JobRecord) -> Result<(String, f32), files::PlaceError> {
        let output = record.output.as_ref().ok_or(files::PlaceError::NoOutput)?;
        let Some(Origin::Plugnmeet { recording_id, .. }) = &record.origin else { return Err(files::PlaceError::NotPlugnmeet) };
        if record.files.is_some() {
            // A file job's transcoder wrote it under the shared root already; its key is relative to it.
            return Ok((output.key.clone(), files::size_mb(output.size_bytes)));
        }
        match (&self.config.main_path, &self.storage) {
            (Some(main_path), Some(storage)) => {
                let relative = files::relative_path(&self.config.sub_path, &record.request.room, recording_id);
                if !files::is_safe_relative(&relative) || SafeId::parse(recording_id.as_str()).is_err() {
                    return Err(files::PlaceError::LeavesRoot(relative));
                }
                let size = files::place(storage, &output.key, main_path, &relative).await?;
                Ok((relative, files::size_mb(size)))
            }
            _ => Ok((output.key.clone(), files::size_mb(output.size_bytes))),
        }
    }
}

/// plugNmeet's reports as an event sink: one event at a time, so plugNmeet hears them in order.
impl EventSink for Door {
    fn consumer_name(&self) -> &str {
        EVENTS_CONSUMER
    }

    fn delivery(&self) -> Delivery {
        Delivery::OneAtATime
    }

    async fn handle(&self, event: StateEvent) {
        if !matches!(event.record.origin, Some(Origin::Plugnmeet { .. })) {
            return;
        }
        for notice in notify::notices(event.state, &event.record) {
            if !self.report_one(&notice, &event.record).await {
                break;
            }
        }
    }
}

/// Why a plugNmeet transcoding task was not taken: refused for good (the message is terminated), or the
/// fleet could not take it now (redelivered later).
#[derive(Debug, thiserror::Error)]
enum TaskNotTaken {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Unavailable(String),
}

/// plugNmeet's NATS with its recorder login: a fresh 5-minute token for every connection attempt.
async fn connect(config: &PlugnmeetConfig) -> Result<async_nats::Client, DoorError> {
    let (key, secret, id) = (config.api_key.clone(), config.api_secret.clone(), config.recorder_id.clone());
    let options = async_nats::ConnectOptions::with_auth_callback(move |_nonce| {
        let token = token::recorder_token(&key, &secret, &id, now_ms() / 1000);
        async move {
            let mut auth = async_nats::Auth::new();
            auth.token = Some(token);
            Ok(auth)
        }
    })
    .name("fleet-plugnmeet")
    .retry_on_initial_connect();
    let urls: Vec<&str> = config.nats_url.split(',').map(str::trim).collect();
    options.connect(urls).await.map_err(|e| DoorError::Connect(e.to_string()))
}
