//! What every handler shares: the bus, the API keys, the metrics and the configuration.

use crate::auth::ApiKeys;
use crate::config::ControllerConfig;
use crate::job_index::JobIndex;
use crate::metrics::Metrics;
use fleet_runtime::bus::Bus;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub bus: Bus,
    pub keys: ApiKeys,
    pub metrics: Arc<Metrics>,
    pub config: Arc<ControllerConfig>,
    /// Seals E2EE keys in requests to the transcoders (none: requests with plaintext keys are refused).
    pub e2ee_seal: Option<fleet_e2ee::TranscoderPublicKey>,
    /// The job records, indexed for listings.
    pub index: Arc<JobIndex>,
    /// Links to finished recordings' files.
    pub media: Arc<crate::media::MediaLinks>,
}
