//! The outbox: every record the edge accepted, durably stored in redb until the hub
//! acknowledges it.
//!
//! One thread owns the database. Others talk to it through [`Outbox`], a handle over a bounded
//! command channel. Appends are group-committed: the thread takes every append already queued
//! (up to `max_batch` records) into one fsynced transaction, so a burst costs one fsync and a
//! lone alarm never waits for a timer.
//!
//! Invariants:
//! - seqs are assigned at commit, contiguous per lane from 1, and the next seq is stored in the
//!   same transaction as the records, so a seq is never reused after a crash;
//! - only records the hub acknowledged are deleted;
//! - what [`Outbox::read`] returns is committed, so the hub never sees a record that a crash
//!   could take back.

mod store;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use wardlink_shared::wire::{Lane, Record, RecordBody};

use crate::metrics::EdgeMetrics;
pub use store::OutboxError;

/// Commands queued to the outbox thread. When the queue is full, senders wait: the rules task
/// slows down, and behind it ingest; nothing is dropped.
const COMMAND_QUEUE: usize = 4096;

/// The outbox's stream id and the highest committed seq of each lane (0 = none yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heads {
    /// The stream these seqs belong to.
    pub stream: u64,
    seqs: [u64; 2],
}

impl Heads {
    /// The highest committed seq of `lane`.
    pub fn of(&self, lane: Lane) -> u64 {
        self.seqs[usize::from(lane.index())]
    }
}

enum Command {
    Append(Vec<RecordBody>),
    Read {
        lane: Lane,
        after: u64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<Record>, OutboxError>>,
    },
    Ack {
        lane: Lane,
        upto: u64,
    },
    NewStream(oneshot::Sender<Result<u64, OutboxError>>),
}

/// The outbox thread is gone (the edge is stopping, or the database failed fatally).
#[derive(Debug, thiserror::Error)]
#[error("outbox is closed")]
pub struct Closed;

/// A handle to the outbox thread. Cheap to clone. The thread ends, after committing
/// everything queued, when the last handle is dropped.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Command>,
    heads: watch::Receiver<Heads>,
}

impl Outbox {
    /// Opens (or creates) the outbox at `path` and starts its thread.
    pub fn open(
        path: &Path,
        max_batch: usize,
        metrics: Arc<EdgeMetrics>,
    ) -> Result<(Outbox, std::thread::JoinHandle<()>), OutboxError> {
        let store = store::Store::open(path)?;
        let heads = Heads {
            stream: store.stream(),
            seqs: store.heads(),
        };
        for lane in Lane::ALL {
            let depth = store.depth(lane)?;
            metrics
                .outbox_depth
                .with(lane.label())
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (heads_tx, heads_rx) = watch::channel(heads);
        let thread = std::thread::Builder::new()
            .name("outbox".into())
            .spawn(move || run(store, rx, heads_tx, metrics, max_batch))
            .map_err(OutboxError::Thread)?;
        Ok((
            Outbox {
                tx,
                heads: heads_rx,
            },
            thread,
        ))
    }

    /// Queues records for the next group commit.
    pub async fn append(&self, records: Vec<RecordBody>) -> Result<(), Closed> {
        self.tx
            .send(Command::Append(records))
            .await
            .map_err(|_| Closed)
    }

    /// Up to `limit` committed records of `lane` with seq > `after`, in order.
    pub async fn read(
        &self,
        lane: Lane,
        after: u64,
        limit: usize,
    ) -> Result<Result<Vec<Record>, OutboxError>, Closed> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Read {
                lane,
                after,
                limit,
                reply,
            })
            .await
            .map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// The hub stored every record of `lane` up to `upto`: delete them.
    pub async fn ack(&self, lane: Lane, upto: u64) -> Result<(), Closed> {
        self.tx
            .send(Command::Ack { lane, upto })
            .await
            .map_err(|_| Closed)
    }

    /// Replaces the stream id (see `Store::new_stream`); returns the new one.
    pub async fn new_stream(&self) -> Result<Result<u64, OutboxError>, Closed> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::NewStream(reply))
            .await
            .map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// Watches the committed heads.
    pub fn heads(&self) -> watch::Receiver<Heads> {
        self.heads.clone()
    }
}

fn run(
    mut store: store::Store,
    mut rx: mpsc::Receiver<Command>,
    heads: watch::Sender<Heads>,
    metrics: Arc<EdgeMetrics>,
    max_batch: usize,
) {
    let mut batch: Vec<RecordBody> = Vec::new();
    let mut others: Vec<Command> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        // Group commit: everything that queued while the last commit ran goes in this one.
        while let Some(cmd) = next {
            match cmd {
                Command::Append(records) => batch.extend(records),
                other => others.push(other),
            }
            next = if batch.len() < max_batch {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !batch.is_empty() {
            commit(&mut store, std::mem::take(&mut batch), &heads, &metrics);
        }
        let mut acks = [0u64; 2];
        for cmd in others.drain(..) {
            match cmd {
                Command::Append(_) => {}
                Command::Read {
                    lane,
                    after,
                    limit,
                    reply,
                } => {
                    let _ = reply.send(store.read(lane, after, limit));
                }
                Command::Ack { lane, upto } => {
                    let slot = &mut acks[usize::from(lane.index())];
                    *slot = (*slot).max(upto);
                }
                Command::NewStream(reply) => {
                    let result = store.new_stream();
                    heads.send_modify(|h| h.stream = store.stream());
                    let _ = reply.send(result);
                }
            }
        }
        for lane in Lane::ALL {
            let upto = acks[usize::from(lane.index())];
            if upto == 0 {
                continue;
            }
            match store.delete_through(lane, upto) {
                Ok(n) => metrics
                    .outbox_depth
                    .with(lane.label())
                    .add(-i64::try_from(n).unwrap_or(i64::MAX)),
                Err(e) => {
                    // Not a loss: the records stay and are re-sent; the hub ignores duplicates.
                    metrics.outbox_errors.inc();
                    tracing::warn!(error = %e, lane = lane.label(), "outbox: deleting acknowledged records failed");
                }
            }
        }
    }
}

fn commit(
    store: &mut store::Store,
    batch: Vec<RecordBody>,
    heads: &watch::Sender<Heads>,
    metrics: &EdgeMetrics,
) {
    let n = batch.len() as u64;
    match store.append(batch) {
        Ok(counts) => {
            for lane in Lane::ALL {
                let c = counts[usize::from(lane.index())];
                metrics.outbox_committed.with(lane.label()).add(c);
                metrics
                    .outbox_depth
                    .with(lane.label())
                    .add(i64::try_from(c).unwrap_or(i64::MAX));
            }
            heads.send_modify(|h| h.seqs = store.heads());
        }
        Err(e) => {
            metrics.outbox_errors.inc();
            metrics.records_dropped.add(n);
            tracing::error!(error = %e, records = n, "outbox commit failed: records lost");
        }
    }
}
