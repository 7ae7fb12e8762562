//! `[hub]` in `edge.toml`: where the uplink connects and who it is.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[hub]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// `host:port` of the hub's QUIC listener.
    pub addr: String,
    /// The name in the hub's certificate.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// The hub CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This edge's certificate (PEM), issued by `wardlink-cloud enroll`.
    pub cert: PathBuf,
    /// This edge's private key (PEM).
    pub key: PathBuf,
    /// How often the edge tells the hub it is alive (ms); the hub marks an edge offline after
    /// its own `edge_offline_after_ms` of silence.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
}

fn default_heartbeat_ms() -> u64 {
    1000
}

fn default_server_name() -> String {
    "wardlink-hub".into()
}

impl HubSection {
    /// The first key that is out of range, and why.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.addr.rsplit_once(':').is_none() {
            return Err(("hub.addr", "must be host:port"));
        }
        if self.heartbeat_ms == 0 {
            return Err(("hub.heartbeat_ms", "must be at least 1"));
        }
        Ok(())
    }
}
