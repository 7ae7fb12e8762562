//! The SMS outbox and the escalation chains' progress.
//!
//! A notification decision (SMS rows, chain progress, `escalated` events, audit entries) is one
//! transaction, so a restart neither forgets a due SMS nor queues it twice. Each SMS row keeps
//! its attempts; its id is the idempotency key the provider sees on every attempt.

use redb::{ReadableTable, Table, TableDefinition};
use serde::{Deserialize, Serialize};
use wardlink_shared::WardId;
use wardlink_shared::alarm::{AlarmEvent, AlertState};
use wardlink_shared::dashboard::ServerEvent;

use super::StoreError;
use super::alerts::{ALERTS, AlertRow};
use crate::notify::engine::Progress;

/// SMS by id (postcard [`SmsRow`]).
pub(super) const SMS: TableDefinition<u64, &[u8]> = TableDefinition::new("sms");
/// Ids of SMS not yet sent nor failed.
pub(super) const SMS_PENDING: TableDefinition<u64, ()> = TableDefinition::new("sms_pending");
/// Who an edge texted about which alarm while the hub was unreachable: (alarm id, phone) →
/// when (edge time). The hub does not text that phone about those alarms again.
pub(super) const EDGE_PAGED: TableDefinition<(&str, &str), i64> =
    TableDefinition::new("edge_paged");
/// Chain progress by alarm id (postcard [`Progress`]).
pub(super) const ESCALATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("escalations");

/// One SMS in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmsRow {
    /// Person id.
    pub person: String,
    /// Phone number.
    pub phone: String,
    /// Text.
    pub body: String,
    /// Alarm ids it is about.
    pub alerts: Vec<String>,
    /// Why it was sent.
    pub reason: String,
    /// Queued at (ms).
    pub queued_at: i64,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before (ms).
    pub next_attempt: i64,
    /// Where it stands.
    pub state: SmsState,
}

/// An SMS's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SmsState {
    /// Waiting for (another) attempt.
    Pending,
    /// The provider accepted it.
    Sent {
        /// The provider's message id.
        sid: String,
    },
    /// Given up.
    Failed {
        /// The last error.
        error: String,
    },
    /// Not sent: every alarm it was about was acknowledged or resolved before it went out.
    Cancelled,
    /// Not sent: the ward's edge had already texted this phone about every alarm it was about
    /// (while the hub was unreachable).
    PagedByEdge,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsOutcome {
    /// Accepted, with the provider's id.
    Sent(String),
    /// Failed; try again at the given time.
    Retry {
        /// Not before (ms).
        at: i64,
        /// What went wrong.
        error: String,
    },
    /// Failed for good.
    Failed(String),
    /// Not sent: its alarms are over.
    Cancelled,
}

/// One notification decision, stored atomically.
#[derive(Debug, Clone, Default)]
pub struct NotifyBatch {
    /// New SMS.
    pub sms: Vec<SmsRow>,
    /// Chain progress (None: over).
    pub progress: Vec<(String, Option<Progress>)>,
    /// Alarms to mark `escalated`.
    pub escalated: Vec<String>,
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Dashboard events to publish, with their wards.
pub(super) type WardEvents = Vec<(WardId, ServerEvent)>;

/// Stores a batch; returns the new SMS ids and the `escalated` events to publish.
pub(super) fn store_batch(
    (sms, pending): (&mut Table<u64, &[u8]>, &mut Table<u64, ()>),
    escalations: &mut Table<&str, &[u8]>,
    alerts: &mut Table<&str, &[u8]>,
    edge_paged: &Table<(&str, &str), i64>,
    batch: &NotifyBatch,
) -> Result<(Vec<u64>, WardEvents), StoreError> {
    let first = sms.last()?.map_or(1, |(k, _)| k.value() + 1);
    let mut ids = Vec::with_capacity(batch.sms.len());
    for (id, row) in (first..).zip(&batch.sms) {
        if paged_by_edge(edge_paged, row)? {
            // Kept (the notifications list shows it), never sent.
            let row = SmsRow {
                state: SmsState::PagedByEdge,
                ..row.clone()
            };
            sms.insert(id, encode(&row)?.as_slice())?;
            continue;
        }
        sms.insert(id, encode(row)?.as_slice())?;
        pending.insert(id, ())?;
        ids.push(id);
    }
    for (alert, progress) in &batch.progress {
        match progress {
            Some(p) => {
                escalations.insert(alert.as_str(), encode(p)?.as_slice())?;
            }
            None => {
                escalations.remove(alert.as_str())?;
            }
        }
    }
    let mut events = Vec::new();
    for alert in &batch.escalated {
        let row: AlertRow = match alerts.get(alert.as_str())? {
            Some(v) => super::alerts::row(v.value())?,
            None => continue,
        };
        // Acknowledged or resolved meanwhile: nothing to escalate.
        if row.event.state != AlertState::Raised {
            continue;
        }
        let event = AlarmEvent {
            state: AlertState::Escalated,
            update: false,
            ..row.event
        };
        let updated = AlertRow {
            event: event.clone(),
            ..row
        };
        alerts.insert(
            alert.as_str(),
            super::alerts::row_bytes(&updated)?.as_slice(),
        )?;
        events.push((
            updated.ward.clone(),
            ServerEvent::alert(&updated.ward, &event, None),
        ));
    }
    Ok((ids, events))
}

/// An edge's text covers the hub's texts to the same phone about the same alarms queued this
/// soon after it; later ones (the chain's later steps, reminders) go out.
const EDGE_PAGE_COVERS_MS: i64 = 15 * 60 * 1000;

/// Whether the ward's edge already texted `row`'s phone about every alarm of `row`, within
/// [`EDGE_PAGE_COVERS_MS`] before it was queued.
fn paged_by_edge(
    edge_paged: &impl ReadableTable<(&'static str, &'static str), i64>,
    row: &SmsRow,
) -> Result<bool, StoreError> {
    if row.alerts.is_empty() {
        return Ok(false);
    }
    for alert in &row.alerts {
        match edge_paged.get((alert.as_str(), row.phone.as_str()))? {
            Some(at) if row.queued_at - at.value() < EDGE_PAGE_COVERS_MS => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// [`paged_by_edge`] in a read transaction, for the sender's check before each attempt (an
/// edge's record may arrive after the hub queued its own text).
pub(super) fn read_paged_by_edge(db: &redb::Database, row: &SmsRow) -> Result<bool, StoreError> {
    use redb::ReadableDatabase as _;
    let txn = db.begin_read()?;
    let table = txn.open_table(EDGE_PAGED)?;
    paged_by_edge(&table, row)
}

/// Records an attempt's outcome; returns the row as it now is.
pub(super) fn record_outcome(
    sms: &mut Table<u64, &[u8]>,
    pending: &mut Table<u64, ()>,
    id: u64,
    outcome: &SmsOutcome,
) -> Result<Option<SmsRow>, StoreError> {
    let mut row: SmsRow = match sms.get(id)? {
        Some(v) => decode(v.value())?,
        None => return Ok(None),
    };
    if row.state != SmsState::Pending {
        return Ok(Some(row));
    }
    row.attempts += 1;
    match outcome {
        SmsOutcome::Sent(sid) => {
            row.state = SmsState::Sent { sid: sid.clone() };
            pending.remove(id)?;
        }
        SmsOutcome::Retry { at, .. } => row.next_attempt = *at,
        SmsOutcome::Failed(error) => {
            row.state = SmsState::Failed {
                error: error.clone(),
            };
            pending.remove(id)?;
        }
        SmsOutcome::Cancelled => {
            row.attempts -= 1;
            row.state = SmsState::Cancelled;
            pending.remove(id)?;
        }
    }
    sms.insert(id, encode(&row)?.as_slice())?;
    Ok(Some(row))
}

/// Pending SMS, oldest first.
pub(super) fn pending(db: &redb::Database) -> Result<Vec<(u64, SmsRow)>, StoreError> {
    use redb::ReadableDatabase;
    let txn = db.begin_read()?;
    let ids = txn.open_table(SMS_PENDING)?;
    let rows = txn.open_table(SMS)?;
    let mut out = Vec::new();
    for entry in ids.iter()? {
        let (id, _) = entry?;
        let id = id.value();
        if let Some(v) = rows.get(id)? {
            out.push((id, decode(v.value())?));
        }
    }
    Ok(out)
}

/// Open chains with their alarm's row.
pub(super) fn chains(db: &redb::Database) -> Result<Vec<(Progress, AlertRow)>, StoreError> {
    use redb::ReadableDatabase;
    let txn = db.begin_read()?;
    let chains = txn.open_table(ESCALATIONS)?;
    let alerts = txn.open_table(ALERTS)?;
    let mut out = Vec::new();
    for entry in chains.iter()? {
        let (id, v) = entry?;
        let progress: Progress = decode(v.value())?;
        if let Some(row) = alerts.get(id.value())? {
            out.push((progress, super::alerts::row(row.value())?));
        }
    }
    Ok(out)
}

/// Alarms still raised or escalated (acknowledged and resolved ones are over).
pub(super) fn active(db: &redb::Database) -> Result<Vec<AlertRow>, StoreError> {
    use redb::ReadableDatabase;
    let txn = db.begin_read()?;
    let alerts = txn.open_table(ALERTS)?;
    let mut out = Vec::new();
    for entry in alerts.iter()? {
        let (_, v) = entry?;
        let row = super::alerts::row(v.value())?;
        if matches!(row.event.state, AlertState::Raised | AlertState::Escalated) {
            out.push(row);
        }
    }
    Ok(out)
}

/// The newest `limit` SMS, newest first.
pub(super) fn recent(db: &redb::Database, limit: usize) -> Result<Vec<(u64, SmsRow)>, StoreError> {
    use redb::ReadableDatabase;
    let txn = db.begin_read()?;
    let rows = txn.open_table(SMS)?;
    let mut out = Vec::new();
    for entry in rows.iter()?.rev().take(limit) {
        let (id, v) = entry?;
        out.push((id.value(), decode(v.value())?));
    }
    Ok(out)
}
