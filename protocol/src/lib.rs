//! The contract between the fleet's roles (controller, recorder, transcoder), as data and pure logic:
//! job records and their state machine, events, ids, storage keys, NATS names and permissions, the
//! timeline, and the messages nodes send. No I/O: connections, storage, queues and configuration
//! loading are in `fleet-runtime`.

pub mod branding;
pub mod e2ee;
pub mod events;
pub mod filepath;
pub mod ids;
pub mod job;
pub mod job_requests;
pub mod keys;
pub mod live_files;
pub mod names;
pub mod nats_access;
pub mod node;
pub mod secret;
pub mod streams;
pub mod time;
pub mod timeline;
pub mod transition;

pub use ids::SafeId;
pub use job::{Applied, JobRecord, JobRequest, JobState};
pub use transition::{Refusal, Transition};

/// For `skip_serializing_if` on what a client may send but no record ever holds (plaintext keys, stream
/// URLs): unlike `skip_serializing`, the API's document still lists such a field (as write-only).
pub(crate) fn never_serialized<T>(_: &T) -> bool {
    true
}

/// The fleet's version, advertised in the node registry.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
