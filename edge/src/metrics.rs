//! The edge's metrics, registered once and shared by every subsystem.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use wardlink_shared::metrics::{Counter, Gauge, Histogram, LabeledCounter, LabeledGauge, Registry};
use wardlink_shared::payload::RejectReason;

use crate::broker::{AuthRefusal, DENIED_LABELS, GateRefusal};

const LANES: [&str; 2] = ["alarms", "telemetry"];

/// Every counter and gauge the edge exposes on `/metrics`.
#[derive(Debug)]
pub struct EdgeMetrics {
    /// The registry that renders them.
    pub registry: Registry,
    /// Set once every subsystem is up; `/healthz` answers 200 from then on.
    pub ready: AtomicBool,
    /// Publishes received from the broker.
    pub readings_received: Arc<Counter>,
    /// Publishes refused, by reason.
    pub readings_rejected: LabeledCounter,
    /// Readings accepted into the pipeline.
    pub readings_accepted: Arc<Counter>,
    /// Readings already held (a device sending one again), acknowledged and not stored twice.
    pub readings_duplicate: Arc<Counter>,
    /// Messages not published to local MQTT subscribers because rumqttd was behind.
    pub mqtt_fanout_dropped: Arc<Counter>,
    /// Alarm events produced by the rules.
    pub alarm_events: Arc<Counter>,
    /// MQTT connections refused by authentication, by reason.
    pub auth_refused: LabeledCounter,
    /// MQTT connections refused or ended by the gate before or outside authentication.
    pub mqtt_refused: LabeledCounter,
    /// Device actions refused by topic isolation (`publish`, `subscribe`).
    pub mqtt_denied: LabeledCounter,
    /// Device sessions open through the gate.
    pub mqtt_sessions: Arc<Gauge>,
    /// Times a device publishing faster than `mqtt.max_publish_rate` was slowed down.
    pub mqtt_throttled: Arc<Counter>,
    /// Records durably committed to the outbox, by lane.
    pub outbox_committed: LabeledCounter,
    /// Records in the outbox not yet acknowledged by the hub, by lane.
    pub outbox_depth: LabeledGauge,
    /// Outbox transactions that failed.
    pub outbox_errors: Arc<Counter>,
    /// 1 while outbox commits fail (a full disk); records are then held in memory.
    pub outbox_failing: Arc<Gauge>,
    /// Bytes of records stored in the outbox database.
    pub outbox_bytes: Arc<Gauge>,
    /// Records held in memory, not yet committed.
    pub outbox_held: Arc<Gauge>,
    /// Age of the oldest record not yet acknowledged by the hub, by lane (ms; 0: none).
    pub outbox_oldest_ms: LabeledGauge,
    /// Time of each outbox commit that wrote records (the fsync included).
    pub outbox_commit_seconds: Arc<Histogram>,
    /// Telemetry records evicted, by reason (`disk_budget`, `memory_full`).
    pub outbox_evicted: LabeledCounter,
    /// Records that could not be stored at all (counted, logged at ERROR).
    pub records_dropped: Arc<Counter>,
    /// 1 while a QUIC connection to the hub is up.
    pub uplink_connected: Arc<Gauge>,
    /// Connection attempts that failed.
    pub uplink_connect_failures: Arc<Counter>,
    /// Records sent to the hub, by lane (re-sends after a reconnect included).
    pub records_sent: LabeledCounter,
    /// Records acknowledged by the hub, by lane.
    pub records_acked: LabeledCounter,
    /// Attempts to apply a hub command that failed (retried).
    pub commands_failed: Arc<Counter>,
}

impl EdgeMetrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let r = Registry::new();
        Self {
            ready: AtomicBool::new(false),
            readings_received: r.counter(
                "wardlink_edge_readings_received_total",
                "MQTT publishes received on patients/+/vitals (re-sends included).",
            ),
            readings_rejected: r.labeled_counter(
                "wardlink_edge_readings_rejected_total",
                "Publishes refused by validation, by reason.",
                "reason",
                &RejectReason::LABELS,
            ),
            readings_accepted: r.counter(
                "wardlink_edge_readings_accepted_total",
                "Readings accepted into the alarm rules and the outbox.",
            ),
            readings_duplicate: r.counter(
                "wardlink_edge_readings_duplicate_total",
                "Readings a device sent again that were already accepted: acknowledged, not stored twice.",
            ),
            mqtt_fanout_dropped: r.counter(
                "wardlink_edge_mqtt_fanout_dropped_total",
                "Messages not published to local MQTT subscribers because rumqttd was behind (the readings themselves are stored).",
            ),
            alarm_events: r.counter(
                "wardlink_edge_alarm_events_total",
                "Alarm events (raised, updated, resolved) produced by the rules.",
            ),
            auth_refused: r.labeled_counter(
                "wardlink_edge_mqtt_auth_refused_total",
                "MQTT connections refused, by reason.",
                "reason",
                &AuthRefusal::LABELS,
            ),
            mqtt_refused: r.labeled_counter(
                "wardlink_edge_mqtt_connections_refused_total",
                "MQTT connections refused or closed by the gate (busy, TLS, malformed, ...).",
                "reason",
                &GateRefusal::LABELS,
            ),
            mqtt_denied: r.labeled_counter(
                "wardlink_edge_mqtt_denied_total",
                "Publishes and subscriptions refused because they reach beyond the device's patient.",
                "action",
                &DENIED_LABELS,
            ),
            mqtt_sessions: r.gauge(
                "wardlink_edge_mqtt_sessions",
                "Device connections open through the gate.",
            ),
            mqtt_throttled: r.counter(
                "wardlink_edge_mqtt_throttled_total",
                "Times a device publishing faster than mqtt.max_publish_rate was slowed down.",
            ),
            outbox_committed: r.labeled_counter(
                "wardlink_edge_outbox_committed_total",
                "Records durably committed to the outbox, by lane.",
                "lane",
                &LANES,
            ),
            outbox_depth: r.labeled_gauge(
                "wardlink_edge_outbox_depth",
                "Records in the outbox not yet acknowledged by the hub, by lane.",
                "lane",
                &LANES,
            ),
            outbox_errors: r.counter(
                "wardlink_edge_outbox_errors_total",
                "Outbox transactions that failed.",
            ),
            outbox_failing: r.gauge(
                "wardlink_edge_outbox_failing",
                "1 while outbox commits fail (e.g. a full disk); records are held in memory meanwhile.",
            ),
            outbox_bytes: r.gauge(
                "wardlink_edge_outbox_bytes",
                "Bytes of records stored in the outbox database (the disk budget counts these).",
            ),
            outbox_held: r.gauge(
                "wardlink_edge_outbox_held_records",
                "Records held in memory, given a seq but not yet committed.",
            ),
            outbox_oldest_ms: r.labeled_gauge(
                "wardlink_edge_outbox_oldest_unacked_ms",
                "Age of the oldest record not yet acknowledged by the hub, by lane (0: none).",
                "lane",
                &LANES,
            ),
            outbox_commit_seconds: r.histogram(
                "wardlink_edge_outbox_commit_seconds",
                "Duration of outbox commits that wrote records, fsync included.",
                &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0],
            ),
            outbox_evicted: r.labeled_counter(
                "wardlink_edge_outbox_evicted_total",
                "Telemetry records evicted, by reason: the disk budget, or memory while commits fail.",
                "reason",
                &["disk_budget", "memory_full"],
            ),
            records_dropped: r.counter(
                "wardlink_edge_records_dropped_total",
                "Accepted records that could not be stored (data loss).",
            ),
            uplink_connected: r.gauge(
                "wardlink_edge_uplink_connected",
                "1 while the QUIC connection to the hub is up.",
            ),
            uplink_connect_failures: r.counter(
                "wardlink_edge_uplink_connect_failures_total",
                "Failed attempts to connect to the hub.",
            ),
            records_sent: r.labeled_counter(
                "wardlink_edge_records_sent_total",
                "Records sent to the hub, by lane, re-sends included.",
                "lane",
                &LANES,
            ),
            records_acked: r.labeled_counter(
                "wardlink_edge_records_acked_total",
                "Records acknowledged by the hub, by lane.",
                "lane",
                &LANES,
            ),
            commands_failed: r.counter(
                "wardlink_edge_commands_failed_total",
                "Attempts to apply a command from the hub that failed (e.g. settings not saved on a full disk); retried.",
            ),
            registry: r,
        }
    }
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        Self::new()
    }
}
