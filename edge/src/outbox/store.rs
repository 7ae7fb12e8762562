//! The outbox's redb tables and transactions. Only the outbox thread writes; readers open their
//! own read transactions on the shared [`Database`].

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use wardlink_shared::PatientId;
use wardlink_shared::time::Millis;
use wardlink_shared::wire::{Lane, Record, RecordBody};

use super::seen::Seen;

/// Records by (lane index, seq): postcard of ([`Stamp`], [`RecordBody`]).
const RECORDS: TableDefinition<(u8, u64), &[u8]> = TableDefinition::new("records");
/// Per lane index: (highest committed seq, records stored, bytes stored). Written in the same
/// transaction as the records it describes.
const LANES: TableDefinition<u8, (u64, u64, u64)> = TableDefinition::new("lanes");
/// Outbox-wide values: the stream id and the boot epoch.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The readings accepted, by (patient, device timestamp): the dedupe window of
/// [`super::seen`], written in the commit that makes each reading durable. It outlives the
/// records (the hub's acknowledgement deletes those), and holds at most the window per
/// patient.
const SEEN: TableDefinition<(&str, i64), ()> = TableDefinition::new("seen");
/// The alarm engine's state (postcard, see the rules), under [`STATE_KEY`]: written in the
/// commit that makes the alarm records it describes durable.
const ENGINE: TableDefinition<&str, &[u8]> = TableDefinition::new("engine");
const STATE_KEY: &str = "state";
const STREAM_KEY: &str = "stream";
const EPOCH_KEY: &str = "epoch";

/// A seq is `epoch << EPOCH_SHIFT | n`: the boot epoch in the high 24 bits, a counter within
/// the epoch below. Every start of the edge durably takes a new epoch before it accepts a
/// reading, so a seq handed out (and perhaps forwarded) before a crash is never handed out
/// again for a different record.
pub const EPOCH_SHIFT: u32 = 40;
/// The largest epoch: 16.7 million starts.
const MAX_EPOCH: u64 = (1 << (64 - EPOCH_SHIFT)) - 1;

/// The first seq of `epoch` (its gap marker).
pub fn epoch_start(epoch: u64) -> u64 {
    epoch << EPOCH_SHIFT
}

/// When a record was appended (ms since the Unix epoch, edge clock), stored beside it for the
/// oldest-unacknowledged-age metric.
pub type Stamp = i64;

/// An outbox storage failure.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// redb failed (I/O, full disk, corruption).
    #[error("outbox database: {0}")]
    Db(#[from] redb::Error),
    /// A record could not be encoded.
    #[error("outbox encoding: {0}")]
    Encode(#[from] postcard::Error),
    /// The outbox thread could not be started.
    #[error("cannot start outbox thread: {0}")]
    Thread(std::io::Error),
    /// The data directory could not be created.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Every boot epoch has been used (16.7 million starts).
    #[error("the outbox has used every boot epoch; replace it (a new stream)")]
    EpochsExhausted,
    /// The database is being reopened after an I/O failure; try again shortly.
    #[error("outbox database unavailable (reopening after an I/O failure)")]
    Unavailable,
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for OutboxError {
            fn from(e: $t) -> Self {
                OutboxError::Db(e.into())
            }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// What the outbox holds of one lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneStats {
    /// Highest seq committed (0: none ever).
    pub head: u64,
    /// Records stored (not yet acknowledged).
    pub count: u64,
    /// Bytes of those records (keys and values).
    pub bytes: u64,
}

/// What one commit did, per lane index.
#[derive(Debug, Default, Clone, Copy)]
pub struct Committed {
    /// Records written.
    pub inserted: [u64; 2],
    /// Acknowledged records deleted.
    pub deleted: [u64; 2],
    /// Telemetry records evicted for the disk budget.
    pub evicted: u64,
}

/// A record with its append time, as the outbox thread holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    /// When it was appended.
    pub at: Stamp,
    /// The record.
    pub record: Record,
    /// Whether the commit also enters the reading in the dedupe window.
    pub seen: Remember,
}

/// What a commit does to the dedupe window for one reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Remember {
    /// Nothing (not a reading, or a reading without a device timestamp).
    #[default]
    No,
    /// Enter the reading's (patient, ts), and drop `forget`, which left the window for it.
    Yes {
        /// The timestamp of the same patient that left the window.
        forget: Option<Millis>,
    },
}

/// A dedupe entry whose record the hub acknowledged before it was committed: the record need
/// not be written, but the entry is, so that the edge itself recognises a re-send. It is
/// written without an fsync of its own; a crash that undoes it leaves the recognition to the
/// hub, which stores one reading per patient and timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// The record's seq.
    pub seq: u64,
    /// The reading's patient.
    pub patient: PatientId,
    /// The reading's timestamp.
    pub ts: Millis,
    /// The timestamp that left the window for it.
    pub forget: Option<Millis>,
}

impl Mark {
    /// The mark of a held record, if it enters the window.
    pub fn of(s: &Stamped) -> Option<Mark> {
        match (&s.seen, &s.record.body) {
            (Remember::Yes { forget }, RecordBody::Vitals { reading, .. }) => Some(Mark {
                seq: s.record.seq,
                patient: reading.patient.clone(),
                ts: reading.ts,
                forget: *forget,
            }),
            _ => None,
        }
    }
}

const KEY_BYTES: u64 = 9;

pub(super) struct Store {
    db: std::sync::Arc<Database>,
    stream: u64,
    epoch: u64,
    stats: [LaneStats; 2],
}

impl Store {
    /// Opens (or creates) the outbox at `path` for a new boot: durably takes the next epoch
    /// and writes each lane's gap marker for it, before anything else can happen.
    pub(super) fn open(path: &Path, at: Stamp) -> Result<Self, OutboxError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| OutboxError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let mut store = Self::reopen(path)?;
        let epoch = store.epoch + 1;
        if epoch > MAX_EPOCH {
            return Err(OutboxError::EpochsExhausted);
        }
        let marker = epoch_start(epoch);
        let txn = store.db.begin_write()?;
        let mut stats = store.stats;
        {
            let mut records = txn.open_table(RECORDS)?;
            let mut lanes = txn.open_table(LANES)?;
            for lane in Lane::ALL {
                let s = &mut stats[usize::from(lane.index())];
                let body = RecordBody::Gap {
                    lane,
                    after: s.head,
                    evicted: 0,
                };
                put(&mut records, s, lane, marker, at, &body)?;
                s.head = marker;
                lanes.insert(lane.index(), (s.head, s.count, s.bytes))?;
            }
            txn.open_table(META)?.insert(EPOCH_KEY, epoch)?;
        }
        txn.commit()?;
        store.epoch = epoch;
        store.stats = stats;
        Ok(store)
    }

    /// Opens the outbox as it is, without taking a new epoch: after an I/O failure, while the
    /// same boot's seqs are still being handed out.
    pub(super) fn reopen(path: &Path) -> Result<Self, OutboxError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        let mut stats = [LaneStats::default(); 2];
        let stream;
        let epoch;
        {
            txn.open_table(RECORDS)?;
            let lanes = txn.open_table(LANES)?;
            for lane in Lane::ALL {
                if let Some(v) = lanes.get(lane.index())? {
                    let (head, count, bytes) = v.value();
                    stats[usize::from(lane.index())] = LaneStats { head, count, bytes };
                }
            }
            let mut meta = txn.open_table(META)?;
            epoch = meta.get(EPOCH_KEY)?.map_or(0, |v| v.value());
            let existing = meta.get(STREAM_KEY)?.map(|v| v.value());
            stream = match existing {
                Some(s) => s,
                None => {
                    let s = new_stream_id();
                    meta.insert(STREAM_KEY, s)?;
                    s
                }
            };
        }
        txn.commit()?;
        Ok(Self {
            db: std::sync::Arc::new(db),
            stream,
            epoch,
            stats,
        })
    }

    /// The database, for readers on other threads.
    pub(super) fn db(&self) -> std::sync::Arc<Database> {
        self.db.clone()
    }

    /// The stream id the hub knows this outbox by.
    pub(super) fn stream(&self) -> u64 {
        self.stream
    }

    /// This boot's epoch.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(super) fn stats(&self) -> [LaneStats; 2] {
        self.stats
    }

    /// One transaction: writes `batch` (except records the hub already acknowledged), deletes
    /// every record of a lane up to `acked`, and evicts the oldest telemetry while the stored
    /// bytes exceed `max_bytes`. Durable only when it writes records: when the hub acknowledged
    /// the whole batch before its commit (the usual case with a healthy uplink), there is
    /// nothing a crash could lose and the SD card is spared the fsync. A crash that undoes a
    /// non-durable commit brings back deleted records (re-sent, ignored by the hub) and an older
    /// lane head (the next epoch's gap then names an earlier seq, which the hub has passed).
    pub(super) fn commit(
        &mut self,
        batch: &[Stamped],
        marks: &[Mark],
        acked: [u64; 2],
        state: Option<&[u8]>,
        max_bytes: u64,
    ) -> Result<Committed, OutboxError> {
        let mut stats = self.stats;
        let mut done = Committed::default();
        let mut txn = self.db.begin_write()?;
        {
            let mut seen = txn.open_table(SEEN)?;
            // Marks first: a mark is older than every record of the batch, so a `forget` in
            // the batch wins over a mark that re-enters the same entry.
            for m in marks {
                remember(&mut seen, &m.patient, m.ts, m.forget)?;
            }
            for s in batch {
                if let Some(m) = Mark::of(s) {
                    remember(&mut seen, &m.patient, m.ts, m.forget)?;
                }
            }
        }
        {
            let mut records = txn.open_table(RECORDS)?;
            for s in batch {
                let lane = s.record.body.lane();
                let i = usize::from(lane.index());
                let st = &mut stats[i];
                st.head = st.head.max(s.record.seq);
                if s.record.seq > acked[i] {
                    put(&mut records, st, lane, s.record.seq, s.at, &s.record.body)?;
                    done.inserted[i] += 1;
                }
            }
            for lane in Lane::ALL {
                let i = usize::from(lane.index());
                let st = &mut stats[i];
                let l = lane.index();
                let mut freed = 0u64;
                let mut removed = 0u64;
                records.retain_in((l, 0)..=(l, acked[i]), |_, v| {
                    removed += 1;
                    freed += KEY_BYTES + v.len() as u64;
                    false
                })?;
                st.count = st.count.saturating_sub(removed);
                st.bytes = st.bytes.saturating_sub(freed);
                done.deleted[i] = removed;
            }
            done.evicted = evict(&mut records, &mut stats, max_bytes)?;
            let mut lanes = txn.open_table(LANES)?;
            for lane in Lane::ALL {
                let s = stats[usize::from(lane.index())];
                lanes.insert(lane.index(), (s.head, s.count, s.bytes))?;
            }
        }
        if let Some(state) = state {
            txn.open_table(ENGINE)?.insert(STATE_KEY, state)?;
        }
        if done.inserted == [0, 0] && state.is_none() {
            // Dedupe entries alone need no fsync: the hub has their records (see `Mark`). The
            // engine state does: the hub may have alarm records it describes.
            txn.set_durability(Durability::None)?;
        }
        txn.commit()?;
        self.stats = stats;
        Ok(done)
    }

    /// The dedupe window as committed, each patient's timestamps in order; entries beyond the
    /// window (left by a mark that re-entered an entry its batch had dropped) are deleted.
    pub(super) fn load_seen(&self) -> Result<Seen, OutboxError> {
        let txn = self.db.begin_write()?;
        let mut seen = Seen::default();
        {
            let mut table = txn.open_table(SEEN)?;
            let mut surplus: Vec<(PatientId, Millis)> = Vec::new();
            for entry in table.iter()? {
                let (k, _) = entry?;
                let (patient, ts) = k.value();
                // Only ids the edge accepted were ever written; skip anything else.
                let Ok(patient) = PatientId::new(patient) else {
                    continue;
                };
                if let Some(old) = seen.insert(&patient, ts) {
                    surplus.push((patient, old));
                }
            }
            for (patient, ts) in &surplus {
                table.remove((patient.as_str(), *ts))?;
            }
        }
        txn.commit()?;
        Ok(seen)
    }

    /// The alarm engine's state as last committed.
    pub(super) fn load_state(&self) -> Result<Option<Vec<u8>>, OutboxError> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(ENGINE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get(STATE_KEY)?.map(|v| v.value().to_vec()))
    }

    /// Starts a new stream: the records still here are sent again under it. Used when the hub
    /// claims more of the current stream than this outbox ever wrote (a restored backup), where
    /// continuing would make the hub discard new records as duplicates.
    pub(super) fn new_stream(db: &Database) -> Result<u64, OutboxError> {
        let s = new_stream_id();
        let txn = db.begin_write()?;
        txn.open_table(META)?.insert(STREAM_KEY, s)?;
        txn.commit()?;
        Ok(s)
    }
}

/// Enters one reading in the dedupe window, dropping the entry that left it.
fn remember(
    seen: &mut redb::Table<(&str, i64), ()>,
    patient: &PatientId,
    ts: Millis,
    forget: Option<Millis>,
) -> Result<(), OutboxError> {
    seen.insert((patient.as_str(), ts), ())?;
    if let Some(old) = forget {
        seen.remove((patient.as_str(), old))?;
    }
    Ok(())
}

/// Inserts one record and counts it (a record already there, from a commit that reported a
/// failure but reached the disk, is not counted twice).
fn put(
    records: &mut redb::Table<(u8, u64), &[u8]>,
    stats: &mut LaneStats,
    lane: Lane,
    seq: u64,
    at: Stamp,
    body: &RecordBody,
) -> Result<(), OutboxError> {
    let bytes = postcard::to_stdvec(&(at, body))?;
    let old = records
        .insert((lane.index(), seq), bytes.as_slice())?
        .map(|v| v.value().len() as u64);
    match old {
        Some(len) => stats.bytes = stats.bytes - len.min(stats.bytes) + bytes.len() as u64,
        None => {
            stats.count += 1;
            stats.bytes += KEY_BYTES + bytes.len() as u64;
        }
    }
    Ok(())
}

/// Evicts the oldest telemetry until the stored bytes are at most 90 % of `max_bytes`
/// (eviction in steps, not one record per commit). The evicted run is replaced by one gap
/// record at its last seq, so the lane stays a chain and the hub learns how many were lost.
/// Alarms are never evicted. Returns how many records were evicted.
fn evict(
    records: &mut redb::Table<(u8, u64), &[u8]>,
    stats: &mut [LaneStats; 2],
    max_bytes: u64,
) -> Result<u64, OutboxError> {
    let total = |s: &[LaneStats; 2]| s[0].bytes + s[1].bytes;
    if max_bytes == 0 || total(stats) <= max_bytes {
        return Ok(0);
    }
    let target = max_bytes / 10 * 9;
    let l = Lane::Telemetry.index();
    let i = usize::from(l);
    let mut victims: Vec<u64> = Vec::new();
    let mut after = None;
    let mut evicted = 0u64;
    let mut fresh = 0u64;
    let mut freed = 0u64;
    let mut last_at = 0;
    {
        for entry in records.range((l, 0)..=(l, u64::MAX))? {
            if total(stats) - freed <= target {
                break;
            }
            let (k, v) = entry?;
            let seq = k.value().1;
            let (n, first_after) = match postcard::from_bytes::<(Stamp, RecordBody)>(v.value()) {
                Ok((at, RecordBody::Gap { after, evicted, .. })) => {
                    last_at = at;
                    (evicted, after)
                }
                Ok((at, _)) => {
                    last_at = at;
                    fresh += 1;
                    (1, seq - 1)
                }
                Err(_) => {
                    fresh += 1;
                    (1, seq - 1)
                }
            };
            after.get_or_insert(first_after);
            evicted += n;
            freed += KEY_BYTES + v.value().len() as u64;
            victims.push(seq);
        }
    }
    let (Some(after), Some(&last)) = (after, victims.last()) else {
        return Ok(0);
    };
    for seq in &victims {
        records.remove((l, *seq))?;
    }
    let s = &mut stats[i];
    s.count -= victims.len() as u64;
    s.bytes -= freed;
    let gap = RecordBody::Gap {
        lane: Lane::Telemetry,
        after,
        evicted,
    };
    // The gap keeps the newest victim's time: what it stands for is at least that old.
    put(records, s, Lane::Telemetry, last, last_at, &gap)?;
    // Gaps folded into this one were counted when they were made.
    Ok(fresh)
}

/// Up to `limit` committed records of `lane` with seq > `after`, in order.
pub fn read(
    db: &Database,
    lane: Lane,
    after: u64,
    limit: usize,
) -> Result<Vec<Record>, OutboxError> {
    let txn = db.begin_read()?;
    let t = txn.open_table(RECORDS)?;
    let i = lane.index();
    let mut out = Vec::new();
    for entry in t
        .range((i, after.saturating_add(1))..=(i, u64::MAX))?
        .take(limit)
    {
        let (k, v) = entry?;
        let (_, seq) = k.value();
        match postcard::from_bytes::<(Stamp, RecordBody)>(v.value()) {
            Ok((_, body)) => out.push(Record { seq, body }),
            // Only a damaged file or a downgrade can cause this. The slot is sent as
            // Unreadable so the lane stays a chain and the loss is counted at the hub.
            Err(e) => {
                tracing::error!(seq, error = %e, "outbox: unreadable record");
                out.push(Record {
                    seq,
                    body: RecordBody::Unreadable {
                        lane,
                        reason: e.to_string(),
                    },
                });
            }
        }
    }
    Ok(out)
}

/// Every committed record of both lanes, alarms first, of the outbox at `path`: for tests and
/// diagnosis of an edge that is not running (the database is locked while it runs).
pub fn inspect(path: &Path) -> Result<Vec<Record>, OutboxError> {
    let db = Database::create(path)?;
    let mut out = read(&db, Lane::Alarms, 0, usize::MAX)?;
    out.extend(read(&db, Lane::Telemetry, 0, usize::MAX)?);
    Ok(out)
}

/// When the oldest stored record of `lane` was appended.
pub fn oldest(db: &Database, lane: Lane) -> Result<Option<Stamp>, OutboxError> {
    let txn = db.begin_read()?;
    let t = txn.open_table(RECORDS)?;
    let i = lane.index();
    let first = t.range((i, 0)..=(i, u64::MAX))?.next().transpose()?;
    Ok(first.and_then(|(_, v)| {
        postcard::from_bytes::<(Stamp, RecordBody)>(v.value())
            .ok()
            .map(|(at, _)| at)
    }))
}

/// A random, non-zero stream id.
fn new_stream_id() -> u64 {
    loop {
        let s: u64 = rand::RngExt::random(&mut rand::rng());
        if s != 0 {
            return s;
        }
    }
}
