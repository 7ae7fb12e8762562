//! The outbox's metrics: what was committed, what waits for the hub, and what could not be
//! kept.

use std::sync::Arc;

use wardlink_shared::metrics::{Counter, Gauge, Histogram, LabeledCounter, LabeledGauge, Registry};
use wardlink_shared::wire::Lane;

/// Counters and gauges of the durable outbox.
#[derive(Debug)]
pub struct OutboxMetrics {
    /// Records durably committed, by lane.
    pub committed: LabeledCounter,
    /// Records not yet acknowledged by the hub, by lane.
    pub depth: LabeledGauge,
    /// Transactions that failed.
    pub errors: Arc<Counter>,
    /// 1 while commits fail (a full disk); records are then held in memory.
    pub failing: Arc<Gauge>,
    /// Bytes of records stored in the database.
    pub bytes: Arc<Gauge>,
    /// Records held in memory, not yet committed.
    pub held: Arc<Gauge>,
    /// Age of the oldest record not yet acknowledged by the hub, by lane (ms; 0: none).
    pub oldest_ms: LabeledGauge,
    /// Time of each commit that wrote records (the fsync included).
    pub commit_seconds: Arc<Histogram>,
    /// Telemetry records evicted, by reason (`disk_budget`, `memory_full`).
    pub evicted: LabeledCounter,
    /// Records that could not be stored at all (counted, logged at ERROR).
    pub dropped: Arc<Counter>,
    /// 1 while the alarm engine's newest state waits for its commit.
    pub state_unsaved: Arc<Gauge>,
    /// Alarm engine states committed.
    pub state_saved: Arc<Counter>,
}

impl OutboxMetrics {
    /// Registers the outbox's metrics on `r`.
    pub fn register(r: &Registry) -> Self {
        Self {
            committed: r.labeled_counter(
                "wardlink_edge_outbox_committed_total",
                "Records durably committed to the outbox, by lane.",
                "lane",
                &Lane::LABELS,
            ),
            depth: r.labeled_gauge(
                "wardlink_edge_outbox_depth",
                "Records in the outbox not yet acknowledged by the hub, by lane.",
                "lane",
                &Lane::LABELS,
            ),
            errors: r.counter(
                "wardlink_edge_outbox_errors_total",
                "Outbox transactions that failed.",
            ),
            failing: r.gauge(
                "wardlink_edge_outbox_failing",
                "1 while outbox commits fail (e.g. a full disk); records are held in memory meanwhile.",
            ),
            bytes: r.gauge(
                "wardlink_edge_outbox_bytes",
                "Bytes of records stored in the outbox database (the disk budget counts these).",
            ),
            held: r.gauge(
                "wardlink_edge_outbox_held_records",
                "Records held in memory, given a seq but not yet committed.",
            ),
            oldest_ms: r.labeled_gauge(
                "wardlink_edge_outbox_oldest_unacked_ms",
                "Age of the oldest record not yet acknowledged by the hub, by lane (0: none).",
                "lane",
                &Lane::LABELS,
            ),
            commit_seconds: r.histogram(
                "wardlink_edge_outbox_commit_seconds",
                "Duration of outbox commits that wrote records, fsync included.",
                &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0],
            ),
            evicted: r.labeled_counter(
                "wardlink_edge_outbox_evicted_total",
                "Telemetry records evicted, by reason: the disk budget, or memory while commits fail.",
                "reason",
                &["disk_budget", "memory_full"],
            ),
            dropped: r.counter(
                "wardlink_edge_records_dropped_total",
                "Accepted records that could not be stored (data loss).",
            ),
            state_unsaved: r.gauge(
                "wardlink_edge_alarm_state_unsaved",
                "1 while the alarm engine's newest state (open episodes, acknowledgements, silences) waits for its commit.",
            ),
            state_saved: r.counter(
                "wardlink_edge_alarm_state_saved_total",
                "Alarm engine states committed with their alarm records.",
            ),
        }
    }

    /// Metrics on a registry of their own, for tests and benchmarks of the outbox alone.
    pub fn detached() -> Arc<Self> {
        Arc::new(Self::register(&Registry::new()))
    }
}
