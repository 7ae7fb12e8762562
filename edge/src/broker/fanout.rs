//! Fan-out: accepted readings and device status published into rumqttd for the local MQTT
//! subscribers, off the acknowledgement path.
//!
//! The in-process link publishes at QoS 0: a local subscriber is a convenience view (a bedside
//! display, a test), never the record, which is the outbox. So a subscriber that stops reading
//! never holds back ingest: when the queue to rumqttd is full the message is dropped for the
//! subscribers and counted (`wardlink_edge_mqtt_fanout_dropped_total`).

use std::sync::Arc;

use bytes::Bytes;
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::metrics::BrokerMetrics;
use super::sessions::Sessions;

/// Messages on their way into rumqttd. When full, new ones are dropped (counted): see the
/// module comment.
const QUEUE: usize = 4096;

/// A handle to publish into rumqttd for local subscribers.
#[derive(Clone)]
pub struct Fanout {
    tx: mpsc::Sender<(Bytes, Bytes)>,
    sessions: Arc<Sessions>,
    metrics: Arc<BrokerMetrics>,
}

impl Fanout {
    /// Starts the task that feeds rumqttd through the in-process link; it ends at `shutdown`.
    pub(super) fn start(
        link_tx: LinkTx,
        link_rx: LinkRx,
        sessions: Arc<Sessions>,
        metrics: Arc<BrokerMetrics>,
        shutdown: CancellationToken,
    ) -> Fanout {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(link_tx, link_rx, rx, shutdown));
        Fanout {
            tx,
            sessions,
            metrics,
        }
    }

    /// Whether any device subscribes (connected or not): otherwise nothing need be published.
    pub fn wanted(&self) -> bool {
        self.sessions.subscribers() > 0
    }

    /// Publishes `payload` on `topic` for local subscribers, if there is room.
    pub fn offer(&self, topic: Bytes, payload: Bytes) {
        if self.tx.try_send((topic, payload)).is_err() {
            self.metrics.fanout_dropped.inc();
        }
    }
}

async fn run(
    mut link_tx: LinkTx,
    mut link_rx: LinkRx,
    mut rx: mpsc::Receiver<(Bytes, Bytes)>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            m = rx.recv() => {
                let Some((topic, payload)) = m else { return };
                if let Err(e) = link_tx.try_publish(topic, payload) {
                    tracing::debug!(error = %e, "fan-out to rumqttd refused");
                }
            }
            n = link_rx.next() => match n {
                // Without this wake-up the router stops scheduling the link (rumqttd 0.20).
                Ok(Some(Notification::Unschedule)) => {
                    if link_rx.wake().await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "rumqttd link closed; local subscribers get nothing more");
                    return;
                }
            },
        }
    }
}
