//! The uplink's QUIC client configuration: TLS 1.3 with the edge's enrolled certificate,
//! trusting only the hub's CA.

use std::sync::Arc;
use std::time::Duration;

use wardlink_io::pem::{PemError, load_certs, load_key, load_roots};
use wardlink_shared::wire::ALPN;

use super::HubSection;

/// A hub silent for this many heartbeats is gone; the edge reconnects.
const IDLE_HEARTBEATS: u32 = 5;
/// Bounds of that idle time.
const IDLE_MIN: Duration = Duration::from_secs(2);
const IDLE_MAX: Duration = Duration::from_secs(30);

/// The edge's credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing or malformed.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn refused the configuration.
    #[error("quic: {0}")]
    Quic(String),
}

/// The QUIC client configuration for connecting to the hub.
pub fn client_config(hub: &HubSection) -> Result<quinn::ClientConfig, TlsError> {
    let roots = load_roots(&hub.ca_cert)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(load_certs(&hub.cert)?, load_key(&hub.key)?)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    // Keep-alives at the heartbeat, so NATs and the hub see the edge alive.
    let heartbeat = Duration::from_millis(hub.heartbeat_ms);
    transport.keep_alive_interval(Some(heartbeat));
    let idle = (heartbeat * IDLE_HEARTBEATS).clamp(IDLE_MIN, IDLE_MAX);
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(idle).map_err(|e| TlsError::Quic(e.to_string()))?,
    ));
    config.transport_config(Arc::new(transport));
    Ok(config)
}
