//! One capture session of a recording job on this node: claim the job in its record, capture the room
//! into segments, upload them while recording, stop on API stop / max duration / shutdown, then hand
//! the job to the transcode queue.

mod control;

use crate::capture::Capture;
use crate::capture::events::SourceEvent;
use crate::capture::livekit::{LivekitCapture, LivekitParams};
use crate::context::{Claim, NodeContext};
use crate::error::RecordError;
use crate::streaming::live_files::LiveFiles;
use crate::streaming::{Notice, Streamer};
use crate::timeline::{Entry, LiveParts, Timeline};
use crate::uploader::Uploader;
use async_nats::jetstream::{self, AckKind};
use control::{Action, CaptureControl, Input, Limits};
use fleet_pipelines::segment_writer::segment_seq;
use fleet_pipelines::synthetic_room::SyntheticRoomConfig;
use fleet_protocol::job::{Desired, EndReason, RecordJob, Source, TranscodeJob};
use fleet_protocol::time::now_ms;
use fleet_protocol::transition::SessionEnd as SessionEnded;
use fleet_protocol::{Applied, JobState, SafeId, Transition, keys};
use fleet_runtime::bus::{BusError, parse_message};
use fleet_runtime::liveness::{self, AliveResponder, Probe};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// What to tell JetStream about the recording job message.
enum Outcome {
    /// The job left the capture stage (finalized, aborted, failed, or was already done): ack.
    Done,
    /// This node is shutting down mid-recording: redeliver now so another recorder resumes the job.
    HandBack,
    /// Could not even start (e.g. NATS trouble): retry later.
    Retry(RecordError),
}

pub async fn handle_delivery(recorder: Arc<NodeContext>, message: jetstream::Message, shutdown: watch::Receiver<bool>) {
    let job: RecordJob = match parse_message(&message.payload) {
        Ok(job) => job,
        Err(reason) => {
            tracing::warn!(subject = %message.subject, %reason, "rejecting recording message");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let span = tracing::info_span!("recording", job_id = %job.job_id, node_id = %recorder.node_id);
    async move {
        let delivery = match recorder.claim(&job.job_id, job.replica, message.clone()) {
            Claim::New(delivery) => delivery,
            Claim::Adopted => {
                tracing::info!("redelivered while recording here: the running capture adopts the new delivery");
                return;
            }
            Claim::OtherCaptureHere => {
                // Two captures on one node would fail together: wait for another node to take it.
                tracing::debug!(replica = job.replica, "another capture of this job runs here: leaving this one to another recorder");
                offer_elsewhere(&recorder, &job, message).await;
                return;
            }
        };
        let keepalive = tokio::spawn(keep_alive(delivery.clone()));
        if let Some(from) = &job.handover_from {
            tracing::info!(from_session = %from, "taking a recording over from a draining recorder");
        }
        // Answering before the session exists in the record: a probe never finds a session without its answerer.
        let outcome = match AliveResponder::start(&recorder.bus, &recorder.node_id, job.job_id.as_str()).await {
            Ok(alive) => {
                let outcome = record(&recorder, &job, shutdown).await;
                drop(alive);
                outcome
            }
            Err(err) => Outcome::Retry(RecordError::Bus(BusError::Nats(format!("answering alive probes: {err}")))),
        };
        recorder.release(&job.job_id);
        keepalive.abort();
        let message = delivery.borrow().clone();
        match outcome {
            Outcome::Done => {
                let _ = message.double_ack().await;
            }
            Outcome::HandBack => {
                tracing::info!("handing the recording back to the queue");
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
            Outcome::Retry(reason) => {
                tracing::warn!(%reason, "recording could not start; retrying later");
                let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(2)))).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// AckProgress every second on the newest delivery: the job stays ours while we live, and moves on
/// within AckWait if we die.
async fn keep_alive(delivery: watch::Receiver<jetstream::Message>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let message = delivery.borrow().clone();
        let _ = message.ack_with(AckKind::Progress).await;
    }
}

/// A redundant job's capture that finds only the node holding its other capture waits this long
/// between offers, for another recorder to take it.
const OTHER_NODE_WAIT: Duration = Duration::from_secs(2);

/// Puts a redundant job's capture back for another node. JetStream drops a message after its last
/// allowed delivery, and a fleet may take long to get a second node: before that, the message is queued
/// again afresh (then this delivery is acked), so the capture waits as long as its job records.
async fn offer_elsewhere(recorder: &NodeContext, job: &RecordJob, message: jetstream::Message) {
    let delivered = message.info().map_or(0, |info| info.delivered);
    if delivered < REOFFER_AFTER_DELIVERIES {
        let _ = message.ack_with(AckKind::Nak(Some(OTHER_NODE_WAIT))).await;
        return;
    }
    tokio::time::sleep(OTHER_NODE_WAIT).await;
    let message_id = format!("{}-replica-{}-again-{}", job.job_id, job.replica, now_ms());
    match recorder.bus.enqueue(&recorder.bus.names().record_subject, &message_id, job).await {
        Ok(()) => {
            let _ = message.double_ack().await;
        }
        Err(err) => {
            tracing::warn!(%err, "could not queue the capture again; it is offered once more");
            let _ = message.ack_with(AckKind::Nak(Some(OTHER_NODE_WAIT))).await;
        }
    }
}

/// Well below the record queue's `max_deliver` (20 by default).
const REOFFER_AFTER_DELIVERIES: i64 = 10;

/// `job.handover_from`: this delivery is a draining recorder's request to take its capture over.
async fn record(recorder: &Arc<NodeContext>, job: &RecordJob, shutdown: watch::Receiver<bool>) -> Outcome {
    let (job_id, replica, handover_taker) = (&job.job_id, job.replica, job.handover_from.is_some());
    let node = recorder.node_id.as_str();
    let record = match recorder.bus.jobs().get(job_id).await {
        Ok(Some((record, _))) => record,
        Ok(None) => {
            tracing::warn!("recording message for an unknown job; dropping");
            return Outcome::Done;
        }
        Err(err) => return Outcome::Retry(err.into()),
    };
    match record.state {
        JobState::Queued | JobState::Starting | JobState::Recording => {}
        // The draining recorder kept the job to its end: nothing to take over.
        _ if handover_taker => return Outcome::Done,
        // Captured already (a crash after finalizing): make sure the transcode job exists.
        JobState::Finalizing => return enqueue_transcode(recorder, job_id).await,
        _ => return Outcome::Done,
    }
    if record.desired == Desired::Stop {
        return stop_without_capture(recorder, job_id, replica).await;
    }
    // A delivery that comes back after AckWait while another recorder already carries the job (it took
    // over when the controller found the first one dead, or the first one is only slow) is stale.
    if !handover_taker && let Some(holder) = live_holder(recorder, &record, replica).await {
        tracing::info!(holder, "another recorder captures this job: dropping the stale delivery");
        return Outcome::Done;
    }

    // Claim: a new capture session in the job record.
    let (record, session_id) = match recorder.jobs.apply(job_id, Transition::OpenSession { node: node.to_string(), replica }).await {
        Ok((record, Applied::SessionOpened(session_id))) => (record, session_id),
        Ok((_, applied)) => unreachable!("opening a session answers its id, not {applied:?}"),
        Err(fleet_runtime::bus::BusError::Refused(_)) => return stop_without_capture(recorder, job_id, replica).await,
        Err(err) => return Outcome::Retry(err.into()),
    };
    tracing::info!(session = %session_id, "capture session claimed");

    let remaining = remaining_duration(&record, fleet_protocol::time::now_ms());
    capture(recorder, job_id, &session_id, &record, remaining, handover_taker, shutdown).await
}

/// The node of an open session of capture `replica`, other than this one, that answers its alive probe.
async fn live_holder(recorder: &NodeContext, record: &fleet_protocol::JobRecord, replica: u8) -> Option<String> {
    for session in record.sessions.iter().rev().filter(|s| s.replica == replica && s.ended_at_ms.is_none() && s.node != recorder.node_id) {
        if liveness::probe(&recorder.bus, &session.node, record.id.as_str(), ALIVE_PROBE_TIMEOUT).await == Probe::Alive {
            return Some(session.node.clone());
        }
    }
    None
}

/// A recorder that cannot answer in this long is treated as gone, as AckWait's redelivery always did.
const ALIVE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Asks another recorder to take this session's recording over: a hand-over message on the record
/// queue (de-duplicated per session), taken by any recorder with a free slot.
async fn request_handover(recorder: &NodeContext, job_id: &SafeId, session_id: &SafeId, replica: u8) -> Result<(), BusError> {
    let message = RecordJob { job_id: job_id.clone(), handover_from: Some(session_id.clone()), replica };
    let message_id = format!("handover-{job_id}-{session_id}");
    recorder.bus.enqueue(&recorder.bus.names().record_handover_subject, &message_id, &message).await
}

/// Runs the capture until it ends, uploading segments as they close.
async fn capture(
    recorder: &Arc<NodeContext>,
    job_id: &SafeId,
    session_id: &SafeId,
    record: &fleet_protocol::JobRecord,
    remaining: Duration,
    handover_taker: bool,
    mut shutdown: watch::Receiver<bool>,
) -> Outcome {
    let node = recorder.node_id.as_str();
    let config = &recorder.config;
    let request = &record.request;
    let replica = record.sessions.iter().find(|s| s.id == *session_id).map_or(0, |s| s.replica);
    let spool = config.spool_dir.join(job_id.as_str()).join(session_id.as_str());
    let mut timeline = match Timeline::create(spool.join("timeline.jsonl")) {
        Ok(timeline) => timeline,
        Err(err) => return fail(recorder, job_id, session_id, handover_taker, format!("spool directory {}: {err}", spool.display())).await,
    };
    let segment_ns = config.segment_seconds as u64 * 1_000_000_000;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    // A streaming job's composite starts with the session's clock, just before the capture.
    // An earlier session (draining, or a crashed recorder) may still hold the streams at their servers.
    let taking_over = record.sessions.len() > 1;
    let live_files = match LiveFiles::start(&recorder.storage, record, spool.join("live"), Duration::from_secs(config.upload_retry_limit_s)).await {
        Ok(files) => files,
        Err(err) => return fail(recorder, job_id, session_id, handover_taker, format!("live files: {err}")).await,
    };
    let (mut streamer, look_warnings) = match record.composites_live().then(|| start_streamer(config, request, taking_over, live_files)) {
        None => (None, Vec::new()),
        Some(Ok((streamer, warnings))) => (Some(streamer), warnings),
        Some(Err(err)) => return fail(recorder, job_id, session_id, handover_taker, format!("the live composite did not start: {err}")).await,
    };
    let room = match &request.source {
        Source::Test { participants } => {
            let room_config = SyntheticRoomConfig {
                participants: *participants,
                width: config.test_source.width,
                height: config.test_source.height,
                fps: config.test_source.fps,
                video_bitrate_bps: config.test_source.video_bitrate_bps,
                segment_ns,
                out_dir: spool.join("media"),
            };
            match crate::capture::synthetic::start(room_config, events_tx).await.map(Capture::Synthetic) {
                Ok(capture) => capture,
                Err(err) => return fail(recorder, job_id, session_id, handover_taker, format!("capture did not start: {err}")).await,
            }
        }
        Source::Livekit => {
            let mut livekit = config.livekit.clone();
            livekit.wait_for_room_s = livekit.wait_for_room_s.max(request.wait_for_room_s.unwrap_or(0) as u64);
            let params = LivekitParams {
                config: livekit,
                room: request.room.clone(),
                identity: format!("recorder-{job_id}-{session_id}"),
                segment_ns,
                media_dir: spool.join("media"),
                live: streamer.as_ref().map(Streamer::composite),
                metrics: recorder.metrics.clone(),
            };
            Capture::Livekit(LivekitCapture::start(params, events_tx))
        }
    };
    let wall_zero = room.wall_ms_at_zero();
    timeline.write(
        wall_zero,
        0,
        Entry::SessionStarted { session: session_id.to_string(), node: node.to_string(), source: room.source_name().into() },
    );

    let uploader = Uploader::start(recorder.storage.clone(), Duration::from_secs(config.upload_retry_limit_s), Some(recorder.metrics.clone()));
    let timeline_key = keys::timeline(job_id, session_id);
    let mut live_timeline = LiveParts::default();
    let mut stop_watch = match recorder.bus.jobs().watch(job_id).await {
        Ok(watch) => Some(Box::pin(watch)),
        Err(err) => {
            tracing::warn!(%err, "cannot watch the job record; stop requests will be polled");
            None
        }
    };
    let limits = Limits {
        max_duration: remaining,
        handover_overlap: Duration::from_secs(config.handover_overlap_s),
        finish_timeout: Duration::from_secs(config.finish_timeout_s),
    };
    let mut control = CaptureControl::new(session_id.clone(), limits, Instant::now());
    // What the job record is told while capturing goes through the controller; it runs beside the loop,
    // which must never wait on it (a controller restarting), and is done before the session's end is.
    let mut job_notes = tokio::task::JoinSet::new();
    let note_warning = |job_notes: &mut tokio::task::JoinSet<()>, warning: String| {
        let (ctx, job_id, warning) = (recorder.clone(), job_id.clone(), format!("{}: {warning}", recorder.node_id));
        job_notes.spawn(async move { warn_on_job(&ctx, &job_id, warning).await });
    };
    for warning in look_warnings {
        note_warning(&mut job_notes, format!("live composite: {warning}"));
    }
    if let Some(streamer) = &mut streamer {
        streamer.follow(&record.streams);
    }
    let stream_reports = StreamReporter::start(recorder.clone(), job_id.clone());
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    // (Every capture of a redundant job asks: the asks go on while one of them is alive.)
    let progressive = config.progressive_interval_s > 0 && record.request.records_file() && !record.request.audio_only;
    let mut catch_up = tokio::time::interval(Duration::from_secs(config.progressive_interval_s.max(1)));
    catch_up.tick().await; // the first tick is immediate: nothing is final yet
    let mut catch_ups = 0u64;
    // Where this session's last ask waits in the transcode queue: one ask at a time, so that asks do not
    // pile up while no transcoder takes them (all busy, or none serves this job's queue).
    let pending_ask = Arc::new(tokio::sync::Mutex::new(None::<u64>));
    // The source's running time when it was told to stop: the session's end.
    let mut stopped_at_ns = None;
    // Pauses already marked in the timeline (an earlier session marked those before it began).
    let mut pauses_marked = record.pauses.clone();

    'session: loop {
        let mut inputs = Vec::new();
        let stream_retry_at = streamer.as_ref().and_then(Streamer::next_retry);
        tokio::select! {
            event = events.recv() => match event {
                Some(SourceEvent::Room { running_ns, entry }) => timeline.write(wall_zero + running_ns / 1_000_000, running_ns, entry),
                Some(SourceEvent::Fragment { participant, track: track_id, fragment }) => {
                    let (participant, track_id) = (&participant, &track_id);
                    let Some(seq) = segment_seq(&fragment.location) else { continue };
                    let running_ns = fragment.running_time_ns;
                    let wall_ms = wall_zero + running_ns / 1_000_000;
                    if fragment.opened {
                        timeline.write(wall_ms, running_ns, Entry::SegmentOpened { participant: participant.to_string(), track: track_id.to_string(), seq });
                        inputs.push(Input::SegmentOpened);
                    } else if !segment_holds_media(&fragment.location).await {
                        // Nothing in it to keep, and demuxers reject its bare header as corrupt.
                        tracing::info!(location = %fragment.location.display(), "segment closed without media; not uploaded");
                        let _ = tokio::fs::remove_file(&fragment.location).await;
                    } else {
                        timeline.write(wall_ms, running_ns, Entry::SegmentClosed { participant: participant.to_string(), track: track_id.to_string(), seq });
                        // Its lines before the segment: the transcode places a stored segment by them.
                        upload_live_timeline(recorder, job_id, session_id, &timeline, &mut live_timeline, Upload::Now).await;
                        uploader.push(fragment.location.clone(), keys::raw_segment(job_id, session_id, participant, track_id, seq));
                        inputs.push(Input::SegmentClosed);
                    }
                }
                Some(SourceEvent::Ended(reason)) => inputs.push(Input::RoomEnded(reason)),
                Some(SourceEvent::Finished) | None => inputs.push(Input::SourceFinished),
                Some(SourceEvent::Failed(reason)) => inputs.push(Input::SourceFailed(reason)),
                Some(SourceEvent::SpoolFull(reason)) => {
                    tracing::error!(%reason, "a segment write failed for a full disk");
                    recorder.note_disk_full();
                    inputs.push(Input::SpoolFull(reason));
                }
                Some(SourceEvent::TrackLost(warning)) => note_warning(&mut job_notes, warning),
            },
            Some(record) = next_record(&mut stop_watch), if control.running() => {
                if let Some(streamer) = &mut streamer {
                    streamer.follow(&record.streams);
                }
                mark_pauses(&mut timeline, &mut pauses_marked, &record, wall_zero);
                inputs.push(Input::Record(Box::new(record), fleet_protocol::time::now_ms()));
            }
            Some(event) = next_live_event(&mut streamer) => {
                let streamer = streamer.as_mut().expect("an event came from it");
                match streamer.on_event(event, Instant::now()) {
                    Notice::None => {}
                    Notice::Warn(warning) => note_warning(&mut job_notes, warning),
                    Notice::Failed(reason) => note_warning(&mut job_notes, format!("live streaming stopped: {reason}")),
                }
            }
            _ = sleep_until_retry(stream_retry_at) => {
                if let Some(streamer) = &mut streamer {
                    streamer.retry_due(Instant::now());
                }
            }
            _ = catch_up.tick(), if progressive && control.running() => {
                catch_ups += 1;
                let (ctx, subject) = (recorder.clone(), recorder.bus.transcode_subject_for(record).to_string());
                let message_id = format!("catch-up-{job_id}-{session_id}-{catch_ups}");
                let message = TranscodeJob { job_id: job_id.clone(), chunk: None, catch_up: true };
                let pending_ask = pending_ask.clone();
                tokio::spawn(async move {
                    let Ok(mut pending) = pending_ask.try_lock() else { return };
                    if let Some(sequence) = *pending
                        && ctx.bus.transcode_queued(sequence).await
                    {
                        return;
                    }
                    match ctx.bus.enqueue_at(&subject, &message_id, &message).await {
                        Ok(sequence) => *pending = Some(sequence),
                        Err(err) => tracing::debug!(%err, "progressive transcode not asked for this time"),
                    }
                });
            }
            _ = poll.tick(), if control.running() => {
                // A full spool disk would stall the capture (writes block or fail).
                if let Some(reason) = recorder.spool_disk_full() {
                    tracing::error!(%reason, "spool disk full");
                    recorder.note_disk_full();
                    inputs.push(Input::DiskFull(reason));
                }
                // Backstop for a missed watch update (e.g. across a NATS reconnect).
                if let Some((record, _)) = recorder.bus.jobs().get(job_id).await.ok().flatten() {
                    if let Some(streamer) = &mut streamer {
                        streamer.follow(&record.streams);
                        streamer.log_health();
                    }
                    mark_pauses(&mut timeline, &mut pauses_marked, &record, wall_zero);
                    inputs.push(Input::Record(Box::new(record), fleet_protocol::time::now_ms()));
                }
                // What the last segment's close held back (sent at most every second).
                upload_live_timeline(recorder, job_id, session_id, &timeline, &mut live_timeline, Upload::Throttled).await;
            }
            _ = tokio::time::sleep_until(control.next_deadline().into()) => inputs.push(Input::Tick),
            _ = shutdown.changed(), if control.may_drain() => inputs.push(Input::Shutdown),
        }
        if let Some(report) = streamer.as_mut().and_then(Streamer::take_report) {
            stream_reports.send(report);
        }
        while !inputs.is_empty() {
            for action in inputs.drain(..).flat_map(|input| control.handle(input, Instant::now())).collect::<Vec<_>>() {
                match action {
                    Action::MarkRecording => {
                        let (ctx, job_id, session_id) = (recorder.clone(), job_id.clone(), session_id.clone());
                        job_notes.spawn(async move { mark_recording(&ctx, &job_id, &session_id, wall_zero).await });
                    }
                    Action::StopSource(reason) => {
                        tracing::info!(?reason, "stopping capture");
                        stopped_at_ns = Some(room.running_time_ns());
                        room.stop();
                    }
                    Action::RequestHandover => {
                        // Drain: keep recording until another recorder writes this room too (or the job ends).
                        let requested = match request_handover(recorder, job_id, session_id, replica).await {
                            Ok(()) => {
                                tracing::info!(session = %session_id, "draining: asked another recorder to take the recording over; recording on until it does");
                                true
                            }
                            Err(err) => {
                                tracing::warn!(%err, "draining: no hand-over possible; handing the job back to the queue");
                                false
                            }
                        };
                        inputs.push(Input::HandoverRequested(requested));
                    }
                    Action::Warn(warning) => note_warning(&mut job_notes, warning),
                    Action::Exit => break 'session,
                }
            }
        }
    }

    let end_running_ns = stopped_at_ns.unwrap_or_else(|| room.running_time_ns());
    let mut live_files_failure = None;
    if let Some(streamer) = streamer.take() {
        let (report, failure) = streamer.finish().await;
        stream_reports.send(report);
        live_files_failure = failure;
    }
    stream_reports.finish().await;
    job_notes.join_all().await;
    drop(room);
    let uploaded = uploader.finish().await;
    let ending = control.ending();
    let mut failure = ending.failure.clone();
    if let Some(reason) = live_files_failure {
        failure.get_or_insert(reason);
    }
    timeline.write(wall_zero + end_running_ns / 1_000_000, end_running_ns, Entry::SessionEnded { reason: ending.reason_text.into() });
    let timeline_uploaded = upload_timeline(recorder, &timeline_key, &timeline).await;
    if let Err(reason) = &uploaded {
        failure.get_or_insert_with(|| reason.to_string());
    }
    if uploaded.is_ok() && timeline_uploaded {
        // Everything this session wrote is confirmed in storage; the spool copy can go.
        if let Err(err) = tokio::fs::remove_dir_all(&spool).await {
            tracing::warn!(%err, "could not clean the spool");
        }
        // The job's directory goes too once no other session of it is spooled here.
        if let Some(job_dir) = spool.parent() {
            let _ = tokio::fs::remove_dir(job_dir).await;
        }
    }
    tracing::info!(segments = ending.segments, uploaded = ?uploaded, end_ms = end_running_ns / 1_000_000, reason = ending.reason_text, "capture ended");

    let end = SessionEnd {
        ended_at_ms: wall_zero + end_running_ns / 1_000_000,
        segments: ending.segments,
        reason: ending.reason,
        failure,
        handing_back: ending.handing_back,
        superseded: ending.superseded,
        handover_taker,
    };
    end_session(recorder, job_id, session_id, end).await
}

/// Whether any raw segment of the job is in storage, from any session (a killed recorder's included).
async fn media_stored(recorder: &NodeContext, job_id: &SafeId) -> Result<bool, RecordError> {
    let objects = recorder.storage.list(&keys::raw_prefix(job_id)).await.map_err(|e| RecordError::Storage("could not check the stored media", e))?;
    Ok(objects.iter().any(|o| keys::parse_segment_key(job_id, &o.key).is_some()))
}

/// How a capture session ended.
struct SessionEnd {
    ended_at_ms: u64,
    segments: u32,
    reason: EndReason,
    failure: Option<String>,
    handing_back: bool,
    /// Ended because the session that took the recording over writes media: the job goes on there.
    superseded: bool,
    /// Started by a hand-over request, while the draining session may still record.
    handover_taker: bool,
}

/// Records the end of a session. The job's own state changes only while the job is still in capture
/// (another node may have moved it on): it is finalized when any media of the job reached storage, from
/// this session or an earlier one, and failed otherwise.
async fn end_session(recorder: &NodeContext, job_id: &SafeId, session_id: &SafeId, end: SessionEnd) -> Outcome {
    let media_stored = match media_stored(recorder, job_id).await {
        Ok(stored) => stored,
        Err(reason) => return Outcome::Retry(reason),
    };
    let ended = SessionEnded {
        ended_at_ms: end.ended_at_ms,
        segments: end.segments,
        reason: end.reason,
        failure: end.failure.clone(),
        continues_elsewhere: end.handing_back || end.superseded,
        handover_taker: end.handover_taker,
        media_stored,
    };
    let transition = Transition::EndSession { session: session_id.clone(), end: ended };
    let finalized_here = match recorder.jobs.apply(job_id, transition).await {
        Ok((_, applied)) => applied == Applied::Finalized,
        Err(err) => return Outcome::Retry(RecordError::JobStore("could not record the end of the session", err)),
    };
    if end.handing_back {
        return Outcome::HandBack;
    }
    if end.superseded {
        tracing::info!(session = %session_id, "recording handed over: the next session writes media");
        return Outcome::Done;
    }
    if finalized_here { enqueue_transcode(recorder, job_id).await } else { Outcome::Done }
}

async fn next_record<S>(watch: &mut Option<std::pin::Pin<Box<S>>>) -> Option<fleet_protocol::JobRecord>
where
    S: futures::Stream<Item = fleet_protocol::JobRecord>,
{
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

fn start_streamer(
    config: &crate::config::RecorderConfig,
    request: &fleet_protocol::job::JobRequest,
    taking_over: bool,
    files: Option<LiveFiles>,
) -> Result<(Streamer, Vec<String>), fleet_pipelines::PipelineError> {
    let (width, height, fps, video_kbps) = request.video_preset.params();
    let streaming = &config.streaming;
    let (look, warnings) = fleet_transcoder::look::look_for(request.branding.as_ref(), &streaming.branding, &streaming.logos, height);
    for warning in &warnings {
        tracing::warn!(%warning, "the live composite's branding");
    }
    let spec = fleet_pipelines::live::LiveSpec {
        look,
        width,
        height,
        fps,
        video_kbps,
        encoder: config.streaming.encoder.clone(),
        latency_ms: config.streaming.latency_ms,
        ..fleet_pipelines::live::LiveSpec::hd720(&config.streaming.encoder)
    };
    Ok((Streamer::start(spec, Duration::from_secs(config.streaming.retry_window_s), taking_over, files)?, warnings))
}

async fn next_live_event(streamer: &mut Option<Streamer>) -> Option<fleet_pipelines::live::LiveEvent> {
    match streamer {
        Some(streamer) => streamer.next_event().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_retry(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Tells the job record how the streams and live files are doing, in order, the latest state only: a
/// report waiting while the previous one is applied is replaced by a newer one.
struct StreamReporter {
    latest: watch::Sender<Option<Transition>>,
    task: tokio::task::JoinHandle<()>,
}

impl StreamReporter {
    fn start(recorder: Arc<NodeContext>, job_id: SafeId) -> StreamReporter {
        let (latest, mut changes) = watch::channel(None::<Transition>);
        let task = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(report) = changes.borrow_and_update().clone() else { continue };
                if let Err(err) = recorder.jobs.apply(&job_id, report).await {
                    tracing::warn!(%err, "could not report the streams on the job");
                }
            }
        });
        StreamReporter { latest, task }
    }

    fn send(&self, report: Transition) {
        self.latest.send_replace(Some(report));
    }

    /// Applies the last report, then ends.
    async fn finish(self) {
        drop(self.latest);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Marks the record's new pauses and resumes in the timeline (at their wall-clock times).
fn mark_pauses(timeline: &mut Timeline, marked: &mut Vec<fleet_protocol::job::Pause>, record: &fleet_protocol::JobRecord, wall_zero: u64) {
    for (wall_ms, entry) in control::pause_marks(marked, &record.pauses) {
        timeline.write(wall_ms, wall_ms.saturating_sub(wall_zero) * 1_000_000, entry);
    }
}

async fn mark_recording(recorder: &NodeContext, job_id: &SafeId, session_id: &SafeId, wall_zero: u64) {
    let transition = Transition::MediaWriting { session: session_id.clone(), wall_zero_ms: wall_zero };
    if let Err(err) = recorder.jobs.apply(job_id, transition).await {
        tracing::warn!(%err, "could not mark the job recording");
    }
}

enum Upload {
    Now,
    /// At most every `timeline::LIVE_UPLOAD_INTERVAL`.
    Throttled,
}

/// Uploads the parts of a running session's timeline that changed (see [`LiveParts`]); a failed
/// upload is tried again with the next change.
async fn upload_live_timeline(recorder: &NodeContext, job: &SafeId, session: &SafeId, timeline: &Timeline, live: &mut LiveParts, when: Upload) {
    let parts = timeline.parts();
    let due = match when {
        Upload::Now => live.changed(&parts),
        Upload::Throttled => live.due(&parts, Instant::now()),
    };
    for index in due {
        let range = parts[index].clone();
        let bytes = match timeline.read(&range) {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::warn!(%err, "timeline part unreadable in the spool");
                return;
            }
        };
        if let Err(err) = recorder.storage.put_bytes(&keys::timeline_part(job, session, index), bytes).await {
            tracing::warn!(%err, index, "timeline part upload failed; will retry with the next change");
            return;
        }
        live.uploaded(index, range, Instant::now());
    }
}

async fn upload_timeline(recorder: &NodeContext, key: &str, timeline: &Timeline) -> bool {
    match recorder.storage.put_file(key, timeline.path()).await {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(%err, "timeline upload failed; will retry with the next change");
            false
        }
    }
}

async fn enqueue_transcode(recorder: &NodeContext, job_id: &SafeId) -> Outcome {
    let subject = match recorder.bus.jobs().get(job_id).await {
        Ok(Some((record, _))) => recorder.bus.transcode_subject_for(&record).to_string(),
        Ok(None) => return Outcome::Retry(RecordError::NoRecord(job_id.clone())),
        Err(err) => return Outcome::Retry(RecordError::JobStore("reading the job record", err)),
    };
    if subject == recorder.bus.names().transcode_gpu_subject {
        warn_when_no_gpu_transcoder(recorder, job_id).await;
    }
    let message_id = format!("transcode-{job_id}");
    match recorder.bus.enqueue(&subject, &message_id, &TranscodeJob { job_id: job_id.clone(), chunk: None, catch_up: false }).await {
        Ok(()) => Outcome::Done,
        Err(err) => Outcome::Retry(RecordError::JobStore("could not queue the transcode", err)),
    }
}

/// Adds `warning` to the job record (once).
async fn warn_on_job(recorder: &NodeContext, job_id: &SafeId, warning: String) {
    if let Err(err) = recorder.jobs.apply(job_id, Transition::Warn { warning }).await {
        tracing::warn!(%err, "could not add a warning to the job");
    }
}

/// A job that requires a GPU waits in its queue until a GPU transcoder joins: say so on the job when
/// none is registered now, so the wait is not a mystery.
async fn warn_when_no_gpu_transcoder(recorder: &NodeContext, job_id: &SafeId) {
    let nodes = recorder.bus.list_nodes().await.unwrap_or_default();
    if nodes.iter().any(|n| n.encoders.iter().any(|e| fleet_pipelines::encoders::is_hardware(e))) {
        return;
    }
    let warning = "the job requires a GPU encoder and no transcoder with one is registered: the transcode waits until one joins".to_string();
    tracing::warn!(job_id = %job_id, "{warning}");
    warn_on_job(recorder, job_id, warning).await;
}

/// A stop arrived while no capture ran: abort when nothing was recorded, else finalize what exists
/// (a killed recorder's segments are in storage even though its session never recorded its count).
async fn stop_without_capture(recorder: &NodeContext, job_id: &SafeId, replica: u8) -> Outcome {
    let media_stored = match media_stored(recorder, job_id).await {
        Ok(stored) => stored,
        Err(reason) => return Outcome::Retry(reason),
    };
    match recorder.jobs.apply(job_id, Transition::StopWithoutCapture { media_stored, replica }).await {
        Ok((_, Applied::Finalized)) => enqueue_transcode(recorder, job_id).await,
        Ok(_) => Outcome::Done,
        Err(err) => Outcome::Retry(err.into()),
    }
}

/// The capture could not run; media from earlier sessions is still finalized.
async fn fail(recorder: &NodeContext, job_id: &SafeId, session_id: &SafeId, handover_taker: bool, reason: String) -> Outcome {
    tracing::error!(%reason, "recording failed");
    let end = SessionEnd {
        ended_at_ms: now_ms(),
        segments: 0,
        reason: EndReason::Error,
        failure: Some(reason),
        handing_back: false,
        superseded: false,
        handover_taker,
    };
    end_session(recorder, job_id, session_id, end).await
}

/// What is left of the job's `max_duration` for a session starting now. The recording spans from its
/// first session's start, gaps and hand-over overlaps included (the output covers that span), so a
/// session that resumes a crashed one or takes over from a draining one records only the rest.
fn remaining_duration(record: &fleet_protocol::JobRecord, now_ms: u64) -> Duration {
    let first_start = record.sessions.iter().map(|s| s.started_at_ms).min().unwrap_or(now_ms);
    let elapsed_ms = now_ms.saturating_sub(first_start);
    Duration::from_millis((record.request.max_duration_s() as u64 * 1000).saturating_sub(elapsed_ms))
}

/// False only for a segment read whole and found without a frame; an unreadable one is uploaded as it is.
async fn segment_holds_media(path: &std::path::Path) -> bool {
    match tokio::fs::read(path).await {
        Ok(bytes) => fleet_pipelines::segment_writer::holds_media(&bytes),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_protocol::job::CaptureSession;

    #[test]
    fn max_duration_counts_from_the_first_session_through_gaps_and_open_sessions() {
        let request = serde_json::from_value(serde_json::json!({"room": "r", "max_duration_s": 3600})).unwrap();
        let mut record = fleet_protocol::JobRecord::new(fleet_protocol::SafeId::parse("rec_test").unwrap(), request, 0);
        assert_eq!(remaining_duration(&record, 1_000_000), Duration::from_secs(3600), "no session yet: all of it");
        let session = |started: u64, ended: Option<u64>| -> CaptureSession {
            serde_json::from_value(serde_json::json!({"id": format!("s{started}"), "node": "n", "started_at_ms": started, "ended_at_ms": ended}))
                .unwrap()
        };
        // A crashed session (0..600 s), a gap, and a draining one still open when a taker starts at 3000 s.
        record.sessions = vec![session(0, Some(600_000)), session(620_000, None), session(3_000_000, None)];
        assert_eq!(remaining_duration(&record, 3_000_000), Duration::from_secs(600));
        assert_eq!(remaining_duration(&record, 4_000_000), Duration::ZERO);
    }
}
