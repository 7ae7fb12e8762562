//! Alarms overtake a backlog. An edge cut off from its hub queues an hour of telemetry for 100
//! patients (one reading each 10 s). When the link returns, a patient deteriorates while the
//! backlog drains: the alarm reaches the dashboard before the backlog has finished arriving.
//! (How fast it arrives is measured by the benchmark, not asserted here.)

use wardlink_tests::relay::Mode;
use wardlink_tests::{Dashboard, Hub, is, metric, queue_backlog, wait_for_metric};

const PATIENTS: usize = 100;
const READINGS_EACH: i64 = 360;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_overtakes_an_hour_of_backlog() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    // Alarms raise at the first sample, so the test needs no waiting.
    let (relay, edge) = hub.edge_behind_relay("edge-b", "ward-b", |_| {}).await?;

    // An hour of readings per patient, taken while the hub is unreachable.
    let mut devices = Vec::with_capacity(PATIENTS);
    for p in 0..PATIENTS {
        devices.push(
            edge.device(&format!("mon-{p}"), &format!("bed-{p}"))
                .await?,
        );
    }
    let total = queue_backlog(&mut devices, READINGS_EACH).await?;
    wait_for_metric(
        || edge.metrics(),
        "wardlink_edge_outbox_committed_total{lane=\"telemetry\"}",
        total,
    )
    .await?;
    let mut deteriorating = edge.device("mon-x", "bed-x").await?;

    // The link returns; once the backlog is arriving, a patient deteriorates.
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-b")).await?;
    relay.set(Mode::Pass);
    wait_for_metric(
        || hub.metrics(),
        "wardlink_hub_records_stored_total{lane=\"telemetry\"}",
        1,
    )
    .await?;
    let stored_before = metric(
        &hub.metrics().await?,
        "wardlink_hub_records_stored_total{lane=\"telemetry\"}",
    )
    .unwrap_or(0);
    assert!(
        stored_before < total,
        "the backlog drained before the alarm could be raised; make it larger"
    );
    deteriorating.publish(r#"{"hr":200}"#).await?;

    let alert = dash
        .until(|v| v["type"] == "alert" && v["patient"] == "bed-x" && v["kind"] == "hr_high")
        .await?;
    let alert_seq = alert["seq"].as_u64().unwrap_or(u64::MAX);
    let vitals_before = dash.seen.iter().filter(|v| v["type"] == "vitals").count();
    // The rest of the backlog follows the alarm.
    let mut vitals_after = 0usize;
    let mut last_vitals_seq = 0;
    while vitals_before + vitals_after < usize::try_from(total)? {
        let v = dash.next().await?;
        if v["type"] == "vitals" && v["patient"] != "bed-x" {
            vitals_after += 1;
            last_vitals_seq = v["seq"].as_u64().unwrap_or(0);
        }
    }
    eprintln!(
        "backlog of {total}: the alarm arrived after {vitals_before} readings, before {vitals_after}"
    );
    assert!(
        vitals_after > 0 && alert_seq < last_vitals_seq,
        "the alarm (seq {alert_seq}) was stored after the whole backlog"
    );
    // It overtook all but what was already in flight: at most the edge's window of unacknowledged
    // telemetry and the hub's write groups (4,096 records each) being committed.
    let in_flight = i64::try_from(edge.config.outbox.max_in_flight)? + 2 * 4096;
    let behind = i64::try_from(vitals_before)? - stored_before;
    assert!(
        behind <= in_flight,
        "{behind} backlog readings were stored between the alarm's publish and its arrival"
    );
    assert!(is(&alert, "alert", "bed-x"));
    assert_eq!(alert["priority"], "high");
    Ok(())
}
