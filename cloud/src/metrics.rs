//! The hub's metrics.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use wardlink_shared::metrics::{Counter, Gauge, Histogram, LabeledCounter, Registry};

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
    /// SMS queued in the outbox.
    pub sms_queued: Arc<Counter>,
    /// SMS attempts made.
    pub sms_attempts: Arc<Counter>,
    /// SMS accepted by the provider.
    pub sms_sent: Arc<Counter>,
    /// SMS attempts that failed and will be retried.
    pub sms_retries: Arc<Counter>,
    /// SMS given up for good.
    pub sms_failed: Arc<Counter>,
    /// SMS not sent because their alarms were over first.
    pub sms_cancelled: Arc<Counter>,
    /// SMS waiting in the outbox.
    pub sms_pending: Arc<Gauge>,
    /// Notifications held back, by reason.
    pub notifications_suppressed: LabeledCounter,
    /// Notification decisions that could not be stored.
    pub notify_errors: Arc<Counter>,
    /// Escalation chains open (alarms raised, not yet acknowledged or resolved).
    pub escalations_open: Arc<Gauge>,
    /// Edge sessions closed because the edge fell silent.
    pub edges_silent: Arc<Counter>,
    /// Store transactions that failed.
    pub store_errors: Arc<Counter>,
    /// Highest hub event seq.
    pub last_event_seq: Arc<Gauge>,
    /// Duration of store transactions, fsync included (what every live event waits for).
    pub store_commit_seconds: Arc<Histogram>,
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
            sms_queued: r.counter(
                "wardlink_hub_sms_queued_total",
                "SMS queued in the hub's outbox.",
            ),
            sms_attempts: r.counter(
                "wardlink_hub_sms_attempts_total",
                "SMS delivery attempts made to the provider.",
            ),
            sms_sent: r.counter(
                "wardlink_hub_sms_sent_total",
                "SMS accepted by the provider.",
            ),
            sms_retries: r.counter(
                "wardlink_hub_sms_retries_total",
                "SMS attempts that failed and will be retried.",
            ),
            sms_failed: r.counter(
                "wardlink_hub_sms_failed_total",
                "SMS given up for good (logged at ERROR, audited).",
            ),
            sms_cancelled: r.counter(
                "wardlink_hub_sms_cancelled_total",
                "SMS not sent because every alarm they were about was acknowledged or resolved first.",
            ),
            sms_pending: r.gauge(
                "wardlink_hub_sms_pending",
                "SMS waiting in the outbox for an attempt.",
            ),
            notifications_suppressed: r.labeled_counter(
                "wardlink_hub_notifications_suppressed_total",
                "Notifications held back, by reason (repeat_interval, rate_limit, no_recipient: a step whose roster had nobody on call).",
                "reason",
                &["repeat_interval", "rate_limit", "no_recipient"],
            ),
            escalations_open: r.gauge(
                "wardlink_hub_escalations_open",
                "Escalation chains open: routed alarms not yet acknowledged or resolved.",
            ),
            notify_errors: r.counter(
                "wardlink_hub_notify_errors_total",
                "Notification decisions that could not be stored (logged at ERROR).",
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
            store_commit_seconds: r.histogram(
                "wardlink_hub_store_commit_seconds",
                "Duration of store transactions, fsync included; events go live after it.",
                &[
                    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5,
                    1.0,
                ],
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
