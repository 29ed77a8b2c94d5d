//! Controller: the fleet's REST API (recordings, nodes, health, metrics, OpenAPI), API-key auth,
//! job creation onto the JetStream record queue, and signed webhooks for every job state change.

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod webhooks;

pub use config::ControllerConfig;
