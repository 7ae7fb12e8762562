//! The QUIC server configuration: TLS 1.3, client certificates required and verified against
//! the hub's CA, and the edge identity read from the verified certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use wardlink_io::pem::{PemError, load_certs, load_key, load_roots};
use wardlink_shared::wire::ALPN;
use wardlink_shared::{EdgeId, WardId};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The hub's credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing or malformed.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("tls client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// quinn refused the configuration.
    #[error("quic: {0}")]
    Quic(String),
}

/// The QUIC server configuration.
/// `idle`: an edge that sends nothing, not even keep-alives, for this long is gone.
pub fn server_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    idle: Duration,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = load_roots(ca)?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let key = load_key(key)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(idle).map_err(|e| TlsError::Quic(e.to_string()))?,
    ));
    // Control stream plus one per lane, with room for a reconnect's overlap.
    transport.max_concurrent_bidi_streams(8u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The (edge, ward) named by a connection's verified client certificate: CN and OU.
pub fn peer_identity(conn: &quinn::Connection) -> Option<(EdgeId, WardId)> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    let (_, cert) = X509Certificate::from_der(certs.first()?.as_ref()).ok()?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?;
    let ou = subject.iter_organizational_unit().next()?.as_str().ok()?;
    Some((EdgeId::new(cn).ok()?, WardId::new(ou).ok()?))
}
