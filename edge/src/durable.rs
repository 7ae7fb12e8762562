//! Durability tickets: how a device session learns that the readings it received are safe, so
//! that it may acknowledge them ("acknowledged means durable").
//!
//! A session issues one [`Ticket`] per reading it hands to the pipeline, numbered 1, 2, 3, …
//! The outbox fires a ticket once its reading is committed (or, for a reading that was a
//! duplicate, once the reading it repeats is). Readings of one session travel one FIFO path
//! (session → rules → outbox, whose commits follow seq order), so tickets fire in the order
//! they were issued and the session only needs the highest number fired.
//!
//! A ticket dropped without firing (its reading evicted from memory while the disk was failing,
//! or the pipeline stopping) marks the session's tickets as lost: the session then closes the
//! connection without acknowledging, and the device sends the reading again when it
//! reconnects.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

/// The state one session's tickets share.
#[derive(Debug, Default)]
struct Shared {
    /// The highest ticket number fired.
    durable: AtomicU64,
    /// A ticket was dropped unfired.
    lost: AtomicBool,
    /// Wakes the session.
    wake: Notify,
}

/// One reading's claim to be told when it is durable. Fire it with [`Ticket::durable`].
#[derive(Debug)]
pub struct Ticket {
    shared: Option<Arc<Shared>>,
    number: u64,
}

impl Ticket {
    /// The reading is durable: its session may acknowledge it.
    pub fn durable(mut self) {
        if let Some(shared) = self.shared.take() {
            shared.durable.fetch_max(self.number, Ordering::AcqRel);
            shared.wake.notify_one();
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.lost.store(true, Ordering::Release);
            shared.wake.notify_one();
        }
    }
}

/// A session's side: issues tickets and tells how far they have fired.
#[derive(Debug, Default)]
pub struct Tickets {
    shared: Arc<Shared>,
    issued: u64,
}

impl Tickets {
    /// No ticket issued yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next ticket.
    pub fn issue(&mut self) -> Ticket {
        self.issued += 1;
        Ticket {
            shared: Some(self.shared.clone()),
            number: self.issued,
        }
    }

    /// The number of the last ticket issued (0: none).
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// Every ticket up to this number has fired.
    pub fn durable(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// A ticket was dropped without firing: what it stood for is not durable, and will not be.
    pub fn lost(&self) -> bool {
        self.shared.lost.load(Ordering::Acquire)
    }

    /// Resolves after a ticket fired or was lost (possibly at once, if one did since the last
    /// call). Cancel-safe.
    pub async fn changed(&self) {
        self.shared.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tickets_fire_in_order_and_a_dropped_one_is_lost() {
        let mut tickets = Tickets::new();
        let first = tickets.issue();
        let second = tickets.issue();
        assert_eq!((tickets.issued(), tickets.durable()), (2, 0));
        first.durable();
        tickets.changed().await;
        assert_eq!(tickets.durable(), 1);
        assert!(!tickets.lost());
        drop(second);
        tickets.changed().await;
        assert!(tickets.lost());
        assert_eq!(tickets.durable(), 1, "a lost ticket is not durable");
    }
}
