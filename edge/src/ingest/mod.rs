//! Ingest: drains the broker's in-process link, decodes and validates every publish, and hands
//! readings to the rules.
//!
//! This task must keep the link drained: rumqttd silently drops what a slow in-process
//! consumer has not read once its commit log wraps, although devices already got their
//! PUBACK. Decoding is microseconds of pure CPU, so it happens inline; the only wait is on the
//! rules channel when it is full, which is backpressure the rules task clears quickly.

use std::sync::Arc;

use rumqttd::Notification;
use rumqttd::local::LinkRx;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wardlink_shared::Reading;
use wardlink_shared::payload::{RejectReason, decode_json};

use crate::clock::now_ms;
use crate::metrics::EdgeMetrics;

/// After shutdown is requested, ingest keeps draining the link until it has been quiet this
/// long, so readings the broker already acknowledged to devices still reach the outbox.
const DRAIN_QUIET: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs until shutdown (then drains) or until the broker link breaks (which stops the edge:
/// without the link no reading can arrive).
pub async fn run(
    mut link: LinkRx,
    readings: mpsc::Sender<Reading>,
    metrics: Arc<EdgeMetrics>,
    shutdown: CancellationToken,
) -> Result<(), rumqttd::local::LinkError> {
    let mut draining = false;
    loop {
        let notification = if draining {
            match tokio::time::timeout(DRAIN_QUIET, link.next()).await {
                Ok(n) => n?,
                Err(_) => return Ok(()),
            }
        } else {
            tokio::select! {
                () = shutdown.cancelled() => {
                    draining = true;
                    continue;
                }
                n = link.next() => n?,
            }
        };
        match notification {
            Some(Notification::Forward(forward)) => {
                metrics.readings_received.inc();
                let publish = forward.publish;
                match accept(&publish.topic, &publish.payload) {
                    Ok(reading) => {
                        metrics.readings_accepted.inc();
                        if readings.send(reading).await.is_err() {
                            // The rules task is gone: we are shutting down.
                            return Ok(());
                        }
                    }
                    Err(reason) => {
                        metrics.readings_rejected.with(reason.label()).inc();
                        tracing::debug!(reason = %reason, "reading rejected");
                    }
                }
            }
            // Without this wake-up the router stops scheduling the link after a few hundred
            // messages (rumqttd 0.20).
            Some(Notification::Unschedule) => link.wake().await?,
            Some(_) | None => {}
        }
    }
}

fn accept(topic: &[u8], payload: &[u8]) -> Result<Reading, RejectReason> {
    let topic = std::str::from_utf8(topic).map_err(|_| RejectReason::BadTopic)?;
    decode_json(topic, payload, now_ms())
}
