//! The hub store's redb tables and transactions.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use wardlink_shared::dashboard::ServerEvent;
use wardlink_shared::wire::{Lane, RecordBody};
use wardlink_shared::{EdgeId, WardId};

use super::alerts::{self, AckOutcome, PatientOutcome};
use super::{Ingested, Write};
use crate::bus::Event;

/// Highest stored seq by (edge id, stream, lane index). Never deleted: the dedupe does not
/// expire. The lane's chain up to the watermark is stored (see `Record::continues`).
const WATERMARKS: TableDefinition<(&str, u64, u8), u64> = TableDefinition::new("watermarks");
/// Events by hub seq: (ward, JSON text).
const EVENTS: TableDefinition<u64, (&str, &str)> = TableDefinition::new("events");

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed.
    #[error("store database: {0}")]
    Db(#[from] redb::Error),
    /// A thread could not be started or failed.
    #[error("store thread: {0}")]
    Thread(std::io::Error),
    /// The group this write was part of failed to commit.
    #[error("store commit failed: {0}")]
    Failed(String),
    /// Records did not continue their lane (an edge bug): nothing of them was stored.
    #[error("records do not continue the lane: expected seq {expected}, got {got}")]
    Gap {
        /// The seq that should have come next.
        expected: u64,
        /// The seq that came.
        got: u64,
    },
    /// A stored value is not what this version writes.
    #[error("store corrupt: {0}")]
    Corrupt(String),
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
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub(super) fn open(path: &Path) -> Result<Database, StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let db = Database::create(path)?;
    let txn = db.begin_write()?;
    txn.open_table(WATERMARKS)?;
    txn.open_table(EVENTS)?;
    txn.open_table(alerts::ALERTS)?;
    txn.open_table(alerts::COMMANDS)?;
    txn.open_table(alerts::COMMANDS_DONE)?;
    txn.open_table(alerts::PATIENTS)?;
    txn.commit()?;
    Ok(db)
}

pub(super) fn next_event_seq(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read()?;
    let t = txn.open_table(EVENTS)?;
    Ok(t.last()?.map_or(1, |(k, _)| k.value() + 1))
}

pub(super) fn watermarks(
    db: &Database,
    edge: &EdgeId,
    stream: u64,
) -> Result<Vec<(Lane, u64)>, StoreError> {
    let txn = db.begin_read()?;
    let t = txn.open_table(WATERMARKS)?;
    let mut out = Vec::new();
    for lane in Lane::ALL {
        let w = t
            .get((edge.as_str(), stream, lane.index()))?
            .map_or(0, |v| v.value());
        out.push((lane, w));
    }
    Ok(out)
}

pub(super) fn events_after(
    db: &Database,
    after: u64,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let txn = db.begin_read()?;
    let t = txn.open_table(EVENTS)?;
    let mut out = Vec::new();
    for entry in t.range(after.saturating_add(1)..)?.take(limit) {
        let (k, v) = entry?;
        let (ward, json) = v.value();
        let ward = WardId::new(ward).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        out.push(Event {
            seq: k.value(),
            ward,
            json: Arc::from(json),
        });
    }
    Ok(out)
}

pub(super) enum WriteResult {
    Ingested(Ingested),
    Acknowledged(AckOutcome),
    Silenced(PatientOutcome),
    SettingsQueued(PatientOutcome),
    CommandsDone,
    /// The records did not continue the lane: nothing of this write was stored.
    Gap {
        expected: u64,
        got: u64,
    },
    Event(u64),
}

pub(super) struct GroupOutcome {
    pub(super) next_seq: u64,
    /// Whether a command for an edge was queued.
    pub(super) commands_added: bool,
    pub(super) results: Vec<WriteResult>,
    pub(super) events: Vec<Event>,
}

/// Commits every write of the group in one durable transaction.
pub(super) fn commit_group(
    db: &Database,
    mut next_seq: u64,
    group: &[Write],
) -> Result<GroupOutcome, StoreError> {
    let mut results = Vec::with_capacity(group.len());
    let mut events = Vec::new();
    let mut commands_added = false;
    let txn = db.begin_write()?;
    {
        let mut marks = txn.open_table(WATERMARKS)?;
        let mut log = txn.open_table(EVENTS)?;
        let mut alert_rows = txn.open_table(alerts::ALERTS)?;
        let mut commands = txn.open_table(alerts::COMMANDS)?;
        let mut done = txn.open_table(alerts::COMMANDS_DONE)?;
        let mut patients = txn.open_table(alerts::PATIENTS)?;
        let mut push =
            |ward: &WardId, event: ServerEvent, seq: &mut u64| -> Result<u64, StoreError> {
                let s = *seq;
                let json = event.to_json(s);
                log.insert(s, (ward.as_str(), json.as_str()))?;
                events.push(Event {
                    seq: s,
                    ward: ward.clone(),
                    json: Arc::from(json),
                });
                *seq += 1;
                Ok(s)
            };
        for w in group {
            match w {
                Write::Ingest {
                    edge,
                    stream,
                    ward,
                    lane,
                    records,
                    ..
                } => {
                    let key = (edge.as_str(), *stream, lane.index());
                    let mut mark = marks.get(key)?.map_or(0, |v| v.value());
                    let mut ingested = Ingested {
                        watermark: mark,
                        stored: 0,
                        duplicates: 0,
                        unreadable: 0,
                        evicted: 0,
                    };
                    let mut events = Vec::new();
                    let mut new_alarms = Vec::new();
                    let mut seen = Vec::new();
                    let mut gap = None;
                    for r in records {
                        if r.seq <= mark {
                            ingested.duplicates += 1;
                            continue;
                        }
                        if !r.continues(mark) {
                            gap = Some((mark + 1, r.seq));
                            break;
                        }
                        mark = r.seq;
                        match &r.body {
                            RecordBody::Vitals { reading, news2 } => {
                                ingested.stored += 1;
                                if seen.last() != Some(&&reading.patient) {
                                    seen.push(&reading.patient);
                                }
                                events.push(ServerEvent::vitals(ward, reading, *news2))
                            }
                            RecordBody::Alarm(alarm) => {
                                ingested.stored += 1;
                                new_alarms.push(alarm);
                                events.push(ServerEvent::alert(ward, alarm, None))
                            }
                            RecordBody::Unreadable { .. } => ingested.unreadable += 1,
                            RecordBody::Gap { evicted, .. } => ingested.evicted += evicted,
                        }
                    }
                    if let Some((expected, got)) = gap {
                        // Nothing of this write is stored.
                        results.push(WriteResult::Gap { expected, got });
                        continue;
                    }
                    for patient in seen {
                        alerts::seen(&mut patients, patient, ward, edge)?;
                    }
                    for alarm in new_alarms {
                        alerts::upsert(&mut alert_rows, edge, ward, alarm)?;
                    }
                    for event in events {
                        push(ward, event, &mut next_seq)?;
                    }
                    marks.insert(key, mark)?;
                    ingested.watermark = mark;
                    results.push(WriteResult::Ingested(ingested));
                }
                Write::Event { event, .. } => {
                    let seq = push(event.ward(), event.clone(), &mut next_seq)?;
                    results.push(WriteResult::Event(seq));
                }
                Write::Acknowledge { alert, by, ts, .. } => {
                    let (outcome, event) =
                        alerts::acknowledge(&mut alert_rows, &mut commands, alert, by, *ts)?;
                    if let Some((ward, event)) = event {
                        push(&ward, event, &mut next_seq)?;
                        commands_added = true;
                    }
                    results.push(WriteResult::Acknowledged(outcome));
                }
                Write::Silence {
                    patient,
                    ward,
                    from,
                    until,
                    by,
                    reason,
                    ..
                } => {
                    let (outcome, event) = alerts::silence(
                        &patients,
                        &mut commands,
                        (patient, ward),
                        (*from, *until),
                        by,
                        reason,
                    )?;
                    if let Some((ward, event)) = event {
                        push(&ward, event, &mut next_seq)?;
                        commands_added = true;
                    }
                    results.push(WriteResult::Silenced(outcome));
                }
                Write::PatientSettings {
                    patient,
                    ward,
                    settings,
                    by,
                    ..
                } => {
                    let outcome = alerts::patient_settings(
                        &patients,
                        &mut commands,
                        (patient, ward),
                        settings,
                        by,
                    )?;
                    commands_added |= outcome == PatientOutcome::Applied;
                    results.push(WriteResult::SettingsQueued(outcome));
                }
                Write::CommandsDone { edge, seq, .. } => {
                    alerts::commands_done(&mut done, edge, *seq)?;
                    results.push(WriteResult::CommandsDone);
                }
            }
        }
    }
    txn.commit()?;
    Ok(GroupOutcome {
        next_seq,
        commands_added,
        results,
        events,
    })
}
