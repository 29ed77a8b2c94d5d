//! A streaming job's live side on the recorder: the live composite (fed by the capture's tracks), its
//! outputs kept as the job record wants them (added and removed while live), each reconnected or given
//! up by [`policy::Reconnect`], and what the record is told about them.

pub mod policy;

use fleet_pipelines::PipelineError;
use fleet_pipelines::live::{LiveComposite, LiveEvent, LiveSpec};
use fleet_protocol::SafeId;
use fleet_protocol::streams::{StreamOutput, StreamReport, StreamState, StreamUrl};
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
}

/// What the session does about a composite event beyond the streams' states.
pub enum Notice {
    None,
    /// A problem worth a warning on the job (an input that could not be decoded).
    Warn(String),
    /// The composite failed: nothing streams any more.
    Failed(String),
}

impl Streamer {
    /// Starts the composite at the session's time 0 (call it just before the capture starts).
    pub fn start(spec: LiveSpec, retry_window: Duration, taking_over: bool) -> Result<Streamer, PipelineError> {
        let (tx, events) = mpsc::unbounded_channel();
        let composite = LiveComposite::start(spec, 0, move |event| {
            let _ = tx.send(event);
        })?;
        Ok(Streamer { composite: Arc::new(composite), outputs: BTreeMap::new(), events, retry_window, taking_over, unreported: false })
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
        if let Err(err) = self.composite.add_output(id.as_str(), output.url.expose()) {
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

    /// The states to tell the record, when something changed since last asked.
    pub fn take_reports(&mut self) -> Option<Vec<StreamReport>> {
        if !std::mem::take(&mut self.unreported) {
            return None;
        }
        Some(
            self.outputs
                .iter()
                .map(|(id, o)| StreamReport { id: id.clone(), state: o.state, retries: o.policy.retries, last_error: o.last_error.clone() })
                .collect(),
        )
    }

    pub fn stop(&self) {
        self.composite.stop();
    }
}
