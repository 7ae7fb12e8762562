//! The broker's metrics: what the gate refused, what it let through, and the local
//! subscribers' fan-out.

use std::sync::Arc;

use wardlink_shared::metrics::{Counter, Gauge, LabeledCounter, Registry};

use super::devices::AuthRefusal;
use super::gate::{DENIED_LABELS, GateRefusal};

/// Counters and gauges of the device-facing broker.
#[derive(Debug)]
pub struct BrokerMetrics {
    /// MQTT connections refused by authentication, by reason.
    pub auth_refused: LabeledCounter,
    /// MQTT connections refused or ended by the gate before or outside authentication.
    pub refused: LabeledCounter,
    /// Device actions refused by topic isolation (`publish`, `subscribe`).
    pub denied: LabeledCounter,
    /// Device sessions open through the gate.
    pub sessions: Arc<Gauge>,
    /// Times a device publishing faster than `mqtt.max_publish_rate` was slowed down.
    pub throttled: Arc<Counter>,
    /// Messages not published to local MQTT subscribers because rumqttd was behind.
    pub fanout_dropped: Arc<Counter>,
}

impl BrokerMetrics {
    /// Registers the broker's metrics on `r`.
    pub fn register(r: &Registry) -> Self {
        Self {
            auth_refused: r.labeled_counter(
                "wardlink_edge_mqtt_auth_refused_total",
                "MQTT connections refused, by reason.",
                "reason",
                &AuthRefusal::LABELS,
            ),
            refused: r.labeled_counter(
                "wardlink_edge_mqtt_connections_refused_total",
                "MQTT connections refused or closed by the gate (busy, TLS, malformed, ...).",
                "reason",
                &GateRefusal::LABELS,
            ),
            denied: r.labeled_counter(
                "wardlink_edge_mqtt_denied_total",
                "Publishes and subscriptions refused because they reach beyond the device's patient.",
                "action",
                &DENIED_LABELS,
            ),
            sessions: r.gauge(
                "wardlink_edge_mqtt_sessions",
                "Device connections open through the gate.",
            ),
            throttled: r.counter(
                "wardlink_edge_mqtt_throttled_total",
                "Times a device publishing faster than mqtt.max_publish_rate was slowed down.",
            ),
            fanout_dropped: r.counter(
                "wardlink_edge_mqtt_fanout_dropped_total",
                "Messages not published to local MQTT subscribers because rumqttd was behind (the readings themselves are stored).",
            ),
        }
    }
}
