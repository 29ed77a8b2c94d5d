//! devroom: a stand-in for a LiveKit server in tests and demos. It speaks LiveKit's signalling protocol
//! (v0 `/rtc`) to real LiveKit clients and publishes synthetic participants whose pre-encoded media
//! carries A/V sync markers, following a scenario file.

pub mod auth;
pub mod clips;
pub mod publisher;
pub mod room;
pub mod scenario;
pub mod server;
pub mod session;
