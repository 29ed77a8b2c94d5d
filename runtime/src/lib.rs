//! What every fleet process runs on: the NATS bus (topology, job store, node registry), the node's job
//! client, the storage client, work-queue serving, configuration loading, logging, TLS, retry schedules,
//! the operators' endpoints of a node (metrics, health) and process helpers. The data they carry is defined in `fleet-protocol`.

pub mod bus;
pub mod config;
pub mod cpu;
pub mod job_client;
pub mod liveness;
pub mod logging;
pub mod node_endpoints;
pub mod process;
pub mod queue;
pub mod retry;
pub mod storage;
pub mod tls;
