//! One TLS crypto provider for the whole process. The dependency tree enables both of rustls' providers
//! (aws-lc-rs and ring), so rustls cannot pick one by itself and panics on the first TLS connection made
//! without an explicit provider (async-nats' is one): every process installs aws-lc-rs first.

/// Installs aws-lc-rs as the process's rustls provider; later calls (and a provider already chosen)
/// change nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
