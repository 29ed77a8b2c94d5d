//! A live job's side on the recorder: the live composite (fed by the capture's tracks), its RTMP
//! outputs kept as the job record wants them (added and removed while live), each reconnected or given
//! up by [`policy::Reconnect`], its live files ([`live_files`]: HLS, snapshots), and what the record is
//! told about them.

pub mod live_files;
mod playlist;
pub mod policy;

use fleet_pipelines::PipelineError;
use fleet_pipelines::live::OutputTarget;
use fleet_pipelines::live::{LiveComposite, LiveEvent, LiveSpec};
use fleet_protocol::streams::{StreamOutput, StreamReport, StreamState, StreamUrl};
use fleet_protocol::{SafeId, Transition};
use live_files::LiveFiles;
use policy::{Decision, Reconnect};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

struct Output {
    url: StreamUrl,
    policy: Reconnect,
    state: StreamState,
    last_error: Option<String>,
    /// Down, to be started again then.
    retry_at: Option<Instant>,
}

pub struct Streamer {
    composite: Arc<LiveComposite>,
    outputs: BTreeMap<SafeId, Output>,
    events: mpsc::UnboundedReceiver<LiveEvent>,
    retry_window: Duration,
    /// This session takes the streams over from an earlier one (see [`Reconnect::new`]).
    taking_over: bool,
    /// Something the record should be told changed.
    unreported: bool,
    files: Option<LiveFiles>,
}

/// The composite's own HLS output (RTMP outputs are named by their stream ids, `rtmpN`).
const HLS_OUTPUT: &str = "hls";

/// What the session does about a composite event beyond the streams' states.
pub enum Notice {
    None,
    /// A problem worth a warning on the job (an input that could not be decoded).
    Warn(String),
    /// The composite failed: nothing streams any more.
    Failed(String),
}

impl Streamer {
    /// Starts the composite at the session's time 0 (call it just before the capture starts), with the
    /// live files' HLS output and snapshots when the job has them.
    pub fn start(mut spec: LiveSpec, retry_window: Duration, taking_over: bool, files: Option<LiveFiles>) -> Result<Streamer, PipelineError> {
        let (tx, events) = mpsc::unbounded_channel();
        spec.snapshots = files.as_ref().and_then(|f| f.snapshot_spec((spec.width, spec.height)));
        let composite = LiveComposite::start(spec, 0, move |event| {
            let _ = tx.send(event);
        })?;
        if let Some(target) = files.as_ref().and_then(LiveFiles::hls_target) {
            composite.add_output(HLS_OUTPUT, &target)?;
        }
        Ok(Streamer { composite: Arc::new(composite), outputs: BTreeMap::new(), events, retry_window, taking_over, unreported: false, files })
    }

    pub fn composite(&self) -> Arc<LiveComposite> {
        self.composite.clone()
    }

    /// Starts the outputs the record wants that are not running, stops those it no longer wants.
    pub fn follow(&mut self, wanted: &[StreamOutput]) {
        for stream in wanted {
            let running = self.outputs.contains_key(&stream.id);
            match (stream.state.is_wanted(), running) {
                (true, false) => {
                    let Some(url) = stream.stream_url() else { continue };
                    tracing::info!(stream = %stream.id, url = %url.redacted(), "stream output starting");
                    let mut output = Output {
                        url,
                        policy: Reconnect::new(self.retry_window, self.taking_over),
                        state: StreamState::Starting,
                        last_error: None,
                        retry_at: None,
                    };
                    self.connect(&stream.id, &mut output);
                    self.outputs.insert(stream.id.clone(), output);
                }
                (false, true) => {
                    tracing::info!(stream = %stream.id, "stream output removed");
                    self.composite.remove_output(stream.id.as_str());
                    self.outputs.remove(&stream.id);
                }
                _ => {}
            }
        }
    }

    fn connect(&self, id: &SafeId, output: &mut Output) {
        output.retry_at = None;
        if let Err(err) = self.composite.add_output(id.as_str(), &OutputTarget::Rtmp(output.url.expose().to_string())) {
            // Not the server's doing: the pipeline could not be built; the same error would come again.
            output.state = StreamState::Failed;
            output.last_error = Some(err.to_string());
        }
    }

    pub async fn next_event(&mut self) -> Option<LiveEvent> {
        self.events.recv().await
    }

    pub fn on_event(&mut self, event: LiveEvent, now: Instant) -> Notice {
        match event {
            LiveEvent::OutputUp { id } => {
                if let Some(output) = self.output(&id) {
                    output.policy.on_live();
                    output.state = StreamState::Live;
                    tracing::info!(stream = %id, retries = output.policy.retries, "stream output live");
                    self.unreported = true;
                }
                Notice::None
            }
            LiveEvent::OutputFailed { id, error } if id == HLS_OUTPUT => {
                // A disk or muxer failure: it would fail again the same way. Snapshots and streams go on.
                self.composite.remove_output(&id);
                Notice::Warn(format!("live HLS stopped: {error}"))
            }
            LiveEvent::SegmentClosed { path, duration_ns, .. } => {
                if let Some(files) = &mut self.files {
                    files.on_segment(&path, duration_ns);
                }
                Notice::None
            }
            LiveEvent::Snapshot { jpeg, .. } => {
                if let Some(files) = &mut self.files {
                    files.on_snapshot(&jpeg, fleet_protocol::time::now_ms());
                }
                Notice::None
            }
            LiveEvent::OutputFailed { id, error } => {
                let Some(output) = self.output(&id) else { return Notice::None };
                output.last_error = Some(error.clone());
                match output.policy.on_failure(now) {
                    Decision::RetryAt(at) => {
                        tracing::warn!(stream = %id, %error, retries = output.policy.retries, "stream output down; reconnecting");
                        output.state = if output.policy.ever_live() { StreamState::Retrying } else { StreamState::Starting };
                        output.retry_at = Some(at);
                    }
                    Decision::GiveUp => {
                        tracing::warn!(stream = %id, %error, "stream output given up");
                        output.state = StreamState::Failed;
                    }
                }
                self.composite.remove_output(&id);
                self.unreported = true;
                Notice::None
            }
            LiveEvent::InputFailed { track, error } => {
                self.composite.remove_track(&track);
                Notice::Warn(format!("live composite: track {track} dropped: {error}"))
            }
            LiveEvent::Failed(err) => {
                for output in self.outputs.values_mut().filter(|o| o.state.is_wanted()) {
                    output.state = StreamState::Failed;
                    output.last_error = Some(format!("the live composite failed: {err}"));
                }
                self.unreported = true;
                Notice::Failed(err.to_string())
            }
        }
    }

    fn output(&mut self, id: &str) -> Option<&mut Output> {
        self.outputs.iter_mut().find(|(key, _)| key.as_str() == id).map(|(_, output)| output)
    }

    /// Logs the composite's state (debug): what it has encoded so far.
    pub fn log_health(&self) {
        let (state, buffers) = self.composite.health();
        tracing::debug!(?state, buffers, "live composite");
    }

    pub fn next_retry(&self) -> Option<Instant> {
        self.outputs.values().filter_map(|o| o.retry_at).min()
    }

    /// Reconnects the outputs whose wait is over.
    pub fn retry_due(&mut self, now: Instant) {
        let due: Vec<SafeId> = self.outputs.iter().filter(|(_, o)| o.retry_at.is_some_and(|at| at <= now)).map(|(id, _)| id.clone()).collect();
        for id in due {
            let mut output = self.outputs.remove(&id).expect("listed above");
            self.connect(&id, &mut output);
            self.outputs.insert(id, output);
        }
    }

    /// What to tell the record, when something changed since last asked.
    pub fn take_report(&mut self) -> Option<Transition> {
        let files = self.files.as_mut().and_then(LiveFiles::take_report);
        if !std::mem::take(&mut self.unreported) && files.is_none() {
            return None;
        }
        let (hls, images) = files.unwrap_or_default();
        Some(Transition::ReportStreams { reports: self.stream_reports(), hls, images })
    }

    fn stream_reports(&self) -> Vec<StreamReport> {
        self.outputs
            .iter()
            .map(|(id, o)| StreamReport { id: id.clone(), state: o.state, retries: o.policy.retries, last_error: o.last_error.clone() })
            .collect()
    }

    /// Stops the composite and its outputs, stores the live files' last segment, snapshots and closed
    /// playlists; the last report for the record, and an upload that gave up.
    pub async fn finish(mut self) -> (Transition, Option<String>) {
        let composite = self.composite.clone();
        // Blocks while the outputs finish (the last segment is closed then).
        let _ = tokio::task::spawn_blocking(move || composite.stop()).await;
        while let Ok(event) = self.events.try_recv() {
            self.on_event(event, Instant::now());
        }
        let (uploaded, (hls, images)) = match self.files.take() {
            Some(files) => files.finish(fleet_protocol::time::now_ms()).await,
            None => (Ok(0), (None, None)),
        };
        let failure = uploaded.err().map(|err| format!("live files: {err}"));
        (Transition::ReportStreams { reports: self.stream_reports(), hls, images }, failure)
    }
}
