//! The tracks of a capture: one writer per received track (a new one when its codec changes), its RTP
//! timing, keyframe requests, and the writers' own notes (keyframe wanted, finished, failed). The
//! connection (`mod.rs`) hands frames in; nothing here talks to signalling.

use super::peer::{self, Peer};
use super::room::RoomTracker;
use super::track_timing::{Restart, TrackTiming};
use super::{SessionClock, blank_frames};
use crate::capture::events::{SourceEvent, SourceEvents};
use crate::metrics::{DropReason, Kind, RecorderMetrics};
use crate::timeline::Entry;
use fleet_pipelines::PipelineError;
use fleet_pipelines::live::LiveComposite;
use fleet_pipelines::track_writer::{TrackCodec, TrackWriter, TrackWriterEvent};
use fleet_protocol::SafeId;
use livekit_protocol as proto;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Keyframe requests (PLI) per track at most this often.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// How long stopping writers may take to close their last segments.
const FINISH_TIMEOUT: Duration = Duration::from_secs(15);
/// Sender reports go to the timeline at most this often per track.
const SENDER_REPORT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One track being written.
pub struct TrackSink {
    video: bool,
    /// LiveKit end-to-end encryption (`gcm`, `custom`): the frames are stored exactly as they came.
    encryption: Option<&'static str>,
    participant: SafeId,
    /// Where the current writer stores the track (and its id in the timeline): the track's sid, then
    /// `<sid>-2`, `-3`… after each codec change.
    track: SafeId,
    /// How many writers this track has had: a codec change mid-track starts a new one.
    generation: u32,
    clock_rate: u32,
    writer: Option<TrackWriter>,
    /// What the current writer stores.
    codec: Option<TrackCodec>,
    /// Writers of earlier codecs, closing their last segments.
    retired: Vec<(SafeId, TrackWriter)>,
    timing: TrackTiming,
    waiting_for_keyframe: bool,
    last_keyframe_request: Option<Instant>,
    last_sender_report: Option<(Instant, SystemTime)>,
    /// Breaks in the RTP sequence (packets that never arrived): logged, as lost audio cannot be asked for again.
    gaps: u32,
    /// Told to finish (unpublished or stopping): frames that still arrive are dropped.
    finishing: bool,
    finished: bool,
}

impl TrackSink {
    fn new(participant: SafeId, track: SafeId, clock_rate: u32, video: bool, encryption: Option<&'static str>) -> TrackSink {
        TrackSink {
            video,
            encryption,
            participant,
            track,
            generation: 1,
            clock_rate,
            writer: None,
            codec: None,
            retired: Vec::new(),
            timing: TrackTiming::new(clock_rate, video),
            waiting_for_keyframe: video,
            last_keyframe_request: None,
            last_sender_report: None,
            gaps: 0,
            finishing: false,
            finished: false,
        }
    }
}

/// Which writer a note is from: the track's sid, and where that writer stores it (a track whose codec
/// changed has had several).
pub struct WriterKey {
    sid: String,
    storage: SafeId,
}

/// Messages from track writers' pipelines back to the capture loop.
pub enum WriterNote {
    KeyframeWanted(WriterKey),
    Finished(WriterKey),
    Failed(WriterKey, fleet_pipelines::PipelineError),
}

/// Every track of the capture, by track sid.
pub struct Tracks {
    sinks: HashMap<String, TrackSink>,
    notes_tx: mpsc::UnboundedSender<WriterNote>,
    pub notes: mpsc::UnboundedReceiver<WriterNote>,
    /// Segments go to `<media_dir>/<participant>/<track>/NNNNN.mkv`.
    media_dir: PathBuf,
    segment_ns: u64,
    clock: SessionClock,
    events: SourceEvents,
    /// A streaming job's live composite: every frame written also goes there, as it arrives.
    live: Option<Arc<LiveComposite>>,
    /// Where the live composite shows each frame (participants' tracks lined up by sender reports).
    live_sync: super::live_sync::LiveSync,
    metrics: Arc<RecorderMetrics>,
}

impl Tracks {
    /// The live composite, when the job has one.
    pub fn live(&self) -> Option<&Arc<LiveComposite>> {
        self.live.as_ref()
    }

    pub fn new(
        media_dir: PathBuf,
        segment_ns: u64,
        clock: SessionClock,
        events: SourceEvents,
        live: Option<Arc<LiveComposite>>,
        metrics: Arc<RecorderMetrics>,
    ) -> Tracks {
        let (notes_tx, notes) = mpsc::unbounded_channel();
        Tracks { sinks: HashMap::new(), notes_tx, notes, media_dir, segment_ns, clock, events, live, live_sync: Default::default(), metrics }
    }

    fn timeline(&self, entry: Entry) {
        let _ = self.events.send(SourceEvent::Room { running_ns: self.clock.running_ns(), entry });
    }

    /// A new peer connection restarts every track's RTP timing, and video must restart on a keyframe.
    pub fn new_connection(&mut self) {
        for track in self.sinks.values_mut() {
            track.timing.restart();
            track.waiting_for_keyframe = track.video;
        }
    }

    /// The track was unpublished: its writer closes its last segment; frames that still come are dropped.
    pub fn unpublished(&mut self, track_sid: &str) {
        if let Some(live) = &self.live {
            live.remove_track(track_sid);
        }
        self.live_sync.forget(track_sid);
        if let Some(track) = self.sinks.get_mut(track_sid) {
            match &track.writer {
                Some(writer) if !track.finishing => writer.finish(),
                Some(_) => {}
                None => track.finished = true,
            }
            track.finishing = true;
        }
    }

    /// Writes one received frame to its track (starting or switching the track's writer as needed).
    pub fn on_media(&mut self, peer: &mut Peer, mids: &HashMap<String, String>, data: str0m::media::MediaData, room: &RoomTracker) {
        let Some(track_sid) = mids.get(&data.mid.to_string()).cloned() else { return };
        let spec = data.params.spec();
        let codec_name = peer::codec_name(spec.codec);
        let clock_rate = spec.clock_rate.get();
        // Every audio frame stands alone; str0m flags keyframes for video only.
        let keyframe = spec.codec == str0m::format::Codec::Opus || data.is_keyframe();
        let now_ns = self.clock.running_ns_at(data.network_time);
        let codec = TrackCodec::from_name(codec_name);
        let kind = Kind::of(spec.codec.is_video());
        self.metrics.frame_received(kind);
        if keyframe && codec.is_some_and(|c| blank_frames::is_blank_keyframe(c, &data.data)) {
            tracing::debug!(track = %track_sid, "the SFU's blank frame; not recorded");
            self.metrics.frame_dropped(kind, DropReason::SfuBlank);
            return;
        }
        if !self.sinks.contains_key(&track_sid) {
            let (participant, track) = track_ids(room, &track_sid);
            let video = codec.is_some_and(|c| c.kind() == fleet_pipelines::segment_writer::TrackKind::Video);
            self.live_sync.track(&track_sid, participant.as_str(), clock_rate);
            let mut sink = TrackSink::new(participant, track, clock_rate, video, track_encryption(room, &track_sid));
            if codec.is_none() {
                tracing::warn!(track = %track_sid, codec = codec_name, "codec not recordable here; track skipped");
                sink.finishing = true;
                sink.finished = true;
            }
            self.sinks.insert(track_sid.clone(), sink);
        }
        let sink = self.sinks.get(&track_sid).expect("inserted above");
        if sink.finished || sink.finishing {
            self.metrics.frame_dropped(kind, DropReason::NotWritable);
            return;
        }
        if let (Some(writing), Some(arriving)) = (sink.codec, codec)
            && writing != arriving
        {
            // The SFU switched the track's codec (a publisher regressed to its backup codec): one writer
            // stores one codec, so this one closes and a new one starts at the next keyframe.
            self.change_codec(&track_sid, arriving, room);
        }
        let sink = self.sinks.get(&track_sid).expect("present");
        if sink.writer.is_none() {
            let Some(codec) = codec else {
                self.metrics.frame_dropped(kind, DropReason::NotWritable);
                return;
            };
            if sink.video && !keyframe {
                // Video that began with a delta frame: wait for the keyframe asked for.
                let sink = self.sinks.get_mut(&track_sid).expect("present");
                request_keyframe(peer, sink, data.mid);
                self.metrics.frame_dropped(kind, DropReason::AwaitingKeyframe);
                return;
            }
            let started = self.start_writer(&track_sid, sink, codec, &data.data);
            let sink = self.sinks.get_mut(&track_sid).expect("present");
            match started {
                Ok(writer) => {
                    sink.writer = Some(writer);
                    sink.codec = Some(codec);
                    // Encrypted frames cannot be decoded here (the keys are the transcoder's).
                    if let Some(live) = self.live.as_ref().filter(|_| sink.encryption.is_none()) {
                        let (identity, muted) = room.track(&track_sid).map(|(p, t)| (p.identity.clone(), t.muted)).unwrap_or_default();
                        live.add_track(&track_sid, &identity, &display_name(room, &track_sid), codec);
                        live.set_track_muted(&track_sid, muted);
                    }
                }
                Err(reason) => {
                    tracing::warn!(track = %track_sid, %reason, "could not start the track writer; track skipped");
                    sink.finishing = true;
                    sink.finished = true;
                    self.metrics.frame_dropped(kind, DropReason::NotWritable);
                    return;
                }
            }
        }
        let sink = self.sinks.get_mut(&track_sid).expect("present");
        if !data.contiguous {
            sink.waiting_for_keyframe |= sink.video;
            if sink.timing.is_anchored() {
                self.metrics.sequence_gap(kind);
                sink.gaps += 1;
                if sink.gaps.is_power_of_two() {
                    tracing::warn!(track = %track_sid, gaps = sink.gaps, "packets missing from the track");
                }
            }
        }
        if sink.video && sink.waiting_for_keyframe {
            if keyframe {
                sink.waiting_for_keyframe = false;
            } else {
                request_keyframe(peer, sink, data.mid);
                self.metrics.frame_dropped(kind, DropReason::AwaitingKeyframe);
                return;
            }
        }
        let rtp = data.time.numer();
        if !sink.video && sink.timing.steps_back(rtp) {
            tracing::debug!(track = %track_sid, rtp, "audio frame at or before the last one written; dropped");
            self.metrics.frame_dropped(kind, DropReason::SteppedBack);
            return;
        }
        let placed = sink.timing.place(rtp, now_ns);
        if let Some(restart) = placed.restart {
            if let Restart::Jumped { by_ms } = restart {
                tracing::warn!(track = %track_sid, jump_ms = by_ms, "RTP time jumped; restarting the track's timing");
            }
            let _ = self.events.send(SourceEvent::Room {
                running_ns: placed.pts_ns,
                entry: Entry::TrackStarted {
                    participant: sink.participant.to_string(),
                    track: sink.track.to_string(),
                    rtp_time: rtp,
                    clock_rate: sink.clock_rate,
                },
            });
        }
        if let Some(writer) = &sink.writer {
            match writer.push(placed.pts_ns, placed.duration_ns, &data.data, keyframe) {
                Ok(()) => self.metrics.frame_written(kind),
                Err(err) => {
                    tracing::warn!(track = %track_sid, %err, "frame not written");
                    self.metrics.frame_dropped(kind, DropReason::NotWritable);
                }
            }
        }
        // A report sent before the sender's first packet maps nothing (str0m sends RTP time 0 then).
        let report = data.last_sender_info.filter(|r| r.sender_packet_count > 0);
        if let Some(live) = &self.live {
            if let Some(report) = &report {
                let sender_ns = report.ntp_time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
                self.live_sync.on_sender_report(&track_sid, report.rtp_time.numer(), sender_ns);
            }
            let shown = self.live_sync.place(&track_sid, rtp, now_ns, placed.live_pts_ns);
            live.push(&track_sid, shown, placed.duration_ns, &data.data, keyframe);
        }
        if let Some(report) = report {
            let due = sink.last_sender_report.is_none_or(|(at, ntp)| ntp != report.ntp_time && at.elapsed() >= SENDER_REPORT_LOG_INTERVAL);
            if due {
                sink.last_sender_report = Some((Instant::now(), report.ntp_time));
                let ntp_unix_ms = report.ntp_time.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
                let _ = self.events.send(SourceEvent::Room {
                    running_ns: self.clock.running_ns(),
                    entry: Entry::SenderReport {
                        participant: sink.participant.to_string(),
                        track: sink.track.to_string(),
                        ntp_unix_ms,
                        rtp_time: report.rtp_time.numer(),
                    },
                });
            }
        }
    }

    /// Retires the track's writer (it closes its last segment) and readies a new one for `codec`, stored
    /// as a new track of the same participant: the timeline says the old one was unpublished and the new
    /// one published, so the transcode shows one after the other.
    fn change_codec(&mut self, track_sid: &str, codec: TrackCodec, room: &RoomTracker) {
        let source = room.track(track_sid).map(|(_, t)| t.source().as_str_name().to_ascii_lowercase()).unwrap_or_else(|| "unknown".into());
        let sink = self.sinks.get_mut(track_sid).expect("present");
        let old_track = sink.track.clone();
        if let Some(writer) = sink.writer.take() {
            writer.finish();
            sink.retired.push((old_track.clone(), writer));
        }
        sink.generation += 1;
        let base: String = track_sid.chars().take(fleet_protocol::ids::MAX_ID_LEN - 8).collect();
        sink.track = SafeId::parse(format!("{base}-{}", sink.generation)).unwrap_or_else(|_| sanitize(&format!("{base}-{}", sink.generation)));
        sink.codec = None;
        sink.timing.restart();
        sink.waiting_for_keyframe = sink.video;
        tracing::warn!(track = %track_sid, from = ?old_track, to = %sink.track, codec = codec.as_str(), "the track's codec changed; a new writer takes over");
        let (participant, new_track, kind) = (sink.participant.to_string(), sink.track.to_string(), if sink.video { "video" } else { "audio" });
        let encryption = sink.encryption.map(String::from);
        self.timeline(Entry::TrackUnpublished { participant: participant.clone(), track: old_track.to_string() });
        self.timeline(Entry::TrackPublished { participant, track: new_track, kind: kind.into(), codec: codec.as_str().into(), source, encryption });
    }

    /// The track's id in storage and the timeline: its sid until its codec changes.
    pub fn storage_id(&self, track_sid: &str) -> String {
        self.sinks.get(track_sid).map_or_else(|| track_sid.to_string(), |t| t.track.to_string())
    }

    fn start_writer(&self, track_sid: &str, sink: &TrackSink, codec: TrackCodec, first_frame: &[u8]) -> Result<TrackWriter, PipelineError> {
        let dir = self.media_dir.join(sink.participant.as_str()).join(sink.track.as_str());
        let notes = self.notes_tx.clone();
        let events = self.events.clone();
        let (participant, track, sid) = (sink.participant.clone(), sink.track.clone(), track_sid.to_string());
        tracing::info!(track = %track_sid, participant = %participant, storage = %track, codec = codec.as_str(), "recording track");
        let key = move || WriterKey { sid: sid.clone(), storage: track.clone() };
        let storage = sink.track.clone();
        TrackWriter::start(&dir, self.segment_ns, codec, sink.encryption.is_some(), first_frame, move |event| match event {
            TrackWriterEvent::Fragment(fragment) => {
                let _ = events.send(SourceEvent::Fragment { participant: participant.clone(), track: storage.clone(), fragment });
            }
            TrackWriterEvent::KeyframeWanted => {
                let _ = notes.send(WriterNote::KeyframeWanted(key()));
            }
            TrackWriterEvent::Finished => {
                let _ = notes.send(WriterNote::Finished(key()));
            }
            TrackWriterEvent::Failed(err) => {
                let _ = notes.send(WriterNote::Failed(key(), err));
            }
        })
    }

    pub fn on_writer_note(&mut self, peer: &mut Peer, mids: &HashMap<String, String>, note: WriterNote) {
        match note {
            WriterNote::KeyframeWanted(key) => {
                let mid = mids.iter().find(|(_, t)| **t == key.sid).map(|(m, _)| str0m::media::Mid::from(m.as_str()));
                if let (Some(mid), Some(sink)) = (mid, self.sinks.get_mut(&key.sid))
                    && sink.track == key.storage
                {
                    request_keyframe(peer, sink, mid);
                }
            }
            WriterNote::Finished(key) => self.writer_done(&key),
            WriterNote::Failed(key, err) => {
                let sid = key.sid.clone();
                tracing::error!(track = %sid, storage = %key.storage, %err, "track writer failed; the track's earlier segments are kept");
                // Never a silent gap: a full disk moves the recording to another recorder, any other
                // failure is said on the job.
                let event = match err {
                    fleet_pipelines::PipelineError::DiskFull { .. } => SourceEvent::SpoolFull(err.to_string()),
                    _ => SourceEvent::TrackLost(format!("track {sid} is no longer recorded: {err}")),
                };
                let _ = self.events.send(event);
                self.writer_done(&key);
            }
        }
    }

    fn writer_done(&mut self, key: &WriterKey) {
        let Some(track) = self.sinks.get_mut(&key.sid) else { return };
        // Dropping a writer sets its pipeline to NULL; done here, off the bus thread that told us.
        if track.track == key.storage {
            track.finished = true;
            track.writer = None;
        } else {
            track.retired.retain(|(storage, _)| *storage != key.storage);
        }
    }

    /// Ends every track and waits until each writer has closed its last segment.
    pub async fn finish_all(&mut self) {
        for track in self.sinks.values_mut() {
            match &track.writer {
                Some(writer) if !track.finished && !track.finishing => writer.finish(),
                Some(_) if !track.finished => {}
                _ => track.finished = true,
            }
            track.finishing = true;
        }
        let deadline = tokio::time::Instant::now() + FINISH_TIMEOUT;
        while self.sinks.values().any(|t| !t.finished || !t.retired.is_empty()) {
            let Ok(note) = tokio::time::timeout_at(deadline, self.notes.recv()).await else {
                let stuck: Vec<&String> = self.sinks.iter().filter(|(_, t)| !t.finished || !t.retired.is_empty()).map(|(sid, _)| sid).collect();
                tracing::error!(?stuck, "track writers did not finish in time; their last segments stay in the spool");
                break;
            };
            match note {
                Some(WriterNote::Finished(key)) => self.writer_done(&key),
                Some(WriterNote::Failed(key, reason)) => {
                    tracing::error!(track = %key.sid, storage = %key.storage, %reason, "track writer failed while finishing");
                    self.writer_done(&key);
                }
                Some(WriterNote::KeyframeWanted(_)) => {}
                None => break,
            }
        }
    }
}

fn request_keyframe(peer: &mut Peer, sink: &mut TrackSink, mid: str0m::media::Mid) {
    if sink.last_keyframe_request.is_some_and(|at| at.elapsed() < KEYFRAME_REQUEST_INTERVAL) {
        return;
    }
    sink.last_keyframe_request = Some(Instant::now());
    peer.request_keyframe(mid);
}

/// The track's end-to-end encryption as the SFU announced it, if any.
fn track_encryption(room: &RoomTracker, track_sid: &str) -> Option<&'static str> {
    room.track(track_sid).and_then(|(_, t)| super::codecs::encryption_name(t))
}

/// What a track's tile is labelled with: its publisher's name, else identity.
fn display_name(room: &RoomTracker, track_sid: &str) -> String {
    room.track(track_sid).map(|(p, _)| if p.name.is_empty() { p.identity.clone() } else { p.name.clone() }).unwrap_or_default()
}

/// Storage ids of a track: its publisher's identity (when it is a safe id) and the track sid.
fn track_ids(room: &RoomTracker, track_sid: &str) -> (SafeId, SafeId) {
    let participant = match room.track(track_sid) {
        Some((p, _)) => participant_key(p),
        None => SafeId::parse("unknown").expect("safe"),
    };
    let track = SafeId::parse(track_sid).unwrap_or_else(|_| sanitize(track_sid));
    (participant, track)
}

/// The participant's storage id: its identity when that is a safe id, else a sanitized form.
pub fn participant_key(info: &proto::ParticipantInfo) -> SafeId {
    SafeId::parse(&info.identity).unwrap_or_else(|_| sanitize(&format!("{}-{}", info.identity, info.sid)))
}

pub fn sanitize(raw: &str) -> SafeId {
    let cleaned: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(64)
        .collect();
    SafeId::parse(cleaned).unwrap_or_else(|_| SafeId::parse("participant").expect("safe"))
}
