//! The in-process bus: every stored event, in hub seq order, to every live WebSocket session.
//!
//! A broadcast channel: a session that falls behind by more than its capacity (default
//! [`BUS_CAPACITY`], `hub.bus_capacity`) gets
//! `Lagged` and catches up from the store, so a slow dashboard never loses an event and never
//! slows the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::broadcast;
use wardlink_shared::WardId;

/// Events buffered for the slowest live session before it must catch up from the store.
pub const BUS_CAPACITY: usize = 16 * 1024;

/// A stored event as dashboards receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Hub-wide sequence number.
    pub seq: u64,
    /// The ward it belongs to (for access control).
    pub ward: WardId,
    /// The JSON text, `seq` included, as the WebSocket frame payload: every session sends the
    /// same shared bytes (a reference count, not a copy per dashboard).
    pub json: Utf8Bytes,
}

/// The bus's sending side.
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
    latest: Arc<AtomicU64>,
}

impl Bus {
    /// A bus holding `capacity` events for the slowest session.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            latest: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Publishes an event (no-op when nobody listens). Events must be published in seq order.
    pub fn publish(&self, event: Arc<Event>) {
        self.latest.store(event.seq, Ordering::Release);
        let _ = self.tx.send(event);
    }

    /// The seq of the last event published. A session that subscribes and then reads this
    /// receives every later event live.
    pub fn latest(&self) -> u64 {
        self.latest.load(Ordering::Acquire)
    }

    /// Starts `latest` at the store's last seq when the hub starts.
    pub fn set_latest(&self, seq: u64) {
        self.latest.store(seq, Ordering::Release);
    }

    /// A new live subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Self::new(BUS_CAPACITY)
    }
}
