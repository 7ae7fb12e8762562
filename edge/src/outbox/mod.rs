//! The outbox: every record the edge accepted, kept until the hub acknowledges it, on disk
//! (redb) once its group commit is done.
//!
//! [`Outbox::append`] gives each record its seq at once and makes it visible to the uplink,
//! which may forward it before it is committed: a fresh alarm never waits for the SD card. One
//! thread commits: it waits up to the commit window (or until a batch is full) so a burst
//! costs one fsync, then writes the batch, deletes what the hub acknowledged and evicts for the
//! disk budget in one transaction.
//!
//! Invariants:
//! - a lane is a chain of seqs (consecutive, or a gap record naming the seq it follows), in the
//!   database and in memory together, so the hub can tell a redelivery from a hole;
//! - a seq is never given to two records: seqs carry the boot epoch, which is durably taken
//!   before the first append of a boot (see `store::EPOCH_SHIFT`);
//! - records leave memory only once committed or acknowledged, and the disk only once
//!   acknowledged or evicted (telemetry only, counted, replaced by a gap record);
//! - a failed commit (a full disk) keeps its records in memory, still forwarded; the thread
//!   reopens the database and retries until space returns. While it fails, memory is bounded by
//!   evicting the oldest telemetry held there; alarms are never evicted;
//! - a reading's [`Ticket`] fires only once the reading is durable: its record committed here,
//!   or stored by the hub (which acknowledges only after its own commit), whichever comes
//!   first; never earlier. Tickets fire in seq order. A record the hub has is not written
//!   here, but its dedupe entry is (without an fsync of its own: should a crash undo it, the
//!   hub still recognises a re-send by patient and timestamp).
//! - the alarm engine's state (see [`Outbox::append_with_state`]) is written only in a commit
//!   that makes every alarm record appended before it durable, and only the newest: after a
//!   crash the state on disk and the alarm records on disk (or at the hub) tell the same
//!   story, so a restarted edge neither raises an open episode again nor forgets one.

mod committer;
mod config;
mod metrics;
mod seen;
mod store;
mod tickets;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redb::Database;
use tokio::sync::{Notify, oneshot, watch};
use wardlink_shared::wire::{Lane, Record, RecordBody};

use wardlink_shared::PatientId;
use wardlink_shared::time::Millis;

use crate::durable::Ticket;
use committer::{Committer, evict_held};
pub use config::OutboxSection;
pub use metrics::OutboxMetrics;
use seen::Seen;
pub use seen::WINDOW as DEDUPE_WINDOW;
pub use store::{EPOCH_SHIFT, OutboxError, epoch_start, inspect};
use store::{Mark, Remember, Stamp, Stamped};
use tickets::Tickets;

/// How long a failed commit waits before the next attempt.
const RETRY: Duration = Duration::from_millis(500);
/// How often the gauges (oldest unacknowledged age) are refreshed when nothing happens.
const REFRESH: Duration = Duration::from_secs(1);
/// Attempts at shutdown before records that cannot be committed are given up (counted).
const CLOSING_ATTEMPTS: u32 = 5;

/// The outbox's tuning, from `[outbox]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most records in one commit.
    pub max_batch: usize,
    /// How long the first record of a batch waits for others before the commit.
    pub commit_window: Duration,
    /// Disk budget: bytes of stored records above which the oldest telemetry is evicted
    /// (0: none).
    pub max_bytes: u64,
    /// Records held in memory (not yet committed) before appends wait, or, while commits
    /// fail, before the oldest telemetry held there is evicted.
    pub max_memory_records: usize,
}

/// The outbox's stream id and the highest seq given out on each lane (0 = none yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heads {
    /// The stream these seqs belong to.
    pub stream: u64,
    seqs: [u64; 2],
}

impl Heads {
    /// The highest seq given out on `lane`.
    pub fn of(&self, lane: Lane) -> u64 {
        self.seqs[usize::from(lane.index())]
    }
}

/// An engine state handed to the outbox, and who waits for its commit.
type NewState = (Vec<u8>, Option<oneshot::Sender<bool>>);

/// The outbox is closed (the edge is stopping) or cannot give out seqs any more.
#[derive(Debug, thiserror::Error)]
#[error("outbox is closed")]
pub struct Closed;

struct Inner {
    /// Records given a seq but not yet committed, per lane, in seq order.
    pending: [VecDeque<Stamped>; 2],
    /// Committed alarm records the hub has not acknowledged, in seq order. Alarms are few, and
    /// with these in memory the alarm lane never has to read the database: a disk that fails
    /// (and a database being reopened) cannot hold an alarm back.
    alarms: VecDeque<Record>,
    /// Next seq to give out, per lane.
    next: [u64; 2],
    /// Highest seq the hub acknowledged, per lane.
    acked: [u64; 2],
    /// Acknowledgements applied to the database.
    applied: [u64; 2],
    /// The highest seq per lane of the commit in progress (0: none).
    writing: [u64; 2],
    /// Since when records (or acknowledgements) wait for a commit.
    waiting_since: Option<Instant>,
    /// The last commit failed.
    failing: bool,
    closing: bool,
    stream: u64,
    /// The dedupe window: readings accepted, per patient.
    seen: Seen,
    /// Dedupe entries of records the hub acknowledged before their commit; the next commit
    /// writes them.
    marks: Vec<Mark>,
    /// Readings' tickets waiting for their records to be durable.
    tickets: Tickets,
    /// The newest alarm engine state not yet committed.
    state: Option<EngineState>,
}

/// The alarm engine's state as the rules handed it over, with the highest alarm seq given out
/// when it was taken: the state describes every alarm record up to that seq.
#[derive(Debug)]
pub(super) struct EngineState {
    bytes: Vec<u8>,
    tag: u64,
    /// Told once a commit attempt wrote this state (or a newer one), or failed to.
    durable: Vec<oneshot::Sender<bool>>,
}

impl Inner {
    fn held(&self) -> usize {
        self.pending[0].len() + self.pending[1].len()
    }

    /// Whether anything waits for a commit.
    fn has_work(&self) -> bool {
        self.held() > 0
            || self.acked != self.applied
            || !self.marks.is_empty()
            || self.state.is_some()
    }

    /// The highest seq given out on each lane, by lane index.
    fn given(&self) -> [u64; 2] {
        [self.next[0] - 1, self.next[1] - 1]
    }

    fn heads(&self) -> Heads {
        Heads {
            stream: self.stream,
            seqs: [self.next[0] - 1, self.next[1] - 1],
        }
    }
}

struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the commit thread.
    work: Condvar,
    /// Wakes appenders waiting for room.
    room: Notify,
    heads: watch::Sender<Heads>,
    /// The open database, for readers; `None` while it is being reopened.
    db: Mutex<Option<Arc<Database>>>,
    settings: Settings,
    metrics: Arc<OutboxMetrics>,
    /// The alarm engine's state as the last boot committed it, until the rules take it.
    restored: Mutex<Option<Vec<u8>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves `Inner` consistent; a panic elsewhere does not void it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn db(&self) -> Option<Arc<Database>> {
        self.db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Marks that work waits for a commit; whether the commit thread must be woken for it:
    /// only when this opens a window or fills a batch. While a window is open the thread
    /// already sleeps until its end, and waking it for each record (a thousand a second) costs
    /// a context switch each for nothing.
    fn opens_window(&self, g: &mut Inner) -> bool {
        let opens = g.waiting_since.is_none();
        g.waiting_since.get_or_insert_with(Instant::now);
        opens || g.held() >= self.settings.max_batch
    }

    fn set_db(&self, db: Option<Arc<Database>>) {
        *self
            .db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = db;
    }
}

/// Closes the outbox when the last handle goes.
struct Guard(Arc<Shared>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.lock().closing = true;
        self.0.work.notify_all();
        self.0.room.notify_waiters();
    }
}

/// A handle to the outbox. Cheap to clone. The commit thread ends, after committing what it
/// holds, when the last handle is dropped.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
    _guard: Arc<Guard>,
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`, takes this boot's epoch, and starts the
    /// commit thread.
    pub fn open(
        path: &Path,
        settings: Settings,
        metrics: Arc<OutboxMetrics>,
    ) -> Result<(Outbox, std::thread::JoinHandle<()>), OutboxError> {
        let store = store::Store::open(path, now_ms())?;
        let alarms = store::read(&store.db(), Lane::Alarms, 0, usize::MAX)?.into();
        let seen = store.load_seen()?;
        let restored = store.load_state()?;
        let stats = store.stats();
        let next = [0, 1].map(|i| stats[i].head + 1);
        let inner = Inner {
            pending: [VecDeque::new(), VecDeque::new()],
            alarms,
            next,
            acked: [0; 2],
            applied: [0; 2],
            writing: [0; 2],
            waiting_since: None,
            failing: false,
            closing: false,
            stream: store.stream(),
            seen,
            marks: Vec::new(),
            tickets: Tickets::new([next[0] - 1, next[1] - 1]),
            state: None,
        };
        let (heads, _) = watch::channel(inner.heads());
        tracing::info!(
            epoch = store.epoch(),
            stream = store.stream(),
            "outbox open"
        );
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            work: Condvar::new(),
            room: Notify::new(),
            heads,
            db: Mutex::new(Some(store.db())),
            settings,
            metrics,
            restored: Mutex::new(restored),
        });
        let mut committer = Committer::new(shared.clone(), store, path.to_owned());
        committer.gauges(true);
        let thread = std::thread::Builder::new()
            .name("outbox".into())
            .spawn(move || committer.run())
            .map_err(OutboxError::Thread)?;
        Ok((
            Outbox {
                _guard: Arc::new(Guard(shared.clone())),
                shared,
            },
            thread,
        ))
    }

    /// Gives `records` their seqs and queues them for the next group commit; the uplink may
    /// send them at once. Waits while too many records are held in memory for a disk that
    /// keeps up slowly (backpressure); while commits fail, evicts old telemetry instead.
    pub async fn append(&self, records: Vec<RecordBody>) -> Result<(), Closed> {
        self.append_with(records, None, None).await
    }

    /// [`Outbox::append`], and `state` (the alarm engine's, encoded) replaces the state to
    /// persist: it is committed with these records, or with later ones, never before them.
    /// `records` may be empty (an acknowledgement changes the state and makes no record).
    pub async fn append_with_state(
        &self,
        records: Vec<RecordBody>,
        state: Option<Vec<u8>>,
    ) -> Result<(), Closed> {
        self.append_with(records, None, state.map(|s| (s, None)))
            .await
    }

    /// [`Outbox::append_with_state`] for a change a clinician made (an acknowledgement, a
    /// silence): the returned receiver says, once the commit that should have written it was
    /// attempted, whether it did (`true`) or the disk failed (`false`; the state is written by
    /// a later attempt). The hub is told the command was applied only then, so a crash in
    /// between makes it send the command again.
    pub async fn append_state_confirmed(
        &self,
        records: Vec<RecordBody>,
        state: Vec<u8>,
    ) -> Result<oneshot::Receiver<bool>, Closed> {
        let (tx, rx) = oneshot::channel();
        self.append_with(records, None, Some((state, Some(tx))))
            .await?;
        Ok(rx)
    }

    /// The alarm engine's state as the last boot committed it; `None` when there was none (or
    /// after the first call).
    pub fn take_restored_state(&self) -> Option<Vec<u8>> {
        self.shared
            .restored
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// If a reading of `patient` stamped `ts` was already accepted (it is in the dedupe
    /// window), takes `ticket` to fire once everything appended so far is durable (the reading
    /// it repeats included) and returns `Ok`: a device sending a reading again must not have it
    /// stored twice, nor acknowledged before the first one is safe. Otherwise gives the ticket
    /// back. One critical section: an eviction cannot fall between the check and the wait.
    pub fn repeat(
        &self,
        patient: &PatientId,
        ts: Millis,
        ticket: Option<Ticket>,
    ) -> Result<(), Option<Ticket>> {
        let mut g = self.shared.lock();
        if !g.seen.contains(patient, ts) {
            return Err(ticket);
        }
        if let Some(ticket) = ticket {
            let at = g.given();
            g.tickets.wait(at, ticket);
        }
        Ok(())
    }

    /// `ts`, or the first millisecond after it that `patient` has no reading at: a stamp the
    /// edge gives a reading itself (the device sent none) must not make it look like a repeat.
    pub fn unique_ts(&self, patient: &PatientId, ts: Millis) -> Millis {
        let g = self.shared.lock();
        let mut ts = ts;
        while g.seen.contains(patient, ts) {
            ts = ts.saturating_add(1);
        }
        ts
    }

    /// Appends a reading's records (its alarm events, then its `Vitals` record), as
    /// [`Outbox::append_with_state`]. The reading enters the dedupe window; `ticket` fires
    /// once it is durable.
    pub async fn append_reading(
        &self,
        records: Vec<RecordBody>,
        ticket: Option<Ticket>,
        state: Option<Vec<u8>>,
    ) -> Result<(), Closed> {
        self.append_with(records, Some(ticket), state.map(|s| (s, None)))
            .await
    }

    async fn append_with(
        &self,
        records: Vec<RecordBody>,
        mut reading: Option<Option<Ticket>>,
        mut state: Option<NewState>,
    ) -> Result<(), Closed> {
        let max = self.shared.settings.max_memory_records;
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut g = self.shared.lock();
                if g.closing {
                    return Err(Closed);
                }
                if g.held() == 0 || g.held() + records.len() <= max || g.failing {
                    return self.give_seqs(&mut g, records, reading.take(), state.take());
                }
            }
            room.await;
        }
    }

    fn give_seqs(
        &self,
        g: &mut Inner,
        records: Vec<RecordBody>,
        mut reading: Option<Option<Ticket>>,
        state: Option<NewState>,
    ) -> Result<(), Closed> {
        if records.is_empty() && state.is_none() {
            // Nothing to commit: opening a window here would leave the commit thread asleep
            // for a second while later appends took the window for open.
            return Ok(());
        }
        let at = now_ms();
        for body in records {
            let i = usize::from(body.lane().index());
            let seq = g.next[i];
            if (seq + 1) & ((1 << EPOCH_SHIFT) - 1) == 0 {
                // 2^40 records in one boot: the edge must restart to take a new epoch.
                tracing::error!("outbox: this boot's seqs are used up; restart the edge");
                self.shared.metrics.dropped.inc();
                return Err(Closed);
            }
            g.next[i] += 1;
            let mut seen = Remember::No;
            if let RecordBody::Vitals { reading: r, .. } = &body
                && let Some(ticket) = reading.take()
            {
                seen = Remember::Yes {
                    forget: g.seen.insert(&r.patient, r.ts),
                };
                if let Some(ticket) = ticket {
                    // This record, and the alarm events appended with it (and before it).
                    let mut at = g.given();
                    at[i] = seq;
                    g.tickets.wait(at, ticket);
                }
            }
            g.pending[i].push_back(Stamped {
                at,
                record: Record { seq, body },
                seen,
            });
        }
        if let Some((bytes, waiter)) = state {
            let tag = g.given()[usize::from(Lane::Alarms.index())];
            // The newer state includes what the older one said: its waiters come along.
            let mut durable = g.state.take().map(|s| s.durable).unwrap_or_default();
            durable.extend(waiter);
            g.state = Some(EngineState {
                bytes,
                tag,
                durable,
            });
            self.shared.metrics.state_unsaved.set(1);
        }
        if g.failing && g.held() > self.shared.settings.max_memory_records {
            let n = evict_held(g, self.shared.settings.max_memory_records);
            self.shared.metrics.evicted.with("memory_full").add(n);
        }
        let wake = self.shared.opens_window(g);
        self.shared.heads.send_replace(g.heads());
        if wake {
            self.shared.work.notify_one();
        }
        Ok(())
    }

    /// Up to `limit` records of `lane` with seq > `after`, in order: committed ones from the
    /// database (for alarms, from memory), then those not yet committed. Possibly fewer than
    /// `limit` while more exist, never none while any does.
    pub async fn read(
        &self,
        lane: Lane,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Record>, OutboxError> {
        let i = usize::from(lane.index());
        let db = self.shared.db();
        let held: Vec<Record> = {
            let g = self.shared.lock();
            let held = &g.pending[i];
            let newer = |s: &&Stamped| s.record.seq > after;
            if lane == Lane::Alarms {
                return Ok(g
                    .alarms
                    .iter()
                    .chain(held.iter().map(|s| &s.record))
                    .filter(|r| r.seq > after)
                    .take(limit)
                    .cloned()
                    .collect());
            }
            if held
                .front()
                .is_some_and(|s| s.record.seq <= after.saturating_add(1))
                || held.front().is_some_and(
                    |s| matches!(s.record.body, RecordBody::Gap { after: a, .. } if a <= after),
                )
            {
                // The live path: everything after `after` is in memory.
                return Ok(held
                    .iter()
                    .filter(newer)
                    .take(limit)
                    .map(|s| s.record.clone())
                    .collect());
            }
            if db.is_none() {
                return Err(OutboxError::Unavailable);
            }
            // An eviction between this snapshot and the database read may fold what the
            // database returns into one gap; the batch is then short, not wrong.
            held.iter()
                .filter(newer)
                .take(limit)
                .map(|s| s.record.clone())
                .collect()
        };
        // Taken after the snapshot above: a record committed in between is in both, and one
        // committed before is in the database. Nothing falls between the two.
        let db = db.ok_or(OutboxError::Unavailable)?;
        let mut out = tokio::task::spawn_blocking(move || store::read(&db, lane, after, limit))
            .await
            .map_err(|e| OutboxError::Thread(std::io::Error::other(e)))??;
        if out.len() < limit {
            let last = out.last().map_or(after, |r| r.seq);
            out.extend(held.into_iter().filter(|r| r.seq > last));
            out.truncate(limit);
        }
        Ok(out)
    }

    /// The hub stored every record of `lane` up to `upto`: they need not be kept.
    pub fn ack(&self, lane: Lane, upto: u64) {
        let i = usize::from(lane.index());
        let mut g = self.shared.lock();
        if upto <= g.acked[i] {
            return;
        }
        g.acked[i] = upto;
        // Held records the hub already has need no commit; their dedupe entries do.
        let before = g.held();
        while g.pending[i].front().is_some_and(|s| s.record.seq <= upto) {
            if let Some(mark) = g.pending[i].pop_front().as_ref().and_then(Mark::of) {
                g.marks.push(mark);
            }
        }
        if lane == Lane::Alarms {
            while g.alarms.front().is_some_and(|r| r.seq <= upto) {
                g.alarms.pop_front();
            }
        }
        let freed = before != g.held();
        // Stored by the hub: durable, whatever our disk does.
        g.tickets.durable(i, upto);
        let wake = self.shared.opens_window(&mut g);
        drop(g);
        if wake {
            self.shared.work.notify_one();
        }
        if freed {
            self.shared.room.notify_waiters();
        }
    }

    /// Replaces the stream id (see `Store::new_stream`); returns the new one.
    pub async fn new_stream(&self) -> Result<u64, OutboxError> {
        let db = self.shared.db().ok_or(OutboxError::Unavailable)?;
        let s = tokio::task::spawn_blocking(move || store::Store::new_stream(&db))
            .await
            .map_err(|e| OutboxError::Thread(std::io::Error::other(e)))??;
        let mut g = self.shared.lock();
        g.stream = s;
        self.shared.heads.send_replace(g.heads());
        Ok(s)
    }

    /// Watches the heads (the highest seq given out per lane) and the stream.
    pub fn heads(&self) -> watch::Receiver<Heads> {
        self.shared.heads.subscribe()
    }
}

fn now_ms() -> Stamp {
    crate::clock::now_ms()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod ticket_tests;
