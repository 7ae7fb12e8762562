//! The hub's keys and certificates: `init` creates a CA, the hub's certificate and the token
//! signing key; `enroll` issues an edge's client certificate, the server certificate of its
//! MQTT-over-TLS listener, and writes its `edge.toml`.
//!
//! An edge certificate's subject carries the edge id as CN and the ward as OU, signed by the
//! CA; the hub takes both from the verified certificate, never from what the edge says.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};
use wardlink_shared::{EdgeId, WardId};

use crate::config::CloudConfig;

/// A PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A name that belongs to the hub was asked for another certificate.
    #[error("{0:?} is the hub's name; an edge certificate may not carry it")]
    ReservedName(String),
    /// `init` would overwrite an existing hub.
    #[error("{0} already exists; refusing to overwrite an existing CA")]
    Exists(PathBuf),
}

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, contents).map_err(io)?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    Ok(())
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.into(),
        source,
    })
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // Backdated an hour so a box whose clock lags a little still accepts a fresh certificate.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// Options for `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// HTTP listener written into cloud.toml.
    pub http_listen: String,
    /// QUIC listener written into cloud.toml.
    pub quic_listen: String,
    /// Extra DNS names or IPs for the hub certificate.
    pub extra_names: Vec<String>,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            http_listen: "127.0.0.1:8080".into(),
            quic_listen: "0.0.0.0:4433".into(),
            extra_names: Vec::new(),
        }
    }
}

/// `wardlink-cloud init DIR`.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<PathBuf, PkiError> {
    let config_path = dir.join("cloud.toml");
    if config_path.exists() {
        return Err(PkiError::Exists(config_path));
    }
    // CA: ten years, may only sign end-entity certificates.
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "Wardlink CA");
    ca.distinguished_name
        .push(DnType::OrganizationName, "Wardlink");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca, 3650);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    // The hub's server certificate.
    let hub_key = KeyPair::generate()?;
    let mut names = vec![
        "wardlink-hub".to_owned(),
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
    ];
    names.extend(opts.extra_names.iter().cloned());
    let mut hub = CertificateParams::new(names)?;
    hub.distinguished_name = DistinguishedName::new();
    hub.distinguished_name
        .push(DnType::CommonName, "wardlink-hub");
    hub.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut hub, 825);
    let hub_cert = hub.signed_by(&hub_key, &issuer)?;

    // Ed25519 key for dashboard tokens.
    let jwt_key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;

    write(&dir.join("ca.pem"), &ca_cert.pem(), false)?;
    write(&dir.join("ca.key"), &ca_key.serialize_pem(), true)?;
    write(&dir.join("hub.pem"), &hub_cert.pem(), false)?;
    write(&dir.join("hub.key"), &hub_key.serialize_pem(), true)?;
    write(&dir.join("jwt.key"), &jwt_key.serialize_pem(), true)?;
    write(&dir.join("jwt.pub"), &jwt_key.public_key_pem(), false)?;
    std::fs::create_dir_all(dir.join("data")).map_err(|source| PkiError::Io {
        path: dir.join("data"),
        source,
    })?;
    let config = format!(
        r#"# Wardlink hub configuration (written by `wardlink-cloud init`).

[hub]
name = "wardlink-hub"
data_dir = "data"
http_listen = "{http}"
quic_listen = "{quic}"

[tls]
ca_cert = "ca.pem"
ca_key = "ca.key"
cert = "hub.pem"
key = "hub.key"

[auth]
jwt_public_key = "jwt.pub"
jwt_private_key = "jwt.key"
issuer = "wardlink-hub"
audience = "wardlink-dashboard"
"#,
        http = opts.http_listen,
        quic = opts.quic_listen
    );
    write(&config_path, &config, false)?;
    Ok(config_path)
}

/// `wardlink-cloud enroll DIR --edge ID --ward WARD --out EDGE_DIR`.
pub fn enroll(
    cfg: &CloudConfig,
    edge: &EdgeId,
    ward: &WardId,
    out: &Path,
) -> Result<PathBuf, PkiError> {
    enroll_with_names(cfg, edge, ward, out, &[])
}

/// `enroll` with `--mqtt-name` values: further host names or IP addresses devices use to
/// reach the edge, written into the MQTT listener's certificate beside `localhost`,
/// `127.0.0.1`, `::1` and the edge id.
pub fn enroll_with_names(
    cfg: &CloudConfig,
    edge: &EdgeId,
    ward: &WardId,
    out: &Path,
    mqtt_names: &[String],
) -> Result<PathBuf, PkiError> {
    // The MQTT certificate must never be able to pass for the hub's.
    if let Some(name) = mqtt_names.iter().find(|n| **n == cfg.hub.name) {
        return Err(PkiError::ReservedName(name.clone()));
    }
    let ca_key = KeyPair::from_pem(&read(&cfg.tls.ca_key)?)?;
    let ca_pem = read(&cfg.tls.ca_cert)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, edge.as_str());
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, ward.as_str());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, 825);
    let cert = params.signed_by(&key, &issuer)?;

    // The server certificate of the edge's MQTT-over-TLS listener: server use only, so it
    // cannot serve as an edge's client certificate at the hub, and never named like the hub.
    let mqtt_key = KeyPair::generate()?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".into(),
        "::1".into(),
        edge.as_str().into(),
    ];
    names.extend(mqtt_names.iter().cloned());
    let mut mqtt = CertificateParams::new(names)?;
    mqtt.distinguished_name = DistinguishedName::new();
    mqtt.distinguished_name
        .push(DnType::CommonName, format!("{edge} mqtt"));
    mqtt.distinguished_name
        .push(DnType::OrganizationalUnitName, ward.as_str());
    mqtt.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut mqtt, 825);
    let mqtt_cert = mqtt.signed_by(&mqtt_key, &issuer)?;

    write(&out.join("ca.pem"), &ca_pem, false)?;
    write(&out.join("edge.pem"), &cert.pem(), false)?;
    write(&out.join("edge.key"), &key.serialize_pem(), true)?;
    write(&out.join("mqtt.pem"), &mqtt_cert.pem(), false)?;
    write(&out.join("mqtt.key"), &mqtt_key.serialize_pem(), true)?;
    let config_path = out.join("edge.toml");
    let config = format!(
        r#"# Wardlink edge configuration (written by `wardlink-cloud enroll`).

[edge]
id = "{edge}"
ward = "{ward}"
data_dir = "data"

[mqtt]
# Plain MQTT carries device passwords in clear: loopback only unless you choose otherwise
# (the edge warns at start when it listens beyond loopback). Devices on the LAN use TLS.
listen = "127.0.0.1:1883"
listen_tls = "0.0.0.0:8883"
tls_cert = "mqtt.pem"
tls_key = "mqtt.key"

[admin]
listen = "127.0.0.1:9180"

[hub]
addr = "{hub}"
server_name = "{name}"
ca_cert = "ca.pem"
cert = "edge.pem"
key = "edge.key"
"#,
        hub = cfg.edge_facing_addr(),
        name = cfg.hub.name,
    );
    write(&config_path, &config, false)?;
    Ok(config_path)
}
