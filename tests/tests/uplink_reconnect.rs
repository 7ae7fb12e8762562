//! The uplink survives a hub outage: readings taken while the hub is down wait in the outbox and
//! arrive after it returns, each exactly once.

use wardlink_tests::{Dashboard, Hub, is, metric, wait_for_metric, wait_for_metric_eq};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_during_a_hub_outage_arrive_once_after_it_returns() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub.edge("edge-a", "ward-a", |_| {}).await?;
    edge.wait_online().await?;
    let mut device = edge.device("mon-1", "bed-01").await?;
    let token = hub.nurse("ward-a");

    let mut dash = Dashboard::connect(&hub.ws_url(""), &token).await?;
    device.publish(r#"{"hr":70}"#).await?;
    let before = dash.until(|v| is(v, "vitals", "bed-01")).await?;
    let last = before["seq"].as_u64().expect("seq");
    dash.close().await;
    // The edge has the hub's ack for it (the dashboard saw it stored, the ack may still fly):
    // two records, this boot's gap record and the reading.
    wait_for_metric(
        || edge.metrics(),
        "wardlink_edge_records_acked_total{lane=\"telemetry\"}",
        2,
    )
    .await?;

    // Hub down: the edge keeps accepting and committing readings.
    let (dir, config) = hub.stop().await;
    for hr in 71..81 {
        device.publish(&format!(r#"{{"hr":{hr}}}"#)).await?;
    }
    wait_for_metric(
        || edge.metrics(),
        "wardlink_edge_outbox_committed_total{lane=\"telemetry\"}",
        10,
    )
    .await?;
    // Exactly the ten wait for the hub (the acknowledged one is deleted).
    wait_for_metric_eq(
        || edge.metrics(),
        "wardlink_edge_outbox_depth{lane=\"telemetry\"}",
        10,
    )
    .await?;

    // Hub back: the edge reconnects by itself and delivers the backlog, exactly once, in order.
    let hub = Hub::resume(dir, config).await?;
    let mut dash = Dashboard::connect(&hub.ws_url(&format!("since={last}")), &token).await?;
    let mut hrs = Vec::new();
    while hrs.len() < 10 {
        let v = dash.until(|v| is(v, "vitals", "bed-01")).await?;
        hrs.push(v["values"]["hr"].as_f64().unwrap_or(0.0) as i64);
    }
    assert_eq!(hrs, (71..81).collect::<Vec<_>>());
    wait_for_metric(
        || edge.metrics(),
        "wardlink_edge_records_acked_total{lane=\"telemetry\"}",
        11,
    )
    .await?;

    // Only acknowledged records were deleted, and the outbox empties.
    wait_for_metric_eq(
        || edge.metrics(),
        "wardlink_edge_outbox_depth{lane=\"telemetry\"}",
        0,
    )
    .await?;
    let hub_text = hub.metrics().await?;
    assert_eq!(
        metric(
            &hub_text,
            "wardlink_hub_records_stored_total{lane=\"telemetry\"}"
        ),
        Some(10),
        "{hub_text}"
    );

    // A live reading after the backlog follows with the next seq: nothing stored twice.
    device.publish(r#"{"hr":99}"#).await?;
    let live = dash.until(|v| is(v, "vitals", "bed-01")).await?;
    assert_eq!(live["values"]["hr"], 99.0);
    assert!(dash.seen.iter().filter(|v| v["type"] == "vitals").count() == 11);
    Ok(())
}

/// An edge whose disk was replaced starts its outbox again from seq 1. The hub already holds
/// seqs of the old disk; the new outbox is a new stream, so nothing new is taken for a
/// duplicate and nothing unsent is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_outbox_is_a_new_stream() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let mut edge = hub.edge("edge-a", "ward-a", |_| {}).await?;
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-a")).await?;
    let mut device = edge.device("mon-1", "bed-01").await?;
    for hr in 60..63 {
        device.publish(&format!(r#"{{"hr":{hr}}}"#)).await?;
        dash.until(|v| is(v, "vitals", "bed-01")).await?;
    }
    drop(device);
    edge.running.shutdown();
    edge.running.wait().await?;

    // Same identity and certificate, empty data directory, new MQTT port.
    let mut config = edge.config.clone();
    std::fs::remove_dir_all(&config.edge.data_dir)?;
    config.mqtt.listen.set_port(wardlink_tests::free_port());
    let edge = wardlink_tests::Edge::start(edge.dir, config).await?;
    let mut device = edge.device("mon-1", "bed-01").await?;
    device.publish(r#"{"hr":88}"#).await?;
    let v = dash.until(|v| is(v, "vitals", "bed-01")).await?;
    assert_eq!(
        v["values"]["hr"], 88.0,
        "the new outbox's seq 1 is not a duplicate"
    );
    Ok(())
}
