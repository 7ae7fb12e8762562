//! The commit thread: group commits of what the outbox holds, acknowledgements applied to the
//! database, retries while the disk fails, and the gauges. It fires readings' tickets as their
//! records are committed.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use wardlink_shared::wire::{Lane, Record, RecordBody};

use super::store::{self, Mark, OutboxError, Remember, Stamped};
use super::{CLOSING_ATTEMPTS, EngineState, Inner, REFRESH, RETRY, Shared, now_ms};

/// Evicts the oldest telemetry held in memory down to 90 % of `max`, replacing it with one gap
/// record; returns how many readings were evicted. Records the commit in progress is writing
/// stay: if it succeeds they are on disk, and counting them evicted would be wrong.
pub(super) fn evict_held(g: &mut Inner, max: usize) -> u64 {
    let target = max / 10 * 9;
    let t = usize::from(Lane::Telemetry.index());
    let writing = g.writing[t];
    let keep = g.pending[t]
        .iter()
        .take_while(|s| s.record.seq <= writing)
        .count();
    let mut after = None;
    let mut evicted = 0u64;
    let mut fresh = 0u64;
    let mut last = None;
    while g.held() > target && g.pending[t].len() > keep + 1 {
        let Some(s) = g.pending[t].remove(keep) else {
            break;
        };
        // Not durable and now never will be: a device sending it again must be heard.
        if let Some(m) = Mark::of(&s) {
            g.seen.remove(&m.patient, m.ts);
        }
        let (n, a) = match s.record.body {
            RecordBody::Gap { after, evicted, .. } => (evicted, after),
            _ => {
                fresh += 1;
                (1, s.record.seq - 1)
            }
        };
        after.get_or_insert(a);
        evicted += n;
        last = Some((s.record.seq, s.at));
    }
    if let (Some(after), Some((seq, at))) = (after, last) {
        g.pending[t].insert(
            keep,
            Stamped {
                at,
                record: Record {
                    seq,
                    body: RecordBody::Gap {
                        lane: Lane::Telemetry,
                        after,
                        evicted,
                    },
                },
                seen: Remember::No,
            },
        );
        // Waiting sessions are told their readings are lost (they close without
        // acknowledging, and devices send again). All of them, not only the evicted ones': a
        // duplicate's ticket waits on the lane's head, not on the reading it repeats.
        g.tickets.abandon();
    }
    fresh
}

pub(super) struct Committer {
    shared: Arc<Shared>,
    /// What the database held after the last commit (kept while it is being reopened).
    stats: [store::LaneStats; 2],
    store: Option<store::Store>,
    path: PathBuf,
    /// When the oldest records' ages were last read from the database.
    refreshed: Instant,
}

impl Committer {
    /// A committer for the database `store` opened at `path`.
    pub(super) fn new(shared: Arc<Shared>, store: store::Store, path: PathBuf) -> Self {
        Self {
            shared,
            stats: store.stats(),
            store: Some(store),
            path,
            refreshed: Instant::now(),
        }
    }

    pub(super) fn run(mut self) {
        let window = self.shared.settings.commit_window;
        let max_batch = self.shared.settings.max_batch;
        let mut retry_at: Option<Instant> = None;
        let mut closing_attempts = 0u32;
        loop {
            let (batch, marks, acked, state, closing) = {
                let mut g = self.shared.lock();
                loop {
                    let now = Instant::now();
                    let work = g.has_work();
                    if g.closing && !work {
                        return;
                    }
                    let due = match (work, g.waiting_since) {
                        (false, _) => None,
                        _ if g.closing || g.held() >= max_batch => Some(now),
                        (true, Some(since)) => Some(since + window),
                        (true, None) => Some(now),
                    };
                    let due = match (due, retry_at) {
                        (Some(d), Some(r)) => Some(d.max(r)),
                        (d, _) => d,
                    };
                    if let Some(d) = due
                        && d <= now
                    {
                        break;
                    }
                    let wait = due.map_or(REFRESH, |d| (d - now).min(REFRESH));
                    let (next, timed_out) = self
                        .shared
                        .work
                        .wait_timeout(g, wait)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    g = next;
                    if timed_out.timed_out() {
                        drop(g);
                        self.gauges(false);
                        g = self.shared.lock();
                    }
                }
                let mut batch: Vec<Stamped> = Vec::new();
                // The engine state goes with every alarm record it describes, whatever the
                // batch size: alarms are few, and a state committed without them (or they
                // without it) would raise an episode twice after a crash.
                let described = g.state.as_ref().map_or(0, |s| {
                    g.pending[usize::from(Lane::Alarms.index())]
                        .iter()
                        .take_while(|p| p.record.seq <= s.tag)
                        .count()
                });
                for lane in Lane::ALL {
                    let mut room = max_batch.saturating_sub(batch.len());
                    if lane == Lane::Alarms {
                        room = room.max(described);
                    }
                    let i = usize::from(lane.index());
                    batch.extend(g.pending[i].iter().take(room).cloned());
                    g.writing[i] = batch
                        .iter()
                        .filter(|s| s.record.body.lane() == lane)
                        .map(|s| s.record.seq)
                        .max()
                        .unwrap_or(0);
                }
                g.waiting_since = None;
                let marks = std::mem::take(&mut g.marks);
                let state = g.state.take();
                (batch, marks, g.acked, state, g.closing)
            };
            let mut state = state;
            let result = self.commit(&batch, &marks, acked, state.as_ref());
            // Whoever waits for the state hears how the attempt went. A failed one is
            // retried with the state, but a clinician's acknowledgement is not held back
            // from the hub by a full disk: it is applied here, in memory, all the same.
            for waiter in state
                .as_mut()
                .map(|s| std::mem::take(&mut s.durable))
                .unwrap_or_default()
            {
                let _ = waiter.send(result.is_ok());
            }
            match result {
                Ok(()) => {
                    if state.is_some() {
                        self.shared.metrics.state_saved.inc();
                    }
                    retry_at = None;
                    let mut g = self.shared.lock();
                    g.writing = [0; 2];
                    g.failing = false;
                    g.applied = [0, 1].map(|i| g.applied[i].max(acked[i]));
                    let through = |lane: Lane| {
                        batch
                            .iter()
                            .filter(|s| s.record.body.lane() == lane)
                            .map(|s| s.record.seq)
                            .max()
                            .unwrap_or(0)
                    };
                    for lane in Lane::ALL {
                        let upto = through(lane);
                        let i = usize::from(lane.index());
                        while g.pending[i].front().is_some_and(|s| s.record.seq <= upto) {
                            if let Some(s) = g.pending[i].pop_front()
                                && lane == Lane::Alarms
                                && s.record.seq > g.acked[i]
                            {
                                g.alarms.push_back(s.record);
                            }
                        }
                    }
                    for lane in Lane::ALL {
                        g.tickets.durable(usize::from(lane.index()), through(lane));
                    }
                    if g.state.is_none() {
                        self.shared.metrics.state_unsaved.set(0);
                    }
                    if g.has_work() {
                        // What arrived during this commit waits at most one window more.
                        g.waiting_since.get_or_insert_with(Instant::now);
                    }
                    drop(g);
                    self.shared.room.notify_waiters();
                    self.gauges(false);
                }
                Err(e) => {
                    let mut g = self.shared.lock();
                    g.writing = [0; 2];
                    // The marks are written by the next attempt, before any taken since.
                    let newer = std::mem::replace(&mut g.marks, marks);
                    g.marks.extend(newer);
                    // The state is written by the next attempt, unless a newer one came.
                    if g.state.is_none() {
                        g.state = state;
                    }
                    if !g.failing {
                        tracing::error!(error = %e, held = g.held(), "outbox commit failed; records stay in memory and are still forwarded; retrying");
                    }
                    g.failing = true;
                    g.waiting_since.get_or_insert_with(Instant::now);
                    let max = self.shared.settings.max_memory_records;
                    if g.held() > max {
                        let n = evict_held(&mut g, max);
                        self.shared.metrics.evicted.with("memory_full").add(n);
                    }
                    drop(g);
                    self.shared.metrics.errors.inc();
                    self.shared.metrics.failing.set(1);
                    self.shared.room.notify_waiters();
                    retry_at = Some(Instant::now() + RETRY);
                    if closing {
                        closing_attempts += 1;
                        if closing_attempts >= CLOSING_ATTEMPTS {
                            let mut g = self.shared.lock();
                            let lost = g.held() as u64;
                            g.pending = [VecDeque::new(), VecDeque::new()];
                            g.marks.clear();
                            g.state = None;
                            g.tickets.abandon();
                            g.applied = g.acked;
                            drop(g);
                            self.shared.metrics.dropped.add(lost);
                            tracing::error!(
                                records = lost,
                                "outbox: shutting down with records that could not be committed: lost"
                            );
                        }
                    }
                }
            }
        }
    }

    /// One commit attempt, reopening the database first if an earlier failure closed it.
    fn commit(
        &mut self,
        batch: &[Stamped],
        marks: &[Mark],
        acked: [u64; 2],
        state: Option<&EngineState>,
    ) -> Result<(), OutboxError> {
        let store = match self.store.as_mut() {
            Some(s) => s,
            None => {
                let s = store::Store::reopen(&self.path)?;
                self.shared.set_db(Some(s.db()));
                tracing::info!("outbox database reopened");
                self.store.insert(s)
            }
        };
        let started = Instant::now();
        let state = state.map(|s| s.bytes.as_slice());
        match store.commit(batch, marks, acked, state, self.shared.settings.max_bytes) {
            Ok(done) => {
                self.stats = store.stats();
                if done.inserted != [0, 0] {
                    self.shared
                        .metrics
                        .commit_seconds
                        .observe(started.elapsed());
                }
                let m = &self.shared.metrics;
                for lane in Lane::ALL {
                    let i = usize::from(lane.index());
                    m.committed.with(lane.label()).add(done.inserted[i]);
                }
                if done.evicted > 0 {
                    m.evicted.with("disk_budget").add(done.evicted);
                    tracing::warn!(
                        records = done.evicted,
                        "outbox over its disk budget: oldest telemetry evicted"
                    );
                }
                m.failing.set(0);
                Ok(())
            }
            Err(e) => {
                // After an I/O error redb refuses everything until reopened. Readers holding
                // the old handle finish their transaction first.
                self.shared.set_db(None);
                self.store = None;
                Err(e)
            }
        }
    }

    /// Refreshes the outbox gauges. Depth, bytes and held records come from memory and are
    /// set every time; the oldest record's age reads the database, so it is refreshed at most
    /// once per [`REFRESH`] (or when `ages` asks), not after each of a hundred commits a
    /// second.
    pub(super) fn gauges(&mut self, ages: bool) {
        let m = &self.shared.metrics;
        let (held, oldest_held) = {
            let g = self.shared.lock();
            (
                [g.pending[0].len(), g.pending[1].len()],
                [0, 1].map(|i| g.pending[i].front().map(|s| s.at)),
            )
        };
        let ages = ages || self.refreshed.elapsed() >= REFRESH;
        if ages {
            self.refreshed = Instant::now();
        }
        let now = now_ms();
        let mut bytes = 0u64;
        for lane in Lane::ALL {
            let i = usize::from(lane.index());
            let stored = self.stats[i];
            let count = stored.count;
            bytes += stored.bytes;
            m.depth
                .with(lane.label())
                .set(i64::try_from(count + held[i] as u64).unwrap_or(i64::MAX));
            if !ages {
                continue;
            }
            let oldest_stored = match (&self.store, count) {
                (Some(s), 1..) => store::oldest(&s.db(), lane).ok().flatten(),
                _ => None,
            };
            let oldest = oldest_stored.or(oldest_held[i]);
            m.oldest_ms
                .with(lane.label())
                .set(oldest.map_or(0, |at| (now - at).max(0)));
        }
        m.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        m.held
            .set(i64::try_from(held[0] + held[1]).unwrap_or(i64::MAX));
    }
}
