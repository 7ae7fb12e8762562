//! Local paging when the ward's SMS gateway misbehaves (the hub stopped, so the edge pages by
//! itself): a gateway that fails is retried with backoff, one that accepts but answers too late
//! is retried under the same idempotency key, and either way the nurse gets one text; alarms
//! go on being raised and shown on the ward view meanwhile.

use std::net::SocketAddr;
use std::time::Duration;

use wardlink_tests::sms::{FakeSms, Mode};
use wardlink_tests::{Hub, PATIENCE, metric, wait_for_metric, wait_for_metric_eq};

const CN: &str = "+15550000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_slow_gateway_is_retried_and_texts_once() -> anyhow::Result<()> {
    let gateway = FakeSms::start().await?;
    gateway.set(Mode::Fail);
    let hub = Hub::start().await?;
    let token_file = hub.dir.path().join("gateway.token");
    std::fs::write(&token_file, "gateway-token\n")?;
    let edge = hub
        .edge("edge-a", "ward-a", |c| {
            c.local_notify =
                Some(gateway.local_notify(token_file, CN, 0, "http://ward-a.lan:8090/"));
            c.ward.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            c.hub.heartbeat_ms = 200;
            c.alarms.hr.delay_s = 0;
            c.alarms.hr.extreme_confirm_s = 0;
        })
        .await?;
    let mut monitor = edge.device("mon-1", "bed-01").await?;
    monitor.publish(r#"{"hr":80}"#).await?;
    let (_dir, _config) = hub.stop().await;
    wait_for_metric_eq(|| edge.metrics(), "wardlink_edge_local_paging_active", 1).await?;

    // The gateway fails: retried, counted; alarms go on meanwhile.
    monitor.publish(r#"{"hr":150}"#).await?;
    wait_for_metric(
        || edge.metrics(),
        "wardlink_edge_local_sms_retries_total",
        2,
    )
    .await?;
    assert!(gateway.delivered().is_empty());
    monitor.publish(r#"{"spo2":80}"#).await?;
    monitor.publish(r#"{"spo2":79}"#).await?;
    wait_for_metric(|| edge.metrics(), "wardlink_edge_alarm_events_total", 2).await?;

    // It accepts but answers after the edge's timeout: the next attempt carries the same key,
    // and the gateway delivers once.
    gateway.set(Mode::Slow(Duration::from_millis(600)));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while gateway.delivered().len() < 2 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the slow gateway never took both texts: {:?}",
            gateway.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&edge.metrics().await?, "wardlink_edge_local_sms_sent_total"),
        Some(0),
        "an answer after the timeout counts as a failed attempt"
    );
    gateway.set(Mode::Accept);
    wait_for_metric(|| edge.metrics(), "wardlink_edge_local_sms_sent_total", 2).await?;
    let texts = gateway.delivered();
    let hr: Vec<_> = texts
        .iter()
        .filter(|t| t.body.contains("HR high"))
        .collect();
    assert_eq!(hr.len(), 1, "{texts:?}");
    assert_eq!(texts.len(), 2, "one text per alarm: {texts:?}");
    assert!(
        texts
            .iter()
            .all(|t| t.to == CN && t.body.contains("ward-a"))
    );
    assert!(
        texts
            .iter()
            .all(|t| t.body.contains("http://ward-a.lan:8090/"))
    );
    let m = edge.metrics().await?;
    assert_eq!(metric(&m, "wardlink_edge_local_sms_failed_total"), Some(0));
    assert_eq!(metric(&m, "wardlink_edge_local_sms_sent_total"), Some(2));
    Ok(())
}
