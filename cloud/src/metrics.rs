//! The hub's metrics.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use wardlink_shared::metrics::{Counter, Gauge, LabeledCounter, Registry};

const LANES: [&str; 2] = ["alarms", "telemetry"];

/// Every counter and gauge the hub exposes on `/metrics`.
#[derive(Debug)]
pub struct HubMetrics {
    /// The registry that renders them.
    pub registry: Registry,
    /// Set once every subsystem is up.
    pub ready: AtomicBool,
    /// Edges connected now.
    pub edges_connected: Arc<Gauge>,
    /// Edge connections refused, by reason.
    pub edges_refused: LabeledCounter,
    /// Records newly stored, by lane.
    pub records_stored: LabeledCounter,
    /// Records received again and ignored, by lane.
    pub records_duplicate: LabeledCounter,
    /// Records the edges could not read back from their outboxes (lost at the edge).
    pub records_unreadable: Arc<Counter>,
    /// Telemetry the edges evicted for their disk budgets (reported by their gap records).
    pub records_evicted: Arc<Counter>,
    /// Edge sessions closed because the edge fell silent.
    pub edges_silent: Arc<Counter>,
    /// Store transactions that failed.
    pub store_errors: Arc<Counter>,
    /// Highest hub event seq.
    pub last_event_seq: Arc<Gauge>,
    /// Open dashboard sessions.
    pub ws_sessions: Arc<Gauge>,
    /// Dashboard connections refused, by reason.
    pub ws_refused: LabeledCounter,
    /// Messages sent to dashboards.
    pub ws_messages_sent: Arc<Counter>,
    /// Times a session fell behind the bus and caught up from the store.
    pub ws_catchups: Arc<Counter>,
    /// Client messages refused, by reason.
    pub ws_client_errors: LabeledCounter,
}

impl HubMetrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let r = Registry::new();
        Self {
            ready: AtomicBool::new(false),
            edges_connected: r.gauge("wardlink_hub_edges_connected", "Edges connected over QUIC."),
            edges_refused: r.labeled_counter(
                "wardlink_hub_edges_refused_total",
                "Edge connections refused, by reason.",
                "reason",
                &[
                    "handshake",
                    "no_identity",
                    "revoked",
                    "version",
                    "identity_mismatch",
                    "bad_frame",
                ],
            ),
            records_stored: r.labeled_counter(
                "wardlink_hub_records_stored_total",
                "Edge records stored (exactly once), by lane.",
                "lane",
                &LANES,
            ),
            records_duplicate: r.labeled_counter(
                "wardlink_hub_records_duplicate_total",
                "Edge records received again and ignored, by lane.",
                "lane",
                &LANES,
            ),
            records_unreadable: r.counter(
                "wardlink_hub_records_unreadable_total",
                "Records an edge stored but could not read back from its outbox (lost).",
            ),
            records_evicted: r.counter(
                "wardlink_hub_records_evicted_total",
                "Telemetry records edges evicted under their disk budgets (lost, reported by the edge).",
            ),
            edges_silent: r.counter(
                "wardlink_hub_edges_silent_total",
                "Edge connections closed because nothing arrived for edge_offline_after_ms.",
            ),
            store_errors: r.counter(
                "wardlink_hub_store_errors_total",
                "Store transactions that failed.",
            ),
            last_event_seq: r.gauge(
                "wardlink_hub_last_event_seq",
                "Highest hub event sequence number.",
            ),
            ws_sessions: r.gauge(
                "wardlink_hub_ws_sessions",
                "Open dashboard WebSocket sessions.",
            ),
            ws_refused: r.labeled_counter(
                "wardlink_hub_ws_refused_total",
                "Dashboard connections refused, by reason.",
                "reason",
                &["unauthorized", "forbidden"],
            ),
            ws_messages_sent: r.counter(
                "wardlink_hub_ws_messages_sent_total",
                "Messages sent to dashboards.",
            ),
            ws_catchups: r.counter(
                "wardlink_hub_ws_catchups_total",
                "Times a dashboard session fell behind the live bus and caught up from the store.",
            ),
            ws_client_errors: r.labeled_counter(
                "wardlink_hub_ws_client_errors_total",
                "Dashboard messages refused, by reason.",
                "reason",
                &[
                    "malformed",
                    "not_implemented",
                    "binary",
                    "unknown_alert",
                    "resolved",
                    "internal",
                    "unknown_patient",
                    "invalid",
                    "rate_limit",
                    "too_large",
                    "idle",
                ],
            ),
            registry: r,
        }
    }
}

impl Default for HubMetrics {
    fn default() -> Self {
        Self::new()
    }
}
