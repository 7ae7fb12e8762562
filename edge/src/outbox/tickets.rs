//! Readings' durability tickets waiting in the outbox.
//!
//! A ticket waits for a position on both lanes: its reading's own record and every alarm event
//! appended up to it. It fires once each lane is durable (committed here or stored by the hub)
//! through that position. Positions only grow, in the order tickets are taken, so the tickets
//! wait in a queue and fire from its front, in order.

use std::collections::VecDeque;

use crate::durable::Ticket;

/// The waiting tickets and how far each lane is durable.
pub(super) struct Tickets {
    /// (seqs by lane index, ticket), in seq order on both lanes.
    waiting: VecDeque<([u64; 2], Ticket)>,
    /// Each lane is durable through this seq, by lane index.
    durable: [u64; 2],
}

impl Tickets {
    /// No ticket waits; each lane is durable through `durable` (what a restart found stored).
    pub(super) fn new(durable: [u64; 2]) -> Self {
        Self {
            waiting: VecDeque::new(),
            durable,
        }
    }

    /// `ticket` fires once each lane is durable through `through` (by lane index); at once if
    /// it already is. `through` must not be below any waiting ticket's.
    pub(super) fn wait(&mut self, through: [u64; 2], ticket: Ticket) {
        self.waiting.push_back((through, ticket));
        self.fire();
    }

    /// Lane `i` is durable through `seq`: fires the tickets this completes.
    pub(super) fn durable(&mut self, i: usize, seq: u64) {
        self.durable[i] = self.durable[i].max(seq);
        self.fire();
    }

    /// Drops every waiting ticket unfired: their sessions close without acknowledging, and
    /// the devices send again.
    pub(super) fn abandon(&mut self) {
        self.waiting.clear();
    }

    fn fire(&mut self) {
        let durable = self.durable;
        while self
            .waiting
            .front()
            .is_some_and(|(s, _)| s[0] <= durable[0] && s[1] <= durable[1])
        {
            if let Some((_, ticket)) = self.waiting.pop_front() {
                ticket.durable();
            }
        }
    }
}
