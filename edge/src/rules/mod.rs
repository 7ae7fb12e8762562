//! Rules: runs the alarm engine over every reading and turns readings and alarm events into
//! outbox records, alarm events first.
//!
//! Works the same with or without an uplink: it only ever talks to the outbox.
//!
//! The engine's lasting state (open episodes, pending waits, acknowledgements, silences) goes
//! to the outbox with the records of the step that changed it, and is committed with them
//! (see [`state`]); at start it is taken up again, so an episode open before a restart keeps
//! its id.
//!
//! A reading the outbox already holds (same patient and device timestamp: a device sending it
//! again after a reconnect or an edge crash) is not evaluated or stored again; its
//! acknowledgement waits until what was appended before it is durable, which includes the
//! reading it repeats.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use wardlink_shared::alarm::{ActiveAlarm, AlarmEngine, RuleSettings};
use wardlink_shared::metrics::{Counter, Registry};
use wardlink_shared::wire::RecordBody;

use crate::broker::Fanout;
use crate::clock::now;
use crate::ingest::Ingested;
use crate::outbox::Outbox;
use crate::ward::Feed;

mod commands;
mod state;

pub use commands::CommandRequest;

/// What the rules count.
#[derive(Debug)]
pub struct RulesMetrics {
    /// Alarm events produced by the rules.
    pub alarm_events: Arc<Counter>,
    /// Readings already held (a device sending one again), acknowledged and not stored twice.
    pub duplicates: Arc<Counter>,
}

impl RulesMetrics {
    /// Registers the rules' metrics on `r`.
    pub fn register(r: &Registry) -> Self {
        Self {
            alarm_events: r.counter(
                "wardlink_edge_alarm_events_total",
                "Alarm events (raised, updated, resolved) produced by the rules.",
            ),
            duplicates: r.counter(
                "wardlink_edge_readings_duplicate_total",
                "Readings a device sent again that were already accepted: acknowledged, not stored twice.",
            ),
        }
    }
}

/// What the rules task works with.
pub struct Rules {
    /// The ward's settings.
    pub settings: RuleSettings,
    /// Where patients' own settings are kept.
    pub patient_settings: PathBuf,
    /// Prefix of episode ids.
    pub edge_id: String,
    /// Where records go.
    pub outbox: Outbox,
    /// The rules' metrics.
    pub metrics: Arc<RulesMetrics>,
    /// The active episodes, for the admin listener.
    pub active: watch::Sender<Vec<ActiveAlarm>>,
    /// Accepted readings for local MQTT subscribers.
    pub fanout: Fanout,
    /// What the ward view shows.
    pub view: Feed,
}

/// Runs until the readings channel closes. It deliberately ignores the shutdown signal: ingest
/// stops first and drops its sender, and every reading already in the channel still reaches
/// the outbox before this returns.
pub async fn run(
    rules: Rules,
    mut readings: mpsc::Receiver<Ingested>,
    mut commands: mpsc::Receiver<CommandRequest>,
) {
    let Rules {
        settings,
        patient_settings,
        edge_id,
        outbox,
        metrics,
        active,
        fanout,
        view,
    } = rules;
    let mut engine = AlarmEngine::new(settings, edge_id);
    let mut own = commands::load_patient_settings(&patient_settings);
    for (patient, s) in &own {
        engine.set_patient_settings(patient.clone(), s.clone(), now());
    }
    // After the settings: restored episodes were judged by them already.
    let mut saved = state::restore(&mut engine, outbox.take_restored_state());
    publish_active(&engine, &active);
    for alarm in active.borrow().iter() {
        view.restored(alarm, crate::clock::now_ms());
    }
    // The hub closes what it holds open for this edge beyond these.
    let alerts = active.borrow().iter().map(|a| a.id.clone()).collect();
    let open = RecordBody::EpisodesOpen {
        alerts,
        ts: crate::clock::now_ms(),
    };
    if outbox.append(vec![open]).await.is_err() {
        return;
    }
    // The engine says when it next has work without a reading (a delay running out, a device
    // falling silent, a silence ending); on the monotonic clock, so a step of the wall clock
    // moves none of it. Asked of every patient after a tick or a command; after a reading only
    // of that reading's patient (what it may have brought forward).
    let mut due = engine.next_deadline();
    loop {
        // Commands and timers first: a flood of readings must not hold back an
        // acknowledgement, a silence or an alarm whose delay has run out.
        let (records, confirm) = tokio::select! {
            biased;
            Some(request) = commands.recv() => {
                let (events, applied) = commands::handle(
                    &mut engine,
                    (&mut own, &patient_settings),
                    &view,
                    request.command,
                    request.from_ward,
                )
                .await;
                if applied {
                    (events, Some(request.applied))
                } else {
                    let _ = request.applied.send(false);
                    (events, None)
                }
            }
            () = sleep_until(due) => {
                let events: Vec<RecordBody> =
                    engine.tick(now()).into_iter().map(RecordBody::Episode).collect();
                (events, None)
            }
            r = readings.recv() => match r {
                Some(ingested) => {
                    let patient = ingested.reading.patient.clone();
                    let step = Step { engine: &mut engine, saved: &mut saved, view: &view };
                    if accept(step, &outbox, &fanout, &metrics, &active, ingested)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    due = match (due, engine.next_deadline_of(&patient)) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    continue;
                }
                None => return,
            },
        };
        due = engine.next_deadline();
        let alarms = records
            .iter()
            .filter(|r| matches!(r, RecordBody::Episode(_)))
            .count();
        metrics.alarm_events.add(alarms as u64);
        for r in &records {
            if let RecordBody::Episode(a) = r {
                view.alarm(a);
            }
        }
        let state = state::if_changed(&engine, &mut saved);
        let appended = match (confirm, state) {
            // A command that changed the state is confirmed to the hub once the state's
            // commit was attempted: a crash before it makes the hub send it again.
            (Some(applied), Some(state)) => outbox
                .append_state_confirmed(records, state)
                .await
                .map(|durable| confirm_when_saved(durable, applied)),
            (confirm, state) => {
                if let Some(applied) = confirm {
                    let _ = applied.send(true);
                }
                outbox.append_with_state(records, state).await
            }
        };
        if appended.is_err() {
            return;
        }
        // After the append: what the admin listener shows is on its way to the disk.
        publish_active(&engine, &active);
    }
}

/// How long a command's confirmation waits for its state's commit. The uplink applies the
/// hub's commands one at a time: a disk that stalls must not hold back every later
/// acknowledgement and silence.
const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Tells the uplink the command was applied once its state's commit was attempted, or after
/// [`CONFIRM_WAIT`]. A commit that failed or stalls still confirms: the command is applied in
/// memory, the state is written when the disk recovers, and holding the confirmation would
/// hold back every later command from the hub.
fn confirm_when_saved(durable: oneshot::Receiver<bool>, applied: oneshot::Sender<bool>) {
    tokio::spawn(async move {
        match tokio::time::timeout(CONFIRM_WAIT, durable).await {
            Ok(Ok(true)) => {}
            Ok(_) => tracing::warn!("command applied; its alarm state waits for the disk"),
            Err(_) => tracing::warn!("command applied; its alarm state's commit is slow"),
        }
        let _ = applied.send(true);
    });
}

/// Sleeps until `due`, or for ever when nothing is due.
async fn sleep_until(due: Option<std::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

/// The engine, and the change count of the state last handed to the outbox.
struct Step<'a> {
    engine: &'a mut AlarmEngine,
    saved: &'a mut u64,
    view: &'a Feed,
}

/// Evaluates and appends one reading, or recognises it as one already held.
async fn accept(
    step: Step<'_>,
    outbox: &Outbox,
    fanout: &Fanout,
    metrics: &RulesMetrics,
    active: &watch::Sender<Vec<ActiveAlarm>>,
    ingested: Ingested,
) -> Result<(), crate::outbox::Closed> {
    let Ingested {
        mut reading,
        stamped,
        quality,
        mut ticket,
        fanout: copy,
    } = ingested;
    if stamped {
        match outbox.repeat(&reading.patient, reading.ts, ticket) {
            Ok(()) => {
                metrics.duplicates.inc();
                return Ok(());
            }
            Err(t) => ticket = t,
        }
    } else {
        // The edge's own stamp, made unique for the patient: the hub keeps one reading per
        // patient and timestamp, and two unstamped readings may arrive in one millisecond.
        reading.ts = outbox.unique_ts(&reading.patient, reading.ts);
    }
    let Step {
        engine,
        saved,
        view,
    } = step;
    let observation = engine.observe_with(&reading, &quality, stamped, now());
    view.vitals(&reading, observation.news2);
    for a in &observation.events {
        view.alarm(a);
    }
    let mut records: Vec<RecordBody> = observation
        .events
        .into_iter()
        .map(RecordBody::Episode)
        .collect();
    records.push(RecordBody::Vitals {
        reading,
        news2: observation.news2,
    });
    let alarms = records.len() - 1;
    let state = state::if_changed(engine, saved);
    outbox.append_reading(records, ticket, state).await?;
    if alarms > 0 {
        metrics.alarm_events.add(alarms as u64);
        publish_active(engine, active);
    }
    if let Some((topic, payload)) = copy {
        fanout.offer(topic, payload);
    }
    Ok(())
}

/// Shares the active episodes with the admin listener.
fn publish_active(engine: &AlarmEngine, active: &watch::Sender<Vec<ActiveAlarm>>) {
    let now = engine.active();
    active.send_if_modified(|current| {
        let changed = *current != now;
        if changed {
            *current = now;
        }
        changed
    });
}
