//! The hub's configuration: `cloud.toml`, written by `wardlink-cloud init`, parsed once at
//! startup, then the `WARDLINK_*` environment overrides.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wardlink_io::config;
pub use wardlink_shared::config::ConfigError;

/// `cloud.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// Listeners and storage.
    pub hub: HubSection,
    /// Certificates.
    pub tls: TlsSection,
    /// Dashboard tokens.
    pub auth: AuthSection,
    /// The audit log.
    #[serde(default)]
    pub audit: AuditSection,
    /// Notifications: routing, escalation, SMS.
    #[serde(default)]
    pub notify: crate::notify::plan::NotifySection,
}

/// `[audit]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// The HMAC key of patient pseudonyms (32 bytes or more). Keep it apart from the data
    /// directory: whoever holds log and key can link pseudonyms to patients. Created on first
    /// start if missing.
    pub hmac_key: PathBuf,
    /// Version written into every pseudonym; raise it when the key is replaced.
    pub key_version: u32,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            hmac_key: PathBuf::from("audit_hmac.key"),
            key_version: 1,
        }
    }
}

/// `[hub]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// The name in the hub's certificate, which edges check.
    #[serde(default = "default_name")]
    pub name: String,
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// HTTP: `/ws`, `/healthz`, `/metrics`.
    pub http_listen: SocketAddr,
    /// QUIC from edges (UDP).
    pub quic_listen: SocketAddr,
    /// The address edges are told to use by `enroll` (defaults to `quic_listen`, with
    /// loopback in place of an unspecified address).
    #[serde(default)]
    pub public_quic_addr: Option<String>,
    /// Live events buffered for the slowest dashboard before it catches up from the store.
    #[serde(default = "default_bus_capacity")]
    pub bus_capacity: usize,
    /// An edge from which nothing (not even its heartbeat) arrived for this long is marked
    /// offline on its ward's dashboards (ms). A connection that closes is given the same time
    /// to come back before the edge is marked offline, so a restart does not flap.
    #[serde(default = "default_edge_offline_after_ms")]
    pub edge_offline_after_ms: u64,
    /// Origins (e.g. `https://dash.ward.example`) whose pages may open `/ws`, besides the hub's
    /// own. A browser's request from any other origin is refused (403); clients that send no
    /// `Origin` (not browsers) are not affected.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

fn default_edge_offline_after_ms() -> u64 {
    10_000
}

fn default_bus_capacity() -> usize {
    crate::bus::BUS_CAPACITY
}

fn default_name() -> String {
    "wardlink-hub".into()
}

/// `[tls]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The CA that issues edge certificates (PEM).
    pub ca_cert: PathBuf,
    /// The CA key; only `enroll` reads it. Keep it offline in production.
    pub ca_key: PathBuf,
    /// The hub's certificate (PEM).
    pub cert: PathBuf,
    /// The hub's private key (PEM).
    pub key: PathBuf,
}

/// `[auth]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Ed25519 public key that verifies dashboard tokens (PEM).
    pub jwt_public_key: PathBuf,
    /// Ed25519 private key that signs them; only `token` reads it.
    pub jwt_private_key: PathBuf,
    /// `iss` of every token.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// `aud` of every token.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// `kid` of tokens signed with `jwt_private_key`.
    #[serde(default = "default_key_id")]
    pub key_id: String,
    /// Earlier public keys still accepted during a key rollover, each with its `kid`.
    #[serde(default)]
    pub previous_keys: Vec<PreviousKey>,
}

/// `[[auth.previous_keys]]`: a retired signing key whose tokens are still accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousKey {
    /// Its `kid`.
    pub id: String,
    /// Its Ed25519 public key (PEM).
    pub public_key: PathBuf,
}

fn default_key_id() -> String {
    "k1".into()
}

fn default_issuer() -> String {
    "wardlink-hub".into()
}

fn default_audience() -> String {
    "wardlink-dashboard".into()
}

/// The environment variables that override the file.
pub const ENV_KEYS: [&str; 3] = [
    "WARDLINK_HTTP_LISTEN",
    "WARDLINK_QUIC_LISTEN",
    "WARDLINK_DATA_DIR",
];

impl CloudConfig {
    /// Reads `path`, applies the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, &config::env_overrides(&ENV_KEYS))
    }

    /// Reads `path`, applies `env`. Relative paths are relative to the file.
    pub fn load_with_env(path: &Path, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut cfg: CloudConfig = config::read(path)?;
        config::resolve_relative(
            path,
            &mut [
                &mut cfg.hub.data_dir,
                &mut cfg.tls.ca_cert,
                &mut cfg.tls.ca_key,
                &mut cfg.tls.cert,
                &mut cfg.tls.key,
                &mut cfg.auth.jwt_public_key,
                &mut cfg.auth.jwt_private_key,
                &mut cfg.audit.hmac_key,
            ],
        );
        let mut previous: Vec<&mut PathBuf> = cfg
            .auth
            .previous_keys
            .iter_mut()
            .map(|k| &mut k.public_key)
            .collect();
        config::resolve_relative(path, &mut previous);
        if let Some(sms) = &mut cfg.notify.sms
            && let Some(token) = &mut sms.auth_token_file
        {
            config::resolve_relative(path, &mut [token]);
        }
        cfg.apply_env(env)?;
        if let Err(e) = cfg.notify.plan() {
            return Err(ConfigError {
                file: path.display().to_string(),
                key: e.key,
                reason: e.reason,
            });
        }
        if cfg.hub.edge_offline_after_ms < 100 {
            return Err(ConfigError {
                file: path.display().to_string(),
                key: "hub.edge_offline_after_ms".into(),
                reason: "must be at least 100".into(),
            });
        }
        Ok(cfg)
    }

    /// How long an edge may be silent before it is marked offline.
    pub fn edge_offline_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.hub.edge_offline_after_ms)
    }

    /// Applies the `WARDLINK_*` overrides found in `env`.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        if let Some(v) = env.get("WARDLINK_HTTP_LISTEN") {
            self.hub.http_listen = config::parse_override("WARDLINK_HTTP_LISTEN", v)?;
        }
        if let Some(v) = env.get("WARDLINK_QUIC_LISTEN") {
            self.hub.quic_listen = config::parse_override("WARDLINK_QUIC_LISTEN", v)?;
        }
        if let Some(v) = env.get("WARDLINK_DATA_DIR") {
            self.hub.data_dir = PathBuf::from(v);
        }
        Ok(())
    }

    /// The address `enroll` writes into edge configs.
    pub fn edge_facing_addr(&self) -> String {
        if let Some(a) = &self.hub.public_quic_addr {
            return a.clone();
        }
        let mut a = self.hub.quic_listen;
        if a.ip().is_unspecified() {
            a.set_ip(if a.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        a.to_string()
    }

    /// The store's database file.
    pub fn store_path(&self) -> PathBuf {
        self.hub.data_dir.join("hub.redb")
    }
}
