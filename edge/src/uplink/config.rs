//! `[hub]` in `edge.toml`: where the uplink connects and who it is.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[hub]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// `host:port` of the hub's QUIC listener.
    #[serde(default)]
    pub addr: String,
    /// Several hub replicas' `host:port` (DESIGN.md: "An edge may know several hub
    /// replicas"): the uplink keeps one connection, to the first that answers, and moves to
    /// the next when it fails. `addr`, when set, comes first.
    #[serde(default)]
    pub addrs: Vec<String>,
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
    /// Every hub address, in the order the uplink tries them, without repeats.
    pub fn all_addrs(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for a in std::iter::once(&self.addr).chain(&self.addrs) {
            if !a.is_empty() && !all.contains(a) {
                all.push(a.clone());
            }
        }
        all
    }

    /// Sets the addresses from `WARDLINK_HUB_ADDR`: one, or several separated by commas.
    pub fn set_addrs(&mut self, list: &str) {
        let mut parts = list.split(',').map(str::trim).filter(|a| !a.is_empty());
        self.addr = parts.next().unwrap_or_default().to_owned();
        self.addrs = parts.map(str::to_owned).collect();
    }

    /// The first key that is out of range, and why.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        let all = self.all_addrs();
        if all.is_empty() {
            return Err(("hub.addr", "a hub address (or hub.addrs) is needed"));
        }
        if all.iter().any(|a| a.rsplit_once(':').is_none()) {
            return Err(("hub.addr", "must be host:port"));
        }
        if self.heartbeat_ms == 0 {
            return Err(("hub.heartbeat_ms", "must be at least 1"));
        }
        Ok(())
    }
}
