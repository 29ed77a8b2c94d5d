//! Transcoder worker: takes transcode jobs from the `transcoders` queue, turns a job's raw segments into
//! one faststart MP4 (or M4A for audio-only jobs) with a manifest, and marks the job complete.
//! Runs as the `transcoder` binary (transcoder-only nodes) or inside a recorder in mode `both`.

mod chunks;
pub mod config;
mod context;
mod coverage;
mod decryption;
mod delivery;
mod error;
mod files;
mod inputs;
mod layout_plan;
mod lipsync;
pub mod look;
mod manifest;
pub mod metrics;
mod progressive;
mod recording;
mod room_history;
mod stages;
mod stored_timeline;
mod worker;

pub use config::TranscoderConfig;
pub use worker::{Transcoder, WorkerIdentity};
