//! Recorder node: takes recording jobs from the `recorders` queue while it has free capacity, captures the
//! room into per-track raw segments plus `timeline.jsonl`, uploads each closed segment while recording,
//! and hands the job to the transcode queue when the capture ends.

mod capture;
pub mod config;
mod context;
mod disk;
mod error;
pub mod metrics;
mod recovery;
mod session;
mod streaming;
mod timeline;
mod uploader;
mod worker;

pub use config::RecorderConfig;
pub use worker::Recorder;
