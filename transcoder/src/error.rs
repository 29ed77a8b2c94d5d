//! Why a transcode failed, and the one place that decides what that means for its queue message: try
//! again later, or give up and fail the job.

use crate::inputs::InputError;
use fleet_pipelines::PipelineError;
use fleet_pipelines::mp4_info::Mp4Error;
use fleet_runtime::bus::BusError;
use fleet_runtime::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Inputs(#[from] InputError),
    #[error("{0}: {1}")]
    Storage(String, #[source] StorageError),
    #[error("{0}: {1}")]
    Disk(String, #[source] std::io::Error),
    #[error("{0}: {1}")]
    Pipeline(String, #[source] PipelineError),
    #[error("{0}: {1}")]
    Output(String, #[source] Mp4Error),
    #[error("{0}: {1}")]
    Thread(String, #[source] tokio::task::JoinError),
    /// No encoder on this node satisfies the job's GPU policy.
    #[error("{0}")]
    NoEncoder(String),
    /// A file job's paths cannot be used here (outside the shared root, missing, no root configured).
    #[error("{0}")]
    Files(String),
    /// The job's end-to-end encryption keys cannot serve (a required key missing): no node can do better.
    #[error("end-to-end encryption: {0}")]
    E2eeKeys(String),
    /// This node cannot open the job's sealed keys (no key pair here, or another pair's): another may.
    #[error("end-to-end encryption: {0}")]
    E2eeNode(String),
}

/// What becomes of a transcode message after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Deliver it again (to this or another transcoder); the reason shows on the job meanwhile.
    Retry,
    /// Fail the job with the reason and drop the message.
    GiveUp,
}

impl TranscodeError {
    /// Another attempt cannot succeed: the job's own inputs are unusable, whatever the machine.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            TranscodeError::Files(_) | TranscodeError::E2eeKeys(_) | TranscodeError::Inputs(InputError::NoSession | InputError::UnknownSession(_))
        )
    }

    /// `delivered`: this message's delivery count; `max_deliver`: the queue's limit (0 or less: none).
    pub fn disposition(&self, delivered: i64, max_deliver: i64) -> Disposition {
        if self.is_permanent() || (max_deliver > 0 && delivered >= max_deliver) { Disposition::GiveUp } else { Disposition::Retry }
    }
}

/// Names what was being done when a lower-level error happened (`"chunk upload"`, `"scratch dir"`).
pub(crate) trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T, TranscodeError>;
}

macro_rules! context_for {
    ($error:ty, $variant:ident) => {
        impl<T> Context<T> for Result<T, $error> {
            fn context(self, what: impl Into<String>) -> Result<T, TranscodeError> {
                self.map_err(|e| TranscodeError::$variant(what.into(), e))
            }
        }
    };
}

context_for!(StorageError, Storage);
context_for!(std::io::Error, Disk);
context_for!(PipelineError, Pipeline);
context_for!(Mp4Error, Output);
context_for!(tokio::task::JoinError, Thread);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_inputs_give_up_at_once_and_the_rest_until_the_last_delivery() {
        let files = TranscodeError::Files("input x does not exist".into());
        assert_eq!(files.disposition(1, 3), Disposition::GiveUp);
        let no_session = TranscodeError::Inputs(InputError::NoSession);
        assert_eq!(no_session.disposition(1, 3), Disposition::GiveUp);
        let disk = TranscodeError::Disk("scratch dir".into(), std::io::Error::other("full"));
        assert_eq!(disk.to_string(), "scratch dir: full");
        assert_eq!(disk.disposition(1, 3), Disposition::Retry);
        assert_eq!(disk.disposition(3, 3), Disposition::GiveUp);
        assert_eq!(disk.disposition(7, 0), Disposition::Retry, "no limit");
        let encoder = TranscodeError::NoEncoder("the job requires a GPU encoder".into());
        assert_eq!(encoder.disposition(2, 3), Disposition::Retry, "another node may have one");
    }
}
