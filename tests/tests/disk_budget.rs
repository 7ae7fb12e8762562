//! The disk budget: an edge cut off from its hub holds more telemetry than its outbox may
//! store. The oldest telemetry is evicted, counted, and reported to the hub, which accepts the
//! hole in the lane as a gap record; alarms are never evicted; the newest readings survive.

use wardlink_tests::relay::Mode;
use wardlink_tests::{Dashboard, Hub, metric, stamped, wait_for_metric, wait_for_metric_eq};

const READINGS: i64 = 3000;
const BUDGET: u64 = 48 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_telemetry_goes_first_and_alarms_never() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let (relay, edge) = hub
        .edge_behind_relay("edge-d", "ward-d", |cfg| cfg.outbox.max_bytes = BUDGET)
        .await?;
    let mut steady = edge.device("mon-1", "bed-01").await?;
    let mut alarmed = Vec::new();
    for p in 0..5 {
        alarmed.push(
            edge.device(&format!("mon-a{p}"), &format!("bed-a{p}"))
                .await?,
        );
    }

    let base = i64::try_from(wardlink_tests::unix_now())? * 1000 - 3_600_000;
    for i in 0..READINGS {
        steady.publish_nowait(&stamped(70, base + i)).await?;
        // Alarms spread over the backlog, among the oldest records too.
        if i % 600 == 0 {
            let device = &mut alarmed[usize::try_from(i / 600)?];
            device.publish(r#"{"hr":200}"#).await?;
        }
    }
    // Everything committed (nothing is acknowledged, so every record is written once).
    wait_for_metric(
        || edge.metrics(),
        "wardlink_edge_outbox_committed_total{lane=\"telemetry\"}",
        READINGS + 5,
    )
    .await?;
    wait_for_metric_eq(|| edge.metrics(), "wardlink_edge_outbox_held_records", 0).await?;
    let text = edge.metrics().await?;
    let evicted = metric(
        &text,
        "wardlink_edge_outbox_evicted_total{reason=\"disk_budget\"}",
    )
    .unwrap_or(0);
    assert!(evicted > 0, "nothing evicted:\n{text}");
    let bytes = metric(&text, "wardlink_edge_outbox_bytes").unwrap_or(i64::MAX);
    assert!(
        bytes <= i64::try_from(BUDGET)?,
        "{bytes} bytes stored over a {BUDGET} budget"
    );

    // The link returns: the hub takes the gap, counts the evicted readings, and gets every
    // alarm and every reading that was kept.
    let mut dash = Dashboard::connect(&hub.ws_url("since=0"), &hub.nurse("ward-d")).await?;
    relay.set(Mode::Pass);
    wait_for_metric_eq(
        || edge.metrics(),
        "wardlink_edge_outbox_depth{lane=\"telemetry\"}",
        0,
    )
    .await?;
    let hub_text = hub.metrics().await?;
    assert_eq!(
        metric(&hub_text, "wardlink_hub_records_evicted_total"),
        Some(evicted),
        "{hub_text}"
    );
    let stored = metric(
        &hub_text,
        "wardlink_hub_records_stored_total{lane=\"telemetry\"}",
    )
    .unwrap_or(0);
    assert_eq!(stored + evicted, READINGS + 5, "{hub_text}");
    for p in 0..5 {
        let patient = format!("bed-a{p}");
        dash.until(|v| v["type"] == "alert" && v["patient"] == patient.as_str())
            .await?;
    }
    // The newest reading survived the eviction.
    let newest = wardlink_shared::time::format_rfc3339(base + READINGS - 1);
    dash.until(|v| v["type"] == "vitals" && v["ts"] == newest.as_str())
        .await?;
    Ok(())
}
