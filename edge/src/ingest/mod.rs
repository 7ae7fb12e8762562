//! Ingest: what enters the pipeline from a device. The gate's sessions decode and validate each
//! publish here, inline (microseconds of pure CPU, spread over the sessions' tasks), and hand
//! the accepted readings to the rules over one bounded channel.
//!
//! A reading travels with its durability [`Ticket`]: the device's acknowledgement waits for it.
//! A full channel makes sessions wait, which stops them reading their sockets: devices are
//! slowed down, nothing is dropped.

use std::sync::Arc;

use bytes::Bytes;
use wardlink_shared::Reading;
use wardlink_shared::metrics::{Counter, LabeledCounter, Registry};
use wardlink_shared::payload::{Decoded, RejectReason, decode_json_stamped};
use wardlink_shared::vitals::Quality;

use crate::clock::now_ms;
use crate::durable::Ticket;

/// Readings between the gate's sessions and the rules. When full, sessions wait
/// (backpressure into the devices' sockets).
pub const QUEUE: usize = 8192;

/// What ingest counts.
#[derive(Debug)]
pub struct IngestMetrics {
    /// Publishes received on patient topics.
    pub received: Arc<Counter>,
    /// Publishes refused, by reason.
    pub rejected: LabeledCounter,
    /// Readings accepted into the pipeline.
    pub accepted: Arc<Counter>,
}

impl IngestMetrics {
    /// Registers ingest's metrics on `r`.
    pub fn register(r: &Registry) -> Self {
        Self {
            received: r.counter(
                "wardlink_edge_readings_received_total",
                "MQTT publishes received on patients/+/vitals (re-sends included).",
            ),
            rejected: r.labeled_counter(
                "wardlink_edge_readings_rejected_total",
                "Publishes refused by validation, by reason.",
                "reason",
                &RejectReason::LABELS,
            ),
            accepted: r.counter(
                "wardlink_edge_readings_accepted_total",
                "Readings accepted into the alarm rules and the outbox.",
            ),
        }
    }
}

/// An accepted reading on its way to the rules.
#[derive(Debug)]
pub struct Ingested {
    /// The reading.
    pub reading: Reading,
    /// The device stamped it (`ts`): a re-send carries the same stamp and is recognised.
    pub stamped: bool,
    /// The signal quality the device reported.
    pub quality: Quality,
    /// Fires when the reading is durable (QoS 1 and 2 only).
    pub ticket: Option<Ticket>,
    /// The topic and payload, for local MQTT subscribers (only while there are any).
    pub fanout: Option<(Bytes, Bytes)>,
}

/// Decodes one publish on `topic`, refusing readings older than `max_age` ms; counts it
/// received, and accepted or rejected by reason.
pub fn decode(
    topic: &str,
    payload: &[u8],
    max_age: i64,
    metrics: &IngestMetrics,
) -> Result<Decoded, RejectReason> {
    metrics.received.inc();
    match decode_json_stamped(topic, payload, now_ms(), max_age) {
        Ok(r) => {
            metrics.accepted.inc();
            Ok(r)
        }
        Err(reason) => {
            metrics.rejected.with(reason.label()).inc();
            tracing::debug!(reason = %reason, "reading rejected");
            Err(reason)
        }
    }
}
