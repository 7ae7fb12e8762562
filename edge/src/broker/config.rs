//! `[mqtt]` in `edge.toml`: the device-facing broker's listeners and limits.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[mqtt]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// Plain MQTT listener (3.1.1 and 5).
    pub listen: SocketAddr,
    /// A second plain listener (3.1.1 and 5), kept for configurations written when rumqttd
    /// served MQTT 5 on a port of its own.
    pub listen_v5: Option<SocketAddr>,
    /// MQTT over TLS (3.1.1 and 5), usually port 8883; needs `tls_cert` and `tls_key`.
    pub listen_tls: Option<SocketAddr>,
    /// PEM certificate chain the TLS listener presents (`wardlink-cloud enroll` writes one
    /// issued by the hub's CA).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Most devices that may be connected at once. Connections are only accepted from
    /// registered devices using their own id, so this also bounds the broker's table.
    pub max_devices: usize,
    /// Largest MQTT payload accepted by the broker.
    pub max_payload_bytes: usize,
    /// Time a new connection has to complete TLS, send CONNECT and be authenticated.
    pub connect_timeout_ms: u16,
    /// Publishes per second one device may sustain; faster devices are slowed down (not
    /// refused) so that one cannot crowd out the others.
    pub max_publish_rate: u32,
    /// Publishes one device may send at once after a quiet spell.
    pub max_publish_burst: u32,
    /// Readings stamped longer ago than this are refused (`timestamp_too_old`): a device
    /// buffering through its own outage stays within it, a clock reset to 1970 does not.
    pub max_reading_age_s: u32,
}

impl Default for MqttSection {
    fn default() -> Self {
        Self {
            // Plain MQTT carries passwords in clear: the LAN gets it only by choice.
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            listen_v5: None,
            listen_tls: None,
            tls_cert: None,
            tls_key: None,
            max_devices: 2000,
            max_payload_bytes: 16 * 1024,
            connect_timeout_ms: 5000,
            max_publish_rate: 2000,
            max_publish_burst: 20_000,
            max_reading_age_s: 24 * 60 * 60,
        }
    }
}

impl MqttSection {
    /// The first key that is missing or out of range, and why.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.listen_tls.is_some() {
            if self.tls_cert.is_none() {
                return Err(("mqtt.tls_cert", "required when mqtt.listen_tls is set"));
            }
            if self.tls_key.is_none() {
                return Err(("mqtt.tls_key", "required when mqtt.listen_tls is set"));
            }
        }
        if self.max_publish_rate == 0 {
            return Err(("mqtt.max_publish_rate", "must be at least 1"));
        }
        if self.max_devices == 0 {
            return Err(("mqtt.max_devices", "must be at least 1"));
        }
        Ok(())
    }
}
