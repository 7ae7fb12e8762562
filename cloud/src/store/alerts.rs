//! Alarm episodes as the hub knows them, and the commands queued for each edge.
//!
//! The edge raises and clears alarms; the hub owns acknowledgements. An acknowledgement
//! updates the episode, becomes a dashboard event and a command for the edge, all in one
//! transaction, so the hub's view and the edge's queue of things to apply never disagree.

use redb::{ReadableDatabase, ReadableTable, Table, TableDefinition};
use serde::{Deserialize, Serialize};
use wardlink_shared::alarm::{AlarmEvent, AlertState};
use wardlink_shared::dashboard::ServerEvent;
use wardlink_shared::wire::{AlarmV2, EdgeCommand};
use wardlink_shared::{EdgeId, PatientId, WardId};

use super::StoreError;

/// Episodes by id ([`ROW_FORMAT`] and postcard [`AlertRow`]; rows written before episodes
/// had versions are postcard [`AlertRowV2`]).
pub(super) const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts");
/// Commands by (edge, seq) (postcard [`EdgeCommand`]).
pub(super) const COMMANDS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("commands");
/// Where each patient was last seen: (ward, edge). Decides who may silence them and which
/// edge applies it.
pub(super) const PATIENTS: TableDefinition<&str, (&str, &str)> = TableDefinition::new("patients");
/// Highest command each edge has confirmed.
pub(super) const COMMANDS_DONE: TableDefinition<&str, u64> = TableDefinition::new("commands_done");

/// What the hub knows of one episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRow {
    /// The edge that raised it.
    pub edge: EdgeId,
    /// Its ward.
    pub ward: WardId,
    /// The latest event of the episode.
    pub event: AlarmEvent,
    /// Who acknowledged it, while it stays acknowledged.
    pub by: Option<String>,
}

/// The first byte of a row since episodes have versions. A row before starts with its edge
/// id's length, which is never 0.
const ROW_FORMAT: u8 = 0;

/// A row as hubs before episode versions wrote it.
#[derive(Deserialize)]
struct AlertRowV2 {
    edge: EdgeId,
    ward: WardId,
    event: AlarmV2,
    by: Option<String>,
}

fn decode_row(bytes: &[u8]) -> Result<AlertRow, StoreError> {
    match bytes.split_first() {
        Some((&ROW_FORMAT, rest)) => decode(rest),
        _ => {
            let old: AlertRowV2 = decode(bytes)?;
            let mut event = AlarmEvent::from(old.event);
            event.version = 1;
            Ok(AlertRow {
                edge: old.edge,
                ward: old.ward,
                event,
                by: old.by,
            })
        }
    }
}

fn encode_row(row: &AlertRow) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(row, vec![ROW_FORMAT]).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Decodes a stored episode.
pub(super) fn row(bytes: &[u8]) -> Result<AlertRow, StoreError> {
    decode_row(bytes)
}

/// Encodes an episode to store.
pub(super) fn row_bytes(row: &AlertRow) -> Result<Vec<u8>, StoreError> {
    encode_row(row)
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Acknowledged now.
    Acknowledged,
    /// The clinician saw an older version than the current one: nothing acknowledged, the
    /// episode stays news.
    Stale {
        /// The version now.
        current: u32,
    },
    /// Someone already had; nothing changed.
    AlreadyAcknowledged,
    /// The episode is over.
    Resolved,
    /// No such episode.
    Unknown,
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Records an event of an episode from its edge; returns the dashboard event to publish, if
/// any.
///
/// A worsening of an escalated episode stays `escalated` (the chain goes on; dashboards must
/// not see it fall back to `raised`). An update (values only) keeps the episode's state here
/// and who acknowledged it; one of an episode already closed here is dropped. An edge that
/// does not number versions (protocol 2) gets them numbered here: a rise in priority is a
/// worsening.
pub(super) fn upsert(
    table: &mut Table<&str, &[u8]>,
    edge: &EdgeId,
    ward: &WardId,
    event: &AlarmEvent,
) -> Result<Option<ServerEvent>, StoreError> {
    let mut event = event.clone();
    // The dashboards' event keeps the update's own time; the row keeps the time of the last
    // change of state (chains resumed after a restart count their steps from it).
    let mut row_ts = event.ts;
    let known = table
        .get(event.id.as_str())?
        .map(|v| decode_row(v.value()))
        .transpose()?;
    let mut by = None;
    if let Some(row) = &known {
        if event.version == 0 {
            let worse = event.state == AlertState::Raised && event.priority > row.event.priority;
            event.version = row.event.version + u32::from(worse);
        }
        if event.update {
            if row.event.state == AlertState::Resolved {
                return Ok(None);
            }
            event.state = row.event.state;
            by.clone_from(&row.by);
            row_ts = row.event.ts;
        } else if event.state == AlertState::Raised && row.event.state == AlertState::Escalated {
            event.state = AlertState::Escalated;
        }
    } else if event.version == 0 {
        event.version = 1;
    }
    let dashboard = ServerEvent::alert(ward, &event, by.clone());
    let row = AlertRow {
        edge: edge.clone(),
        ward: ward.clone(),
        event: AlarmEvent {
            ts: row_ts,
            update: false,
            ..event
        },
        // A new raise (a worsening) is not covered by an earlier acknowledgement.
        by,
    };
    table.insert(row.event.id.as_str(), encode_row(&row)?.as_slice())?;
    Ok(Some(dashboard))
}

/// Where a clinician's decision was taken.
pub(super) enum Origin<'a, 'c, 't> {
    /// At the hub: the command is queued for the episode's (or patient's) edge.
    Hub(&'c mut Table<'t, (&'static str, u64), &'static [u8]>),
    /// On this edge's ward view, applied there already: it may only concern the edge's own
    /// episodes and patients, and nothing goes back down.
    Edge(&'a EdgeId),
}

/// Acknowledges `alert` as of `version` (`None`: the current one) for `by` at `ts`; returns
/// the outcome and, when acknowledged now, the dashboard event to publish. An older version
/// than the current one acknowledges nothing. A decision taken at the hub queues the command
/// for the episode's edge, with the version, so that an edge whose episode worsened since
/// leaves it unacknowledged too.
pub(super) fn acknowledge(
    alerts: &mut Table<&str, &[u8]>,
    origin: Origin<'_, '_, '_>,
    (alert, version): (&str, Option<u32>),
    by: &str,
    ts: i64,
) -> Result<(AckOutcome, Option<(WardId, ServerEvent)>), StoreError> {
    let row: AlertRow = match alerts.get(alert)? {
        Some(v) => decode_row(v.value())?,
        None => return Ok((AckOutcome::Unknown, None)),
    };
    if matches!(origin, Origin::Edge(edge) if *edge != row.edge) {
        return Ok((AckOutcome::Unknown, None));
    }
    match row.event.state {
        AlertState::Resolved => return Ok((AckOutcome::Resolved, None)),
        AlertState::Acknowledged => return Ok((AckOutcome::AlreadyAcknowledged, None)),
        AlertState::Raised | AlertState::Escalated => {}
    }
    let current = row.event.version;
    if version.is_some_and(|v| v < current) {
        return Ok((AckOutcome::Stale { current }, None));
    }
    let event = AlarmEvent {
        state: AlertState::Acknowledged,
        ts,
        update: false,
        ..row.event
    };
    let updated = AlertRow {
        event: event.clone(),
        by: Some(by.to_owned()),
        ..row
    };
    alerts.insert(alert, encode_row(&updated)?.as_slice())?;
    if let Origin::Hub(commands) = origin {
        let command = EdgeCommand::AcknowledgeVersion {
            alert: alert.to_owned(),
            version: current,
            by: by.to_owned(),
            ts,
        };
        queue_command(commands, &updated.edge, &command)?;
    }
    let dashboard = ServerEvent::alert(&updated.ward, &event, Some(by.to_owned()));
    Ok((AckOutcome::Acknowledged, Some((updated.ward, dashboard))))
}

/// The edge that raised episode `alert`, if known.
pub(super) fn edge_of(
    alerts: &Table<&str, &[u8]>,
    alert: &str,
) -> Result<Option<EdgeId>, StoreError> {
    match alerts.get(alert)? {
        Some(v) => Ok(Some(decode_row(v.value())?.edge)),
        None => Ok(None),
    }
}

/// Resolves every episode of `edge` still open here but not in `open` (what the edge holds
/// open after a restart): returns the dashboard events. The edge will never resolve them.
pub(super) fn close_others(
    alerts: &mut Table<&str, &[u8]>,
    edge: &EdgeId,
    open: &[String],
    ts: i64,
) -> Result<Vec<(WardId, ServerEvent)>, StoreError> {
    let mut stale = Vec::new();
    for entry in alerts.iter()? {
        let (k, v) = entry?;
        let row = decode_row(v.value())?;
        if row.edge == *edge
            && row.event.state != AlertState::Resolved
            && !open.iter().any(|id| id == k.value())
        {
            stale.push(row);
        }
    }
    let mut events = Vec::new();
    for row in stale {
        let event = AlarmEvent {
            state: AlertState::Resolved,
            message: "closed: no longer open at the edge after its restart".into(),
            ts,
            update: false,
            ..row.event
        };
        let updated = AlertRow {
            event: event.clone(),
            by: None,
            ..row
        };
        alerts.insert(event.id.as_str(), encode_row(&updated)?.as_slice())?;
        events.push((
            updated.ward.clone(),
            ServerEvent::alert(&updated.ward, &event, None),
        ));
    }
    Ok(events)
}

/// Appends `command` to `edge`'s queue.
fn queue_command(
    commands: &mut Table<(&str, u64), &[u8]>,
    edge: &EdgeId,
    command: &EdgeCommand,
) -> Result<(), StoreError> {
    let edge = edge.as_str();
    let next = commands
        .range((edge, 0)..=(edge, u64::MAX))?
        .next_back()
        .transpose()?
        .map_or(1, |(k, _)| k.value().1 + 1);
    commands.insert((edge, next), encode(command)?.as_slice())?;
    Ok(())
}

/// Remembers where `patient` was seen (one write only when it moved).
pub(super) fn seen(
    patients: &mut Table<&str, (&str, &str)>,
    patient: &PatientId,
    ward: &WardId,
    edge: &EdgeId,
) -> Result<(), StoreError> {
    let known = patients
        .get(patient.as_str())?
        .is_some_and(|v| v.value() == (ward.as_str(), edge.as_str()));
    if !known {
        patients.insert(patient.as_str(), (ward.as_str(), edge.as_str()))?;
    }
    Ok(())
}

/// The ward `patient` was last seen in.
pub(super) fn patient_ward(
    db: &redb::Database,
    patient: &PatientId,
) -> Result<Option<WardId>, StoreError> {
    let txn = db.begin_read()?;
    let t = txn.open_table(PATIENTS)?;
    t.get(patient.as_str())?
        .map(|v| WardId::new(v.value().0).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

/// What a request about a patient did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatientOutcome {
    /// Stored and queued for the patient's edge.
    Applied,
    /// The hub has never seen this patient.
    UnknownPatient,
}

/// The edge of `patient`, if the patient was last seen in `ward` (the ward the caller was
/// authorised for, checked again here inside the write: a patient id seen meanwhile in
/// another ward is not touched).
fn whereabouts(
    patients: &Table<&str, (&str, &str)>,
    patient: &PatientId,
    ward: &WardId,
) -> Result<Option<EdgeId>, StoreError> {
    let Some(v) = patients.get(patient.as_str())? else {
        return Ok(None);
    };
    let (w, e) = v.value();
    if w != ward.as_str() {
        return Ok(None);
    }
    EdgeId::new(e)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Queues `patient`'s own settings for the patient's edge.
pub(super) fn patient_settings(
    patients: &Table<&str, (&str, &str)>,
    commands: &mut Table<(&str, u64), &[u8]>,
    (patient, ward): (&PatientId, &WardId),
    settings: &wardlink_shared::alarm::PatientSettings,
    by: &str,
) -> Result<PatientOutcome, StoreError> {
    let Some(edge) = whereabouts(patients, patient, ward)? else {
        return Ok(PatientOutcome::UnknownPatient);
    };
    let command = EdgeCommand::PatientSettings {
        patient: patient.clone(),
        settings: settings.clone(),
        by: by.to_owned(),
    };
    queue_command(commands, &edge, &command)?;
    Ok(PatientOutcome::Applied)
}

/// Silences `patient` from `from` to `until` (hub time, ms); returns the dashboard event to
/// publish and queues the command for the patient's edge.
pub(super) fn silence(
    patients: &Table<&str, (&str, &str)>,
    origin: Origin<'_, '_, '_>,
    (patient, ward): (&PatientId, &WardId),
    (from, until): (i64, i64),
    by: &str,
    reason: &str,
) -> Result<(PatientOutcome, Option<(WardId, ServerEvent)>), StoreError> {
    let Some(edge) = whereabouts(patients, patient, ward)? else {
        return Ok((PatientOutcome::UnknownPatient, None));
    };
    match origin {
        Origin::Edge(from_edge) if *from_edge != edge => {
            return Ok((PatientOutcome::UnknownPatient, None));
        }
        Origin::Edge(_) => {}
        Origin::Hub(commands) => {
            let command = EdgeCommand::Silence {
                patient: patient.clone(),
                from,
                until,
                by: by.to_owned(),
                reason: reason.to_owned(),
            };
            queue_command(commands, &edge, &command)?;
        }
    }
    let event = ServerEvent::Silence {
        patient: patient.clone(),
        ward: ward.clone(),
        until: wardlink_shared::time::format_rfc3339(until),
        by: by.to_owned(),
        reason: reason.to_owned(),
    };
    Ok((PatientOutcome::Applied, Some((ward.clone(), event))))
}

/// The episode `alert`, if known.
pub(super) fn read(db: &redb::Database, alert: &str) -> Result<Option<AlertRow>, StoreError> {
    let txn = db.begin_read()?;
    let t = txn.open_table(ALERTS)?;
    t.get(alert)?.map(|v| decode_row(v.value())).transpose()
}

/// Commands for `edge` after its confirmed position, in order.
pub(super) fn pending_commands(
    db: &redb::Database,
    edge: &EdgeId,
) -> Result<Vec<(u64, EdgeCommand)>, StoreError> {
    let txn = db.begin_read()?;
    let done = txn
        .open_table(COMMANDS_DONE)?
        .get(edge.as_str())?
        .map_or(0, |v| v.value());
    let t = txn.open_table(COMMANDS)?;
    let mut out = Vec::new();
    for entry in t.range((edge.as_str(), done + 1)..=(edge.as_str(), u64::MAX))? {
        let (k, v) = entry?;
        out.push((k.value().1, decode(v.value())?));
    }
    Ok(out)
}

/// The edge confirmed every command up to `seq`.
pub(super) fn commands_done(
    table: &mut Table<&str, u64>,
    edge: &EdgeId,
    seq: u64,
) -> Result<(), StoreError> {
    let done = table.get(edge.as_str())?.map_or(0, |v| v.value());
    if seq > done {
        table.insert(edge.as_str(), seq)?;
    }
    Ok(())
}
