//! The hub store's redb tables and transactions.

use std::path::Path;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use wardlink_shared::alarm::AlertState;
use wardlink_shared::dashboard::ServerEvent;
use wardlink_shared::wire::{Lane, RecordBody};
use wardlink_shared::{EdgeId, PatientId, WardId};

use super::alerts::{self, AckOutcome, Origin, PatientOutcome};
use super::notify::{self, SmsRow};
use super::{Ingested, Write, edge_records};
use crate::audit::{self, Pseudonymiser};
use crate::bus::Event;

/// Highest stored seq by (edge id, stream, lane index). Never deleted: the dedupe does not
/// expire. The lane's chain up to the watermark is stored (see `Record::continues`).
const WATERMARKS: TableDefinition<(&str, u64, u8), u64> = TableDefinition::new("watermarks");
/// Events by hub seq: (ward, JSON text).
const EVENTS: TableDefinition<u64, (&str, &str)> = TableDefinition::new("events");
/// History index: (key, event time, seq) for every reading and alarm event, where key is
/// `p:{patient}` or `w:{ward}`: a patient's or a ward's events in a time range, in one range
/// scan.
const HISTORY: TableDefinition<(&str, i64, u64), ()> = TableDefinition::new("history");
/// Readings stored, by (patient, device timestamp): a reading that reaches the hub twice under
/// different seqs is stored once. That happens when an edge forwarded a reading before its
/// commit, was killed, and the device (never acknowledged) sent it again. The edge recognises
/// re-sends of what it committed; this recognises those it forwarded and lost. The same rule
/// as the edge's: one reading per patient and timestamp.
const READINGS: TableDefinition<(&str, i64), ()> = TableDefinition::new("readings");
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
    // Patient data: the owner's only.
    if let Some(dir) = path.parent() {
        wardlink_io::fs::private_dir(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let db = Database::create(path)?;
    wardlink_io::fs::restrict(path, 0o600).map_err(|source| StoreError::Dir {
        path: path.display().to_string(),
        source,
    })?;
    let txn = db.begin_write()?;
    txn.open_table(WATERMARKS)?;
    txn.open_table(EVENTS)?;
    txn.open_table(AUDIT)?;
    txn.open_table(HISTORY)?;
    txn.open_table(READINGS)?;
    txn.open_table(alerts::ALERTS)?;
    txn.open_table(alerts::COMMANDS)?;
    txn.open_table(alerts::COMMANDS_DONE)?;
    txn.open_table(alerts::PATIENTS)?;
    txn.open_table(notify::SMS)?;
    txn.open_table(notify::SMS_PENDING)?;
    txn.open_table(notify::ESCALATIONS)?;
    txn.open_table(notify::EDGE_PAGED)?;
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
        // What an episode's values read now: shown, not a decision or a state change.
        ServerEvent::Alert { update: true, .. } => None,
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
            json: Utf8Bytes::from(json),
        });
    }
    Ok(out)
}

/// What [`history`] found.
pub struct History {
    /// The events (JSON text, `seq` included), in time order.
    pub events: Vec<Arc<str>>,
    /// The last event seq of the store when it was read: a session replaying after it misses
    /// nothing that came later.
    pub seq: u64,
    /// More than the limit matched; the newest were kept.
    pub truncated: bool,
}

/// The reading and alarm events of `key` (`p:{patient}` or `w:{ward}`) whose time lies in
/// `[from, to]`, at most `limit` (the newest), of wards `visible` accepts, applied in seq order.
/// A ward's answer also starts with its edges' latest presence and every alarm episode still
/// open in it (whatever its age): a dashboard painted from it shows every active alarm.
pub(super) fn history(
    db: &Database,
    key: &str,
    (from, to): (i64, i64),
    limit: usize,
    visible: &(dyn Fn(&str) -> bool + Send + Sync),
) -> Result<History, StoreError> {
    let txn = db.begin_read()?;
    let index = txn.open_table(HISTORY)?;
    let log = txn.open_table(EVENTS)?;
    let seq = log.last()?.map_or(0, |(k, _)| k.value());
    let mut seqs = Vec::new();
    let mut truncated = false;
    for entry in index.range((key, from, 0)..=(key, to, u64::MAX))?.rev() {
        let (k, _) = entry?;
        if seqs.len() == limit {
            truncated = true;
            break;
        }
        seqs.push(k.value().2);
    }
    // Times come from two clocks (edge and hub): they select, the seq orders.
    seqs.sort_unstable();
    let mut events = Vec::new();
    if let Some(ward) = key.strip_prefix("w:") {
        // The latest presence of each of the ward's edges (the newest few rows suffice).
        let edges_key = format!("e:{ward}");
        let mut seen = std::collections::HashSet::new();
        let mut presence = Vec::new();
        for entry in index
            .range((edges_key.as_str(), 0, 0)..=(edges_key.as_str(), 0, u64::MAX))?
            .rev()
            .take(64)
        {
            let s = entry?.0.value().2;
            if let Some(v) = log.get(s)? {
                let edge = serde_json::from_str::<serde_json::Value>(v.value().1)
                    .ok()
                    .and_then(|e| e["edge"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                if seen.insert(edge) {
                    presence.push(Arc::from(v.value().1));
                }
            }
        }
        presence.reverse();
        events.extend(presence);
    }
    for s in seqs {
        if let Some(v) = log.get(s)?
            && visible(v.value().0)
        {
            events.push(Arc::from(v.value().1));
        }
    }
    if let Some(ward) = key.strip_prefix("w:") {
        // Every episode still open in the ward, as its latest state (last, so that it wins
        // over older events of the same episode).
        let alerts = txn.open_table(alerts::ALERTS)?;
        for entry in alerts.iter()? {
            let (_, v) = entry?;
            let row = alerts::row(v.value())?;
            if row.ward.as_str() == ward && row.event.state != AlertState::Resolved {
                let event = ServerEvent::alert(&row.ward, &row.event, row.by.clone());
                events.push(Arc::from(event.to_json(0)));
            }
        }
    }
    Ok(History {
        events,
        seq,
        truncated,
    })
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
        let mut edge_paged = txn.open_table(notify::EDGE_PAGED)?;
        let mut history = txn.open_table(HISTORY)?;
        let mut readings = txn.open_table(READINGS)?;
        let mut push = |ward: &WardId,
                        event: ServerEvent,
                        seq: &mut u64,
                        (actor, audits): (&str, &mut Vec<audit::Entry>)|
         -> Result<u64, StoreError> {
            audits.extend(audit_of(&event, actor, audit.pseudonyms));
            let s = *seq;
            let json = event.to_json(s);
            log.insert(s, (ward.as_str(), json.as_str()))?;
            match &event {
                ServerEvent::Vitals { patient, ts, .. }
                | ServerEvent::Alert { patient, ts, .. } => {
                    let at = wardlink_shared::time::parse_rfc3339(ts).unwrap_or_default();
                    history.insert((format!("p:{patient}").as_str(), at, s), ())?;
                    history.insert((format!("w:{ward}").as_str(), at, s), ())?;
                }
                // The latest presence of a ward's edges, for a dashboard's first paint.
                ServerEvent::Edge { .. } => {
                    history.insert((format!("e:{ward}").as_str(), 0, s), ())?;
                }
                ServerEvent::Silence { .. } => {}
            }
            events.push(Event {
                seq: s,
                ward: ward.clone(),
                json: Utf8Bytes::from(json),
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
                    // In seq order: an acknowledgement after a worsening, or the episodes an
                    // edge holds open after a raise, apply to what came before them.
                    let mut steps: Vec<&RecordBody> = Vec::new();
                    let mut seen = Vec::new();
                    // Readings of this write, entered in READINGS only once the write is
                    // known to be stored (a gap refuses all of it).
                    let mut keys = std::collections::HashSet::new();
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
                            RecordBody::Vitals { reading, .. } => {
                                let key = (reading.patient.as_str(), reading.ts);
                                if readings.get(key)?.is_some() || !keys.insert(key) {
                                    ingested.duplicates += 1;
                                    continue;
                                }
                                ingested.stored += 1;
                                if seen.last() != Some(&&reading.patient) {
                                    seen.push(&reading.patient);
                                }
                                steps.push(&r.body);
                            }
                            RecordBody::Unreadable { .. } => ingested.unreadable += 1,
                            RecordBody::Gap { evicted, .. } => ingested.evicted += evicted,
                            _ => {
                                ingested.stored += 1;
                                steps.push(&r.body);
                            }
                        }
                    }
                    if let Some((expected, got)) = gap {
                        // Nothing of this write is stored.
                        results.push(WriteResult::Gap { expected, got });
                        continue;
                    }
                    for key in keys {
                        readings.insert(key, ())?;
                    }
                    for patient in seen {
                        alerts::seen(&mut patients, patient, ward, edge)?;
                    }
                    let actor = format!("edge:{edge}");
                    for body in steps {
                        match body {
                            RecordBody::Vitals { reading, news2 } => {
                                let event = ServerEvent::vitals(ward, reading, *news2);
                                push(ward, event, &mut next_seq, (&actor, &mut audits))?;
                            }
                            RecordBody::Alarm(_) | RecordBody::Episode(_) => {
                                let alarm = match body {
                                    RecordBody::Alarm(old) => {
                                        wardlink_shared::alarm::AlarmEvent::from(old.clone())
                                    }
                                    RecordBody::Episode(e) => e.clone(),
                                    _ => continue,
                                };
                                if let Some(event) =
                                    alerts::upsert(&mut alert_rows, edge, ward, &alarm)?
                                {
                                    push(ward, event, &mut next_seq, (&actor, &mut audits))?;
                                }
                            }
                            other => {
                                let mut t = edge_records::Tables {
                                    alerts: &mut alert_rows,
                                    patients: &patients,
                                    edge_paged: &mut edge_paged,
                                };
                                let events = edge_records::apply(
                                    &mut t,
                                    (edge, ward),
                                    other,
                                    (&mut audits, audit.pseudonyms),
                                )?;
                                for (w, event, by) in events {
                                    push(&w, event, &mut next_seq, (&by, &mut audits))?;
                                }
                            }
                        }
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
                Write::Acknowledge {
                    alert,
                    version,
                    by,
                    ts,
                    ..
                } => {
                    let (outcome, event) = alerts::acknowledge(
                        &mut alert_rows,
                        Origin::Hub(&mut commands),
                        (alert, *version),
                        by,
                        *ts,
                    )?;
                    if let AckOutcome::Stale { current } = outcome {
                        audits.push(audit::Entry {
                            seq: 0,
                            ts: String::new(),
                            actor: by.clone(),
                            action: "ack_stale".into(),
                            ward: None,
                            patient: None,
                            subject: Some(alert.clone()),
                            detail: Some(format!(
                                "acknowledged version {}, current {current}; not acknowledged",
                                version.unwrap_or(0)
                            )),
                            prev: String::new(),
                            hash: String::new(),
                        });
                    }
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
                        Origin::Hub(&mut commands),
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
                        (&mut sms, &mut sms_pending),
                        &mut escalations,
                        &mut alert_rows,
                        &edge_paged,
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
