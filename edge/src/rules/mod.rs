//! Rules: runs the alarm engine over every reading and turns readings and alarm events into
//! outbox records, alarm events first.
//!
//! Works the same with or without an uplink: it only ever talks to the outbox.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use wardlink_shared::Reading;
use wardlink_shared::alarm::{AlarmEngine, RuleSettings};
use wardlink_shared::wire::RecordBody;

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
    outbox: Outbox,
    metrics: Arc<EdgeMetrics>,
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
        };
        let alarms = records
            .iter()
            .filter(|r| matches!(r, RecordBody::Alarm(_)))
            .count();
        metrics.alarm_events.add(alarms as u64);
        if !records.is_empty() && outbox.append(records).await.is_err() {
            return;
        }
    }
}
