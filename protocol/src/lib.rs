//! The contract between the fleet's roles (controller, recorder, transcoder): job and event types, the
//! NATS names and topology, the storage key layout and client, and configuration loading.

pub mod bus;
pub mod config;
pub mod cpu;
pub mod events;
pub mod filepath;
pub mod ids;
pub mod job;
pub mod job_requests;
pub mod keys;
pub mod logging;
pub mod names;
pub mod nats_access;
pub mod node;
pub mod process;
pub mod queue;
pub mod retry;
pub mod storage;
pub mod time;
pub mod timeline;
pub mod tls;
pub mod transition;

pub use ids::SafeId;
pub use job::{JobRecord, JobRequest, JobState};
pub use transition::{Applied, Refusal, Transition};

/// The fleet's version, advertised in the node registry.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
