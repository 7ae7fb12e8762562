//! A monitor that must not lose data, as a careful device is built: an MQTT client (rumqttc)
//! with a persistent session and a stable client id, publishing uniquely stamped readings at
//! QoS 1 with many in flight, reconnecting by itself and re-sending what it has not seen
//! acknowledged. It records which readings the edge acknowledged: the set the edge promised
//! to keep.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

use crate::stamped;

/// How long the client waits before reconnecting after the connection broke.
const RECONNECT: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct Ledger {
    /// Timestamps queued, in the order they were handed to the client.
    queued: VecDeque<i64>,
    /// Packet id → timestamp of each publish sent and not yet acknowledged.
    in_flight: HashMap<u16, i64>,
    /// Timestamps the edge acknowledged.
    acked: BTreeSet<i64>,
    /// Publishes sent again after a reconnect.
    resent: u64,
    /// Connections on which the edge had no session for the device (the client then drops
    /// what it had not seen acknowledged).
    fresh_sessions: u64,
}

/// A resending device.
pub struct ResendingDevice {
    client: AsyncClient,
    topic: String,
    ledger: Arc<Mutex<Ledger>>,
    task: tokio::task::JoinHandle<()>,
}

impl ResendingDevice {
    /// A device `id` (password `password`) of `patient` publishing to the edge at `edge`,
    /// with up to `in_flight` publishes unacknowledged.
    pub fn start(
        edge: SocketAddr,
        id: &str,
        password: &str,
        patient: &str,
        in_flight: u16,
    ) -> ResendingDevice {
        let mut opts = MqttOptions::new(id, edge.ip().to_string(), edge.port());
        opts.set_credentials(id, password);
        opts.set_clean_session(false);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_inflight(in_flight);
        // No request queue outside the in-flight window: rumqttc 0.25 moves queued requests
        // into its resend list at a disconnect, and when they are sent after the reconnect with
        // the window still full of re-sends, their new packet ids collide and all but one are
        // dropped (`MqttState::collision` holds one). A device built this way loses nothing.
        let (client, mut events) = AsyncClient::new(opts, 0);
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let book = ledger.clone();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(id))) => {
                        let mut l = lock(&book);
                        if l.in_flight.contains_key(&id) {
                            l.resent += 1;
                        } else if let Some(ts) = l.queued.pop_front() {
                            l.in_flight.insert(id, ts);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        let mut l = lock(&book);
                        if let Some(ts) = l.in_flight.remove(&ack.pkid) {
                            l.acked.insert(ts);
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(c))) if !c.session_present => {
                        lock(&book).fresh_sessions += 1;
                    }
                    Ok(_) => {}
                    // The edge is down or restarting: the next poll reconnects and re-sends.
                    Err(_) => tokio::time::sleep(RECONNECT).await,
                }
            }
        });
        ResendingDevice {
            client,
            topic: format!("patients/{patient}/vitals"),
            ledger,
            task,
        }
    }

    /// Queues a reading stamped `ts`; false if the client's queue is full (try again later).
    /// Never waits, so a caller may stop at any moment without leaving the ledger out of step.
    pub fn try_publish(&self, ts: i64) -> bool {
        let mut l = lock(&self.ledger);
        l.queued.push_back(ts);
        let queued = self
            .client
            .try_publish(&self.topic, QoS::AtLeastOnce, false, stamped(72, ts))
            .is_ok();
        if !queued {
            l.queued.pop_back();
        }
        queued
    }

    /// Queues a reading stamped `ts`, waiting while the client's queue is full.
    pub async fn publish(&self, ts: i64) {
        while !self.try_publish(ts) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Waits until every reading queued was acknowledged (bounded by [`crate::PATIENCE`]).
    pub async fn settled(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + crate::PATIENCE * 4;
        while self.outstanding() > 0 {
            if tokio::time::Instant::now() >= deadline {
                let l = lock(&self.ledger);
                anyhow::bail!(
                    "readings never acknowledged: {} queued {:?}, {} in flight {:?}; {} fresh sessions",
                    l.queued.len(),
                    l.queued.iter().take(5).collect::<Vec<_>>(),
                    l.in_flight.len(),
                    l.in_flight.iter().take(5).collect::<Vec<_>>(),
                    l.fresh_sessions,
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The timestamps acknowledged so far.
    pub fn acked(&self) -> BTreeSet<i64> {
        lock(&self.ledger).acked.clone()
    }

    /// Publishes sent and not yet acknowledged, and publishes queued and not yet sent.
    pub fn outstanding(&self) -> usize {
        let l = lock(&self.ledger);
        l.in_flight.len() + l.queued.len()
    }

    /// Publishes sent again after a reconnect.
    pub fn resent(&self) -> u64 {
        lock(&self.ledger).resent
    }
}

impl Drop for ResendingDevice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
