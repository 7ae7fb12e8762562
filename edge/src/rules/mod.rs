//! Rules: runs the alarm engine over every reading and turns readings and alarm events into
//! outbox records, alarm events first.
//!
//! Works the same with or without an uplink: it only ever talks to the outbox.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use wardlink_shared::Reading;
use wardlink_shared::alarm::{ActiveAlarm, AlarmEngine, RuleSettings};
use wardlink_shared::wire::{EdgeCommand, RecordBody};

use crate::clock::now_ms;
use crate::metrics::EdgeMetrics;
use crate::outbox::Outbox;

/// How often pending alarm delays are checked between readings.
const TICK: Duration = Duration::from_millis(250);

/// Runs until the readings channel closes. It deliberately ignores the shutdown signal: ingest
/// stops first and drops its sender, and every reading already in the channel still reaches
/// the outbox before this returns.
pub async fn run(
    settings: RuleSettings,
    edge_id: String,
    mut readings: mpsc::Receiver<Reading>,
    mut commands: mpsc::Receiver<EdgeCommand>,
    outbox: Outbox,
    metrics: Arc<EdgeMetrics>,
    active: watch::Sender<Vec<ActiveAlarm>>,
) {
    let mut engine = AlarmEngine::new(settings, edge_id);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let records = tokio::select! {
            biased;
            r = readings.recv() => match r {
                Some(reading) => {
                    let observation = engine.observe(&reading, now_ms());
                    let mut records: Vec<RecordBody> =
                        observation.events.into_iter().map(RecordBody::Alarm).collect();
                    records.push(RecordBody::Vitals {
                        reading,
                        news2: observation.news2,
                    });
                    records
                }
                None => return,
            },
            _ = tick.tick() => engine
                .tick(now_ms())
                .into_iter()
                .map(RecordBody::Alarm)
                .collect(),
            Some(command) = commands.recv() => {
                apply(&mut engine, command);
                publish_active(&engine, &active);
                Vec::new()
            }
        };
        let alarms = records
            .iter()
            .filter(|r| matches!(r, RecordBody::Alarm(_)))
            .count();
        metrics.alarm_events.add(alarms as u64);
        if alarms > 0 {
            publish_active(&engine, &active);
        }
        if !records.is_empty() && outbox.append(records).await.is_err() {
            return;
        }
    }
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

/// Applies a decision taken at the hub.
fn apply(engine: &mut AlarmEngine, command: EdgeCommand) {
    match command {
        EdgeCommand::Silence {
            patient,
            from,
            until,
            by,
            ..
        } => {
            engine.silence(&patient, from, until);
            tracing::info!(by = %by, until, "patient alarms silenced by the hub");
        }
        EdgeCommand::Acknowledge { alert, by, .. } => {
            if engine.acknowledge(&alert, &by) {
                tracing::info!(alert = %alert, by = %by, "alarm acknowledged at the hub");
            } else {
                tracing::debug!(alert = %alert, "acknowledged alarm is no longer active here");
            }
        }
    }
}
