//! Why a recording step failed: a job message that could not be taken or finished (retried later), or a
//! session's media that could not be stored (the session fails with this reason).

use fleet_protocol::SafeId;
use fleet_runtime::bus::BusError;
use fleet_runtime::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The job store, while doing what the text says.
    #[error("{0}: {1}")]
    JobStore(&'static str, #[source] BusError),
    #[error("{0}: {1}")]
    Storage(&'static str, #[source] StorageError),
    #[error("upload of {key} kept failing for {seconds} s: {source}")]
    UploadGaveUp {
        key: String,
        seconds: u64,
        #[source]
        source: StorageError,
    },
    #[error("{0}: {1}")]
    Task(&'static str, #[source] tokio::task::JoinError),
    #[error("spool directory {}: {source}", path.display())]
    Spool {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("job {0} has no record")]
    NoRecord(SafeId),
}
