//! Controller: the fleet's REST API (recordings, nodes, health, metrics, OpenAPI), API-key auth,
//! job creation onto the JetStream record queue, signed webhooks for every job state change, and the
//! front doors for the servers that run alongside (plugNmeet's recorder protocol, LiveKit's Egress API).

pub mod api;
pub mod auth;
pub mod auto_record;
pub mod config;
pub mod dashboard;
pub mod e2ee;
pub mod egress;
pub mod error;
pub mod event_sinks;
pub mod extract;
pub mod failover;
pub mod http_post;
pub mod job_index;
pub mod jobs;
pub mod media;
pub mod metrics;
pub mod node_requests;
pub mod openapi;
pub mod plugnmeet;
pub mod retention;
pub mod state;
pub mod state_events;
pub mod tls;
pub mod webhooks;

pub use config::ControllerConfig;
