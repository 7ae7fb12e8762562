//! The hub store: every record from every edge, stored exactly once, and the event log that
//! dashboards replay.
//!
//! One thread owns writes. Records arrive per (edge, lane) in seq order; a record whose seq is
//! at or below the lane's watermark is a redelivery and is ignored. Records and the new
//! watermark commit in one transaction, so the watermark never claims more than is stored and
//! the dedupe never expires. Each stored record becomes an event with the next hub seq, in the
//! same transaction; after the commit the events go to the bus, in seq order.
//!
//! Reads (replay) run on any thread in their own read transaction.

mod alerts;
mod edge_records;
mod notify;
mod tables;

use std::path::Path;
use std::sync::Arc;

use redb::Database;
use tokio::sync::{mpsc, oneshot, watch};
use wardlink_shared::alarm::PatientSettings;
use wardlink_shared::dashboard::ServerEvent;
use wardlink_shared::wire::EdgeCommand;
use wardlink_shared::wire::{Lane, Record};
use wardlink_shared::{EdgeId, PatientId, WardId};

use crate::audit::Pseudonymiser;
use crate::bus::{Bus, Event};
use crate::metrics::HubMetrics;
pub use alerts::{AckOutcome, AlertRow, PatientOutcome};
pub use notify::{NotifyBatch, SmsOutcome, SmsRow, SmsState};
pub use tables::{History, StoreError};

/// Write commands queued to the store thread. When full, ingress waits, which stops reading
/// the edge's stream: QUIC flow control then slows the edge. Nothing is dropped.
const WRITE_QUEUE: usize = 1024;
/// Most commands merged into one transaction.
const MAX_GROUP: usize = 256;
/// Most edge records merged into one transaction, so an alarm queued behind a backlog waits
/// for at most one modest commit.
const MAX_GROUP_RECORDS: usize = 4096;

/// What an ingest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// The lane's watermark after the commit: everything up to it is stored.
    pub watermark: u64,
    /// Readings and alarm events newly stored (gap records are not counted).
    pub stored: u64,
    /// Records that were already stored.
    pub duplicates: u64,
    /// Records the edge could not read back from its outbox (counted, no event).
    pub unreadable: u64,
    /// Records the edge evicted for its disk budget, as its gap records report them.
    pub evicted: u64,
}

enum Write {
    Ingest {
        edge: EdgeId,
        stream: u64,
        ward: WardId,
        lane: Lane,
        records: Vec<Record>,
        reply: oneshot::Sender<Result<Ingested, StoreError>>,
    },
    Event {
        event: ServerEvent,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Acknowledge {
        alert: String,
        version: Option<u32>,
        by: String,
        ts: i64,
        reply: oneshot::Sender<Result<AckOutcome, StoreError>>,
    },
    CommandsDone {
        edge: EdgeId,
        seq: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    PatientSettings {
        patient: PatientId,
        ward: WardId,
        settings: PatientSettings,
        by: String,
        reply: oneshot::Sender<Result<PatientOutcome, StoreError>>,
    },
    Silence {
        patient: PatientId,
        ward: WardId,
        from: i64,
        until: i64,
        by: String,
        reason: String,
        reply: oneshot::Sender<Result<PatientOutcome, StoreError>>,
    },
    /// A notification decision with its audit entries.
    Notify {
        batch: NotifyBatch,
        audits: Vec<crate::audit::Entry>,
        reply: oneshot::Sender<Result<Vec<u64>, StoreError>>,
    },
    /// An SMS attempt's outcome with its audit entry.
    SmsOutcome {
        id: u64,
        outcome: SmsOutcome,
        audit: crate::audit::Entry,
        reply: oneshot::Sender<Result<Option<SmsRow>, StoreError>>,
    },
    /// An audit entry for something that changes no other table (a dashboard session).
    Audit {
        entry: crate::audit::Entry,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

impl Write {
    /// Alarm records and clinicians' acknowledgements and silences overtake telemetry.
    fn is_urgent(&self) -> bool {
        match self {
            Write::Ingest { lane, .. } => *lane == Lane::Alarms,
            Write::Acknowledge { .. } | Write::Silence { .. } | Write::Notify { .. } => true,
            _ => false,
        }
    }

    /// Edge records this write carries.
    fn records(&self) -> usize {
        match self {
            Write::Ingest { records, .. } => records.len(),
            _ => 1,
        }
    }

    /// Answers the requester that the transaction this write was part of failed.
    fn fail(self, msg: &str) {
        let failed = || StoreError::Failed(msg.to_owned());
        // A requester that stopped waiting is no loss: nothing was stored for it.
        match self {
            Write::Ingest { reply, .. } => drop(reply.send(Err(failed()))),
            Write::Event { reply, .. } => drop(reply.send(Err(failed()))),
            Write::Acknowledge { reply, .. } => drop(reply.send(Err(failed()))),
            Write::CommandsDone { reply, .. } => drop(reply.send(Err(failed()))),
            Write::Silence { reply, .. } => drop(reply.send(Err(failed()))),
            Write::PatientSettings { reply, .. } => drop(reply.send(Err(failed()))),
            Write::Audit { reply, .. } => drop(reply.send(Err(failed()))),
            Write::Notify { reply, .. } => drop(reply.send(Err(failed()))),
            Write::SmsOutcome { reply, .. } => drop(reply.send(Err(failed()))),
        }
    }
}

/// The store is closed (the hub is stopping).
#[derive(Debug, thiserror::Error)]
#[error("store is closed")]
pub struct Closed;

/// A handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    tx: mpsc::Sender<Write>,
    /// Writes that go before everything queued on `tx`: alarm records and clinicians'
    /// decisions.
    urgent: mpsc::Sender<Write>,
    commands: watch::Receiver<u64>,
}

impl Store {
    /// Opens (or creates) the store and starts its writer thread, which publishes to `bus`.
    pub fn open(
        path: &Path,
        bus: Bus,
        metrics: Arc<HubMetrics>,
        pseudonyms: Arc<Pseudonymiser>,
    ) -> Result<(Store, std::thread::JoinHandle<()>), StoreError> {
        let db = Arc::new(tables::open(path)?);
        let next_seq = tables::next_event_seq(&db)?;
        let audit_head = tables::audit_head(&db)?;
        bus.set_latest(next_seq - 1);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (urgent, urgent_rx) = mpsc::channel(WRITE_QUEUE);
        let (commands_tx, commands) = watch::channel(0u64);
        let writer_db = db.clone();
        let queues = Queues {
            urgent: urgent_rx,
            normal: rx,
        };
        let audit = (audit_head, pseudonyms);
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                writer(
                    writer_db,
                    next_seq,
                    audit,
                    queues,
                    bus,
                    commands_tx,
                    metrics,
                )
            })
            .map_err(StoreError::Thread)?;
        Ok((
            Store {
                db,
                tx,
                urgent,
                commands,
            },
            thread,
        ))
    }

    /// Queues a write for the writer thread and waits for its outcome.
    async fn request<T>(
        &self,
        write: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Write,
    ) -> Result<Result<T, StoreError>, Closed> {
        let (reply, rx) = oneshot::channel();
        let write = write(reply);
        let queue = if write.is_urgent() {
            &self.urgent
        } else {
            &self.tx
        };
        queue.send(write).await.map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// Stores `records` of `edge`'s `stream` and `lane` exactly once; returns the new
    /// watermark.
    pub async fn ingest(
        &self,
        edge: EdgeId,
        stream: u64,
        ward: WardId,
        lane: Lane,
        records: Vec<Record>,
    ) -> Result<Result<Ingested, StoreError>, Closed> {
        self.request(|reply| Write::Ingest {
            edge,
            stream,
            ward,
            lane,
            records,
            reply,
        })
        .await
    }

    /// Stores an event that is not an edge record (e.g. an edge going offline); returns its seq.
    pub async fn append_event(
        &self,
        event: ServerEvent,
    ) -> Result<Result<u64, StoreError>, Closed> {
        self.request(|reply| Write::Event { event, reply }).await
    }

    /// The stored watermark of each lane of `edge`'s `stream`.
    pub async fn watermarks(
        &self,
        edge: EdgeId,
        stream: u64,
    ) -> Result<Vec<(Lane, u64)>, StoreError> {
        let db = self.db.clone();
        blocking(move || tables::watermarks(&db, &edge, stream)).await
    }

    /// Acknowledges episode `alert` as of `version` (`None`: the current one) for `by` at
    /// `ts` (hub time): publishes the event and queues the command for the edge, in one
    /// transaction. An older version is audited and acknowledges nothing.
    pub async fn acknowledge(
        &self,
        (alert, version): (String, Option<u32>),
        by: String,
        ts: i64,
    ) -> Result<Result<AckOutcome, StoreError>, Closed> {
        self.request(|reply| Write::Acknowledge {
            alert,
            version,
            by,
            ts,
            reply,
        })
        .await
    }

    /// Silences `patient` from `from` to `until` (ms since the epoch) for `by`, with `reason`.
    /// `ward` is the ward the caller was authorised for; a patient seen elsewhere since is
    /// reported unknown, never touched.
    pub async fn silence(
        &self,
        (patient, ward): (PatientId, WardId),
        (from, until): (i64, i64),
        by: String,
        reason: String,
    ) -> Result<Result<PatientOutcome, StoreError>, Closed> {
        self.request(|reply| Write::Silence {
            patient,
            ward,
            from,
            until,
            by,
            reason,
            reply,
        })
        .await
    }

    /// Queues `patient`'s own settings, set by `by`, for the patient's edge.
    /// `ward` as for [`Store::silence`].
    pub async fn patient_settings(
        &self,
        (patient, ward): (PatientId, WardId),
        settings: PatientSettings,
        by: String,
    ) -> Result<Result<PatientOutcome, StoreError>, Closed> {
        self.request(|reply| Write::PatientSettings {
            patient,
            ward,
            settings,
            by,
            reply,
        })
        .await
    }

    /// Appends an audit entry (its seq, time and hashes are set when it is stored).
    pub async fn audit(
        &self,
        entry: crate::audit::Entry,
    ) -> Result<Result<(), StoreError>, Closed> {
        self.request(|reply| Write::Audit { entry, reply }).await
    }

    /// Stores a notification decision (SMS, chain progress, `escalated` events) and its audit
    /// entries in one transaction; returns the new SMS ids.
    pub async fn notify(
        &self,
        batch: NotifyBatch,
        audits: Vec<crate::audit::Entry>,
    ) -> Result<Result<Vec<u64>, StoreError>, Closed> {
        let (reply, rx) = oneshot::channel();
        self.urgent
            .send(Write::Notify {
                batch,
                audits,
                reply,
            })
            .await
            .map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// Records an SMS attempt's outcome and its audit entry.
    pub async fn sms_outcome(
        &self,
        id: u64,
        outcome: SmsOutcome,
        audit: crate::audit::Entry,
    ) -> Result<Result<Option<SmsRow>, StoreError>, Closed> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Write::SmsOutcome {
                id,
                outcome,
                audit,
                reply,
            })
            .await
            .map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// SMS waiting for an attempt.
    pub async fn sms_pending(&self) -> Result<Vec<(u64, SmsRow)>, StoreError> {
        let db = self.db.clone();
        blocking(move || notify::pending(&db)).await
    }

    /// The newest `limit` SMS in the outbox, newest first.
    pub async fn sms_recent(&self, limit: usize) -> Result<Vec<(u64, SmsRow)>, StoreError> {
        let db = self.db.clone();
        blocking(move || notify::recent(&db, limit)).await
    }

    /// Alarms still raised or escalated.
    pub async fn active_alerts(&self) -> Result<Vec<AlertRow>, StoreError> {
        let db = self.db.clone();
        blocking(move || notify::active(&db)).await
    }

    /// Open escalation chains with their alarms.
    pub async fn chains(
        &self,
    ) -> Result<Vec<(crate::notify::engine::Progress, AlertRow)>, StoreError> {
        let db = self.db.clone();
        blocking(move || notify::chains(&db)).await
    }

    /// The last audit entry's seq and hash, if any.
    pub async fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        let db = self.db.clone();
        blocking(move || tables::audit_head(&db)).await
    }

    /// The audit entries (JSON lines) whose time lies in `[from, to]` (ms since the epoch).
    pub async fn audit_between(&self, from: i64, to: i64) -> Result<Vec<String>, StoreError> {
        let db = self.db.clone();
        blocking(move || tables::audit_between(&db, from, to)).await
    }

    /// The ward `patient` was last seen in.
    pub async fn patient_ward(&self, patient: PatientId) -> Result<Option<WardId>, StoreError> {
        let db = self.db.clone();
        blocking(move || alerts::patient_ward(&db, &patient)).await
    }

    /// `edge` applied every command up to `seq`.
    pub async fn commands_done(
        &self,
        edge: EdgeId,
        seq: u64,
    ) -> Result<Result<(), StoreError>, Closed> {
        self.request(|reply| Write::CommandsDone { edge, seq, reply })
            .await
    }

    /// The episode `alert`, if the hub knows it.
    pub async fn alert(&self, alert: String) -> Result<Option<AlertRow>, StoreError> {
        let db = self.db.clone();
        blocking(move || alerts::read(&db, &alert)).await
    }

    /// Whether the ward's edge texted `row`'s phone about every alarm of `row`, recently
    /// enough that this text would repeat it (see `notify::paged_by_edge`).
    pub async fn paged_by_edge(&self, row: SmsRow) -> Result<bool, StoreError> {
        let db = self.db.clone();
        blocking(move || notify::read_paged_by_edge(&db, &row)).await
    }

    /// Commands `edge` has not confirmed, in order.
    pub async fn pending_commands(
        &self,
        edge: EdgeId,
    ) -> Result<Vec<(u64, EdgeCommand)>, StoreError> {
        let db = self.db.clone();
        blocking(move || alerts::pending_commands(&db, &edge)).await
    }

    /// Changes whenever a command is queued for any edge.
    pub fn commands_changed(&self) -> watch::Receiver<u64> {
        self.commands.clone()
    }

    /// A patient's reading and alarm events in `[from, to]` (ms), at most `limit`, newest kept.
    /// Only events of wards `visible` accepts are returned (a patient may have moved).
    pub async fn patient_history(
        &self,
        patient: &PatientId,
        range: (i64, i64),
        limit: usize,
        visible: Box<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> Result<History, StoreError> {
        let db = self.db.clone();
        let key = format!("p:{patient}");
        blocking(move || tables::history(&db, &key, range, limit, visible.as_ref())).await
    }

    /// A ward's reading and alarm events in `[from, to]` (ms), at most `limit`, newest kept,
    /// after its edges' presence and its open alarm episodes.
    pub async fn ward_history(
        &self,
        ward: &WardId,
        range: (i64, i64),
        limit: usize,
    ) -> Result<History, StoreError> {
        let db = self.db.clone();
        let key = format!("w:{ward}");
        blocking(move || tables::history(&db, &key, range, limit, &|_| true)).await
    }

    /// Up to `limit` events with seq > `after`, in order.
    pub async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let db = self.db.clone();
        blocking(move || tables::events_after(&db, after, limit)).await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Thread(std::io::Error::other(e)))?
}

/// The writer's two queues.
struct Queues {
    urgent: mpsc::Receiver<Write>,
    normal: mpsc::Receiver<Write>,
}

impl Queues {
    /// The next write, urgent ones first; `None` once both queues are closed and empty.
    fn next(&mut self, rt: &tokio::runtime::Runtime) -> Option<Write> {
        if let Ok(w) = self.urgent.try_recv() {
            return Some(w);
        }
        rt.block_on(async {
            tokio::select! {
                biased;
                Some(w) = self.urgent.recv() => Some(w),
                Some(w) = self.normal.recv() => Some(w),
                else => None,
            }
        })
    }

    /// The next group: everything urgent that is queued; then, unless the group already holds
    /// urgent writes, telemetry up to the group's bounds.
    fn group(&mut self, first: Write, group: &mut Vec<Write>) {
        let mut records = first.records();
        let mut urgent = first.is_urgent();
        group.push(first);
        while group.len() < MAX_GROUP {
            match self.urgent.try_recv() {
                Ok(w) => {
                    records += w.records();
                    urgent = true;
                    group.push(w);
                }
                Err(_) => break,
            }
        }
        if urgent {
            return;
        }
        while group.len() < MAX_GROUP && records < MAX_GROUP_RECORDS {
            match self.normal.try_recv() {
                Ok(w) => {
                    records += w.records();
                    group.push(w);
                }
                Err(_) => break,
            }
        }
    }
}

fn writer(
    db: Arc<Database>,
    mut next_seq: u64,
    (mut audit_head, pseudonyms): (Option<(u64, String)>, Arc<Pseudonymiser>),
    mut queues: Queues,
    bus: Bus,
    commands: watch::Sender<u64>,
    metrics: Arc<HubMetrics>,
) {
    // Only to wait on two channels at once; no I/O or timers run on it.
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "store writer cannot start; the hub stops storing");
            return;
        }
    };
    let mut group: Vec<Write> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = queues.next(&rt) {
        queues.group(first, &mut group);
        let audit = tables::AuditState {
            head: audit_head.clone(),
            pseudonyms: &pseudonyms,
            now: wardlink_shared::time::format_rfc3339(now_ms()),
        };
        let started = std::time::Instant::now();
        let committed = tables::commit_group(&db, next_seq, &group, &audit);
        metrics.store_commit_seconds.observe(started.elapsed());
        match committed {
            Ok(outcome) => {
                next_seq = outcome.next_seq;
                audit_head = outcome.audit_head;
                for (w, result) in group.drain(..).zip(outcome.results) {
                    match (w, result) {
                        (
                            Write::Ingest {
                                edge, lane, reply, ..
                            },
                            tables::WriteResult::Ingested(i),
                        ) => {
                            metrics.records_stored.with(lane.label()).add(i.stored);
                            metrics
                                .records_duplicate
                                .with(lane.label())
                                .add(i.duplicates);
                            metrics.records_unreadable.add(i.unreadable);
                            if i.evicted > 0 {
                                metrics.records_evicted.add(i.evicted);
                                tracing::warn!(
                                    edge = %edge,
                                    records = i.evicted,
                                    "edge evicted telemetry it could not keep (disk budget)"
                                );
                            }
                            let _ = reply.send(Ok(i));
                        }
                        (
                            Write::Ingest { reply, .. },
                            tables::WriteResult::Gap { expected, got },
                        ) => {
                            let _ = reply.send(Err(StoreError::Gap { expected, got }));
                        }
                        (Write::Event { reply, .. }, tables::WriteResult::Event(seq)) => {
                            let _ = reply.send(Ok(seq));
                        }
                        (
                            Write::Acknowledge { reply, .. },
                            tables::WriteResult::Acknowledged(o),
                        ) => {
                            let _ = reply.send(Ok(o));
                        }
                        (Write::CommandsDone { reply, .. }, tables::WriteResult::CommandsDone)
                        | (Write::Audit { reply, .. }, tables::WriteResult::Audited) => {
                            let _ = reply.send(Ok(()));
                        }
                        (Write::Notify { reply, .. }, tables::WriteResult::Notified(ids)) => {
                            let _ = reply.send(Ok(ids));
                        }
                        (
                            Write::SmsOutcome { reply, .. },
                            tables::WriteResult::SmsRecorded(row),
                        ) => {
                            let _ = reply.send(Ok(row));
                        }
                        (Write::Silence { reply, .. }, tables::WriteResult::Silenced(o)) => {
                            let _ = reply.send(Ok(o));
                        }
                        (
                            Write::PatientSettings { reply, .. },
                            tables::WriteResult::SettingsQueued(o),
                        ) => {
                            let _ = reply.send(Ok(o));
                        }
                        // commit_group returns one result per write, of the write's kind.
                        _ => {}
                    }
                }
                for event in outcome.events {
                    bus.publish(Arc::new(event));
                }
                if outcome.commands_added {
                    commands.send_modify(|n| *n += 1);
                }
                metrics
                    .last_event_seq
                    .set(i64::try_from(next_seq - 1).unwrap_or(i64::MAX));
            }
            Err(e) => {
                // Nothing was stored and nothing acknowledged: edges will send it again.
                metrics.store_errors.inc();
                tracing::error!(error = %e, "store commit failed");
                let msg = e.to_string();
                for w in group.drain(..) {
                    w.fail(&msg);
                }
            }
        }
    }
}

/// Hub wall-clock time, ms since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
