//! The MQTT-over-TLS listener's configuration: the certificate `enroll` issued from the hub's
//! CA, TLS 1.2 and 1.3 with ring.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;
use wardlink_io::pem::{PemError, load_certs, load_key};

/// The TLS listener's credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum GateTlsError {
    /// A PEM file is missing or malformed.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// rustls refused the configuration.
    #[error("mqtt tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("mqtt tls client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The TLS acceptor of the MQTT listener: TLS 1.2 and 1.3 (bedside devices often lack 1.3),
/// the `ring` provider, the certificate and key in `cert`/`key`.
///
/// Devices authenticate with their password inside TLS. A client certificate is not asked
/// for; one sent anyway must chain to `client_ca` (the hub's CA), or the handshake fails.
pub fn acceptor(cert: &Path, key: &Path, client_ca: &Path) -> Result<TlsAcceptor, GateTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = wardlink_io::pem::load_roots(client_ca)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
