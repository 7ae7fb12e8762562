//! The outbox's redb tables and transactions. Only the outbox thread touches these.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use wardlink_shared::wire::{Lane, Record, RecordBody};

/// Records by (lane index, seq), postcard-encoded [`RecordBody`].
const RECORDS: TableDefinition<(u8, u64), &[u8]> = TableDefinition::new("records");
/// Next seq to assign, by lane index. Written in the same transaction as the records.
const NEXT_SEQ: TableDefinition<u8, u64> = TableDefinition::new("next_seq");
/// Outbox-wide values: the stream id.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const STREAM_KEY: &str = "stream";

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

pub(super) struct Store {
    db: Database,
    next: [u64; 2],
    stream: u64,
}

impl Store {
    pub(super) fn open(path: &Path) -> Result<Self, OutboxError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| OutboxError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        let mut next = [1u64; 2];
        let stream;
        {
            txn.open_table(RECORDS)?;
            let seqs = txn.open_table(NEXT_SEQ)?;
            for lane in Lane::ALL {
                if let Some(v) = seqs.get(lane.index())? {
                    next[usize::from(lane.index())] = v.value();
                }
            }
            let mut meta = txn.open_table(META)?;
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
        Ok(Self { db, next, stream })
    }

    /// The stream id the hub knows this outbox by.
    pub(super) fn stream(&self) -> u64 {
        self.stream
    }

    /// Starts a new stream: the records still here are sent again under it. Used when the hub
    /// claims more of the current stream than this outbox ever wrote (a restored backup), where
    /// continuing would make the hub discard new records as duplicates.
    pub(super) fn new_stream(&mut self) -> Result<u64, OutboxError> {
        let s = new_stream_id();
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.insert(STREAM_KEY, s)?;
        txn.commit()?;
        self.stream = s;
        Ok(s)
    }

    /// Highest committed seq per lane.
    pub(super) fn heads(&self) -> [u64; 2] {
        [self.next[0] - 1, self.next[1] - 1]
    }

    pub(super) fn depth(&self, lane: Lane) -> Result<u64, OutboxError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RECORDS)?;
        let i = lane.index();
        Ok(t.range((i, 0)..=(i, u64::MAX))?.count() as u64)
    }

    /// Commits `batch` durably; returns how many records went to each lane.
    pub(super) fn append(&mut self, batch: Vec<RecordBody>) -> Result<[u64; 2], OutboxError> {
        let mut next = self.next;
        let mut counts = [0u64; 2];
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(RECORDS)?;
            let mut buf = Vec::with_capacity(256);
            for body in &batch {
                let i = body.lane().index();
                let slot = usize::from(i);
                buf.clear();
                let bytes = postcard::to_extend(body, std::mem::take(&mut buf))?;
                t.insert((i, next[slot]), bytes.as_slice())?;
                buf = bytes;
                next[slot] += 1;
                counts[slot] += 1;
            }
            let mut seqs = txn.open_table(NEXT_SEQ)?;
            for lane in Lane::ALL {
                seqs.insert(lane.index(), next[usize::from(lane.index())])?;
            }
        }
        txn.commit()?;
        self.next = next;
        Ok(counts)
    }

    pub(super) fn read(
        &self,
        lane: Lane,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Record>, OutboxError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RECORDS)?;
        let i = lane.index();
        let mut out = Vec::new();
        for entry in t
            .range((i, after.saturating_add(1))..=(i, u64::MAX))?
            .take(limit)
        {
            let (k, v) = entry?;
            let (_, seq) = k.value();
            match postcard::from_bytes::<RecordBody>(v.value()) {
                Ok(body) => out.push(Record { seq, body }),
                // Only a damaged file or a downgrade can cause this. The slot is sent as
                // Unreadable so the lane stays contiguous and the loss is counted at the hub.
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

    /// Deletes every record of `lane` with seq ≤ `upto`; returns how many.
    ///
    /// Not fsynced: if a crash undoes the deletion, the records are sent again and the hub
    /// ignores them. The next durable commit makes it permanent anyway.
    pub(super) fn delete_through(&mut self, lane: Lane, upto: u64) -> Result<u64, OutboxError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        let i = lane.index();
        let mut removed = 0u64;
        {
            let mut t = txn.open_table(RECORDS)?;
            t.retain_in((i, 0)..=(i, upto), |_, _| {
                removed += 1;
                false
            })?;
        }
        txn.commit()?;
        Ok(removed)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use wardlink_shared::{PatientId, Reading, Vitals};

    fn vitals(hr: f32) -> RecordBody {
        RecordBody::Vitals {
            reading: Reading {
                patient: PatientId::new("p").unwrap(),
                ts: 1,
                vitals: Vitals {
                    hr: Some(hr),
                    ..Vitals::default()
                },
            },
            news2: None,
        }
    }

    #[test]
    fn seqs_survive_reopen_and_acks_delete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.redb");
        {
            let mut s = Store::open(&path).unwrap();
            assert_eq!(s.heads(), [0, 0]);
            assert_eq!(
                s.append(vec![vitals(1.0), vitals(2.0), vitals(3.0)])
                    .unwrap(),
                [0, 3]
            );
            assert_eq!(s.delete_through(Lane::Telemetry, 2).unwrap(), 2);
            // A durable commit after the non-durable delete makes both permanent.
            s.append(vec![vitals(4.0)]).unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.heads(), [0, 4]);
        let first = s.stream();
        assert_ne!(first, 0);
        let second = s.new_stream().unwrap();
        assert_ne!(second, first);
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.stream(), second, "stream id persists");
        let rest = s.read(Lane::Telemetry, 0, 10).unwrap();
        assert_eq!(rest.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(s.read(Lane::Telemetry, 3, 10).unwrap().len(), 1);
        assert_eq!(s.read(Lane::Alarms, 0, 10).unwrap().len(), 0);
        assert_eq!(s.depth(Lane::Telemetry).unwrap(), 2);
    }
}
