//! The uplink's metrics: the connection to the hub and the records crossing it.

use std::sync::Arc;

use wardlink_shared::metrics::{Counter, Gauge, LabeledCounter, Registry};
use wardlink_shared::wire::Lane;

/// Counters and gauges of the QUIC uplink.
#[derive(Debug)]
pub struct UplinkMetrics {
    /// 1 while a QUIC connection to the hub is up.
    pub connected: Arc<Gauge>,
    /// Connection attempts that failed.
    pub connect_failures: Arc<Counter>,
    /// Records sent to the hub, by lane (re-sends after a reconnect included).
    pub sent: LabeledCounter,
    /// Records acknowledged by the hub, by lane.
    pub acked: LabeledCounter,
    /// Attempts to apply a hub command that failed (retried).
    pub commands_failed: Arc<Counter>,
}

impl UplinkMetrics {
    /// Registers the uplink's metrics on `r`.
    pub fn register(r: &Registry) -> Self {
        Self {
            connected: r.gauge(
                "wardlink_edge_uplink_connected",
                "1 while the QUIC connection to the hub is up.",
            ),
            connect_failures: r.counter(
                "wardlink_edge_uplink_connect_failures_total",
                "Failed attempts to connect to the hub.",
            ),
            sent: r.labeled_counter(
                "wardlink_edge_records_sent_total",
                "Records sent to the hub, by lane, re-sends included.",
                "lane",
                &Lane::LABELS,
            ),
            acked: r.labeled_counter(
                "wardlink_edge_records_acked_total",
                "Records acknowledged by the hub, by lane.",
                "lane",
                &Lane::LABELS,
            ),
            commands_failed: r.counter(
                "wardlink_edge_commands_failed_total",
                "Attempts to apply a command from the hub that failed (e.g. settings not saved on a full disk); retried.",
            ),
        }
    }
}
