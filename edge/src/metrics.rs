//! The edge's `/metrics`: one registry on which every component registers the metrics it owns
//! (its own struct beside its code), and the readiness flag `/healthz` reads.
//!
//! Components never import this module; the edge's assembly ([`crate::start`]) hands each one
//! its own part.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use wardlink_shared::metrics::Registry;

use crate::broker::BrokerMetrics;
use crate::ingest::IngestMetrics;
use crate::outbox::OutboxMetrics;
use crate::rules::RulesMetrics;
use crate::uplink::UplinkMetrics;

/// Every metric the edge exposes, by component.
#[derive(Debug)]
pub struct EdgeMetrics {
    /// The registry that renders them.
    pub registry: Registry,
    /// Set once every subsystem is up; `/healthz` answers 200 from then on.
    pub ready: AtomicBool,
    /// Decoding and validating what devices publish.
    pub ingest: Arc<IngestMetrics>,
    /// The alarm rules.
    pub rules: Arc<RulesMetrics>,
    /// The device-facing broker.
    pub broker: Arc<BrokerMetrics>,
    /// The durable outbox.
    pub outbox: Arc<OutboxMetrics>,
    /// The uplink to the hub.
    pub uplink: Arc<UplinkMetrics>,
    /// The ward view.
    pub ward: Arc<crate::ward::WardMetrics>,
    /// Local paging.
    pub paging: Arc<crate::paging::PagingMetrics>,
}

impl EdgeMetrics {
    /// Registers every component's metrics.
    pub fn new() -> Self {
        let r = Registry::new();
        Self {
            ready: AtomicBool::new(false),
            ingest: Arc::new(IngestMetrics::register(&r)),
            rules: Arc::new(RulesMetrics::register(&r)),
            broker: Arc::new(BrokerMetrics::register(&r)),
            outbox: Arc::new(OutboxMetrics::register(&r)),
            uplink: Arc::new(UplinkMetrics::register(&r)),
            ward: Arc::new(crate::ward::WardMetrics::register(&r)),
            paging: Arc::new(crate::paging::PagingMetrics::register(&r)),
            registry: r,
        }
    }
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Users' dashboards and alerts depend on these names: components may move, names stay.
    const NAMES: [&str; 36] = [
        "wardlink_edge_alarm_events_total",
        "wardlink_edge_alarm_state_saved_total",
        "wardlink_edge_alarm_state_unsaved",
        "wardlink_edge_commands_failed_total",
        "wardlink_edge_local_paging_active",
        "wardlink_edge_local_sms_cancelled_total",
        "wardlink_edge_local_sms_failed_total",
        "wardlink_edge_local_sms_pending",
        "wardlink_edge_local_sms_retries_total",
        "wardlink_edge_local_sms_sent_total",
        "wardlink_edge_mqtt_auth_refused_total",
        "wardlink_edge_mqtt_connections_refused_total",
        "wardlink_edge_mqtt_denied_total",
        "wardlink_edge_mqtt_fanout_dropped_total",
        "wardlink_edge_mqtt_sessions",
        "wardlink_edge_mqtt_throttled_total",
        "wardlink_edge_outbox_bytes",
        "wardlink_edge_outbox_commit_seconds",
        "wardlink_edge_outbox_committed_total",
        "wardlink_edge_outbox_depth",
        "wardlink_edge_outbox_errors_total",
        "wardlink_edge_outbox_evicted_total",
        "wardlink_edge_outbox_failing",
        "wardlink_edge_outbox_held_records",
        "wardlink_edge_outbox_oldest_unacked_ms",
        "wardlink_edge_readings_accepted_total",
        "wardlink_edge_readings_duplicate_total",
        "wardlink_edge_readings_received_total",
        "wardlink_edge_readings_rejected_total",
        "wardlink_edge_records_acked_total",
        "wardlink_edge_records_dropped_total",
        "wardlink_edge_records_sent_total",
        "wardlink_edge_uplink_connect_failures_total",
        "wardlink_edge_uplink_connected",
        "wardlink_edge_ward_refused_total",
        "wardlink_edge_ward_sessions",
    ];

    #[test]
    fn every_component_registers_its_metrics_under_the_names_users_know() {
        let text = EdgeMetrics::new().registry.render();
        let mut rendered: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        rendered.sort_unstable();
        assert_eq!(rendered, NAMES);
    }
}
