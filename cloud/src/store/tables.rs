//! The hub store's redb tables and transactions.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use wardlink_shared::alarm::AlertState;
use wardlink_shared::dashboard::ServerEvent;
use wardlink_shared::wire::{Lane, RecordBody};
use wardlink_shared::{EdgeId, PatientId, WardId};

use super::alerts::{self, AckOutcome, PatientOutcome};
use super::notify::{self, SmsRow};
use super::{Ingested, Write};
use crate::audit::{self, Pseudonymiser};
use crate::bus::Event;

/// Highest stored seq by (edge id, stream, lane index). Never deleted: the dedupe does not
/// expire. The lane's chain up to the watermark is stored (see `Record::continues`).
const WATERMARKS: TableDefinition<(&str, u64, u8), u64> = TableDefinition::new("watermarks");
/// Events by hub seq: (ward, JSON text).
const EVENTS: TableDefinition<u64, (&str, &str)> = TableDefinition::new("events");
/// The audit log by audit seq: one sealed entry's JSON (see `crate::audit`).
const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");

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
    txn.open_table(AUDIT)?;
    txn.open_table(alerts::ALERTS)?;
    txn.open_table(alerts::COMMANDS)?;
    txn.open_table(alerts::COMMANDS_DONE)?;
    txn.open_table(alerts::PATIENTS)?;
    txn.open_table(notify::SMS)?;
    txn.open_table(notify::SMS_PENDING)?;
    txn.open_table(notify::ESCALATIONS)?;
    txn.commit()?;
    Ok(db)
}

pub(super) fn next_event_seq(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read()?;
    let t = txn.open_table(EVENTS)?;
    Ok(t.last()?.map_or(1, |(k, _)| k.value() + 1))
}

/// The last audit entry's seq and hash.
pub(super) fn audit_head(db: &Database) -> Result<Option<(u64, String)>, StoreError> {
    let txn = db.begin_read()?;
    let t = txn.open_table(AUDIT)?;
    let Some((_, v)) = t.last()? else {
        return Ok(None);
    };
    let entry: audit::Entry =
        serde_json::from_str(v.value()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Some((entry.seq, entry.hash)))
}

/// The audit entries (JSON lines) whose time lies in `[from, to]` (ms since the epoch).
pub(super) fn audit_between(db: &Database, from: i64, to: i64) -> Result<Vec<String>, StoreError> {
    let txn = db.begin_read()?;
    let t = txn.open_table(AUDIT)?;
    let mut out = Vec::new();
    for entry in t.iter()? {
        let (_, v) = entry?;
        let line = v.value();
        let e: audit::Entry =
            serde_json::from_str(line).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let ts = wardlink_shared::time::parse_rfc3339(&e.ts).unwrap_or(0);
        if (from..=to).contains(&ts) {
            out.push(line.to_owned());
        }
    }
    Ok(out)
}

/// The audit entry an event stands for, if it is one auditors follow: alarm state changes and
/// silences (edge presence and vitals are not).
fn audit_of(event: &ServerEvent, actor: &str, pseudonyms: &Pseudonymiser) -> Option<audit::Entry> {
    let entry =
        |action: String, ward: &WardId, patient: &PatientId, subject, detail| audit::Entry {
            seq: 0,
            ts: String::new(),
            actor: actor.to_owned(),
            action,
            ward: Some(ward.to_string()),
            patient: Some(pseudonyms.pseudonym(patient.as_str())),
            subject,
            detail,
            prev: String::new(),
            hash: String::new(),
        };
    match event {
        ServerEvent::Alert {
            id,
            patient,
            ward,
            priority,
            state,
            kind,
            ..
        } => {
            let label = |v: serde_json::Result<serde_json::Value>| {
                v.ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            };
            Some(entry(
                format!("alarm_{}", label(serde_json::to_value(state))),
                ward,
                patient,
                Some(id.clone()),
                Some(format!("{kind} {}", label(serde_json::to_value(priority)))),
            ))
        }
        ServerEvent::Silence {
            patient,
            ward,
            until,
            reason,
            ..
        } => Some(entry(
            "silence".into(),
            ward,
            patient,
            None,
            Some(format!("until {until}: {reason}")),
        )),
        ServerEvent::Vitals { .. } | ServerEvent::Edge { .. } => None,
    }
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
    Audited,
    /// The records did not continue the lane: nothing of this write was stored.
    Gap {
        expected: u64,
        got: u64,
    },
    Event(u64),
    Notified(Vec<u64>),
    SmsRecorded(Option<SmsRow>),
}

pub(super) struct GroupOutcome {
    pub(super) next_seq: u64,
    /// The audit log's new last (seq, hash).
    pub(super) audit_head: Option<(u64, String)>,
    /// Whether a command for an edge was queued.
    pub(super) commands_added: bool,
    pub(super) results: Vec<WriteResult>,
    pub(super) events: Vec<Event>,
}

/// The audit log's state, kept by the writer.
pub(super) struct AuditState<'a> {
    /// The last entry's (seq, hash).
    pub(super) head: Option<(u64, String)>,
    /// Patient pseudonyms.
    pub(super) pseudonyms: &'a Pseudonymiser,
    /// Hub time of this group, RFC 3339.
    pub(super) now: String,
}

/// Commits every write of the group, and their audit entries, in one durable transaction.
pub(super) fn commit_group(
    db: &Database,
    mut next_seq: u64,
    group: &[Write],
    audit: &AuditState<'_>,
) -> Result<GroupOutcome, StoreError> {
    let mut results = Vec::with_capacity(group.len());
    let mut events = Vec::new();
    let mut audits: Vec<audit::Entry> = Vec::new();
    let mut head = audit.head.clone();
    let mut commands_added = false;
    let txn = db.begin_write()?;
    {
        let mut marks = txn.open_table(WATERMARKS)?;
        let mut log = txn.open_table(EVENTS)?;
        let mut alert_rows = txn.open_table(alerts::ALERTS)?;
        let mut commands = txn.open_table(alerts::COMMANDS)?;
        let mut done = txn.open_table(alerts::COMMANDS_DONE)?;
        let mut patients = txn.open_table(alerts::PATIENTS)?;
        let mut audit_log = txn.open_table(AUDIT)?;
        let mut sms = txn.open_table(notify::SMS)?;
        let mut sms_pending = txn.open_table(notify::SMS_PENDING)?;
        let mut escalations = txn.open_table(notify::ESCALATIONS)?;
        let mut push = |ward: &WardId,
                        event: ServerEvent,
                        seq: &mut u64,
                        (actor, audits): (&str, &mut Vec<audit::Entry>)|
         -> Result<u64, StoreError> {
            audits.extend(audit_of(&event, actor, audit.pseudonyms));
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
                    let mut escalated = Vec::new();
                    for alarm in new_alarms {
                        if alerts::upsert(&mut alert_rows, edge, ward, alarm)? {
                            escalated.push(alarm.id.as_str());
                        }
                    }
                    for event in &mut events {
                        if let ServerEvent::Alert { id, state, .. } = event
                            && escalated.contains(&id.as_str())
                        {
                            *state = AlertState::Escalated;
                        }
                    }
                    for event in events {
                        push(
                            ward,
                            event,
                            &mut next_seq,
                            (&format!("edge:{edge}"), &mut audits),
                        )?;
                    }
                    marks.insert(key, mark)?;
                    ingested.watermark = mark;
                    results.push(WriteResult::Ingested(ingested));
                }
                Write::Event { event, .. } => {
                    let seq = push(
                        event.ward(),
                        event.clone(),
                        &mut next_seq,
                        ("hub", &mut audits),
                    )?;
                    results.push(WriteResult::Event(seq));
                }
                Write::Acknowledge { alert, by, ts, .. } => {
                    let (outcome, event) =
                        alerts::acknowledge(&mut alert_rows, &mut commands, alert, by, *ts)?;
                    if let Some((ward, event)) = event {
                        push(&ward, event, &mut next_seq, (by, &mut audits))?;
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
                        push(&ward, event, &mut next_seq, (by, &mut audits))?;
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
                    if outcome == PatientOutcome::Applied {
                        audits.push(audit::Entry {
                            seq: 0,
                            ts: String::new(),
                            actor: by.clone(),
                            action: "settings".into(),
                            ward: Some(ward.to_string()),
                            patient: Some(audit.pseudonyms.pseudonym(patient.as_str())),
                            subject: None,
                            detail: serde_json::to_string(settings).ok(),
                            prev: String::new(),
                            hash: String::new(),
                        });
                    }
                    results.push(WriteResult::SettingsQueued(outcome));
                }
                Write::CommandsDone { edge, seq, .. } => {
                    alerts::commands_done(&mut done, edge, *seq)?;
                    results.push(WriteResult::CommandsDone);
                }
                Write::Audit { entry, .. } => {
                    audits.push(entry.clone());
                    results.push(WriteResult::Audited);
                }
                Write::Notify {
                    batch,
                    audits: entries,
                    ..
                } => {
                    let (ids, escalated) = notify::store_batch(
                        &mut sms,
                        &mut sms_pending,
                        &mut escalations,
                        &mut alert_rows,
                        batch,
                    )?;
                    for (ward, event) in escalated {
                        push(&ward, event, &mut next_seq, ("notifier", &mut audits))?;
                    }
                    for (id, mut entry) in ids
                        .iter()
                        .zip(entries.iter().filter(|e| e.action == "sms_queued").cloned())
                    {
                        entry.subject = Some(format!("sms-{id}"));
                        audits.push(entry);
                    }
                    audits.extend(entries.iter().filter(|e| e.action != "sms_queued").cloned());
                    results.push(WriteResult::Notified(ids));
                }
                Write::SmsOutcome {
                    id,
                    outcome,
                    audit: entry,
                    ..
                } => {
                    let row = notify::record_outcome(&mut sms, &mut sms_pending, *id, outcome)?;
                    audits.push(entry.clone());
                    results.push(WriteResult::SmsRecorded(row));
                }
            }
        }
        for mut entry in audits {
            entry.ts.clone_from(&audit.now);
            let entry = entry.seal(head.as_ref().map(|(s, h)| (*s, h.as_str())));
            let line =
                serde_json::to_string(&entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            audit_log.insert(entry.seq, line.as_str())?;
            head = Some((entry.seq, entry.hash));
        }
    }
    txn.commit()?;
    Ok(GroupOutcome {
        audit_head: head,
        next_seq,
        commands_added,
        results,
        events,
    })
}
