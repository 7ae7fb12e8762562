//! The whole path, device MQTT → edge → QUIC → hub → WebSocket, with contract messages.

use std::time::Duration;

use wardlink_tests::{Dashboard, Hub, is};

const NORMAL: &str =
    r#"{"hr":72,"spo2":97,"rr":16,"temp":36.8,"sbp":120,"dbp":80,"o2":false,"acvpu":"A"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vitals_then_sustained_tachycardia_then_recovery() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub
        .edge("edge-a", "ward-a", |c| c.alarms.hr.delay_s = 2)
        .await?;
    edge.wait_online().await?;
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-a")).await?;
    let mut monitor = edge.device("mon-1", "bed-01").await?;

    // Normal vitals arrive as contract `vitals` messages, and raise nothing.
    for _ in 0..3 {
        monitor.publish(NORMAL).await?;
    }
    let mut last_seq = 0;
    for _ in 0..3 {
        let v = dash.until(|v| v["type"] != "edge").await?;
        assert!(is(&v, "vitals", "bed-01"), "{v}");
        assert_eq!(v["ward"], "ward-a");
        assert_eq!(v["values"]["hr"], 72.0);
        assert_eq!(v["values"]["acvpu"], "A");
        assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
        let seq = v["seq"].as_u64().expect("seq");
        assert!(seq > last_seq);
        last_seq = seq;
    }

    // Sustained HR 180: the alarm needs the 2 s delay to pass, so keep publishing, as a
    // monitor does, until the alert arrives; every message before it must be vitals.
    let alert = loop {
        monitor.publish(r#"{"hr":180,"spo2":97}"#).await?;
        tokio::select! {
            a = dash.until(|v| v["type"] == "alert" && v["kind"] == "hr_high") => break a?,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    assert_eq!(alert["kind"], "hr_high");
    assert_eq!(alert["state"], "raised");
    assert_eq!(alert["patient"], "bed-01");
    assert_eq!(alert["ward"], "ward-a");
    assert_eq!(alert["values"]["hr"], 180.0);
    assert!(["high", "medium", "low"].contains(&alert["priority"].as_str().unwrap_or("")));
    assert!(alert["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(alert["seq"].as_u64() > Some(last_seq));
    let tachy_vitals = dash
        .seen
        .iter()
        .filter(|v| v["type"] == "vitals" && v["values"]["hr"] == 180.0)
        .count();
    assert!(
        tachy_vitals >= 1,
        "the alarm follows at least one high reading"
    );

    // Back to normal: the same episode resolves.
    monitor.publish(NORMAL).await?;
    let resolved = dash
        .until(|v| v["type"] == "alert" && v["kind"] == "hr_high")
        .await?;
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["id"], alert["id"]);
    assert_eq!(resolved["kind"], "hr_high");
    Ok(())
}

/// More than rumqttd's ~200-message scheduling window in one burst: every reading arrives,
/// once (the ingest link must answer `Unschedule` with a wake-up, see DESIGN.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_readings_arrives_complete() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub.edge("edge-a", "ward-a", |_| {}).await?;
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-a")).await?;
    let mut monitor = edge.device("mon-1", "bed-01").await?;
    const N: usize = 1000;
    let base = (i64::try_from(wardlink_tests::unix_now())? - 3600) * 1000;
    for i in 0..N {
        // The reading's timestamp carries its number, so each arrival is identifiable.
        let ts = wardlink_shared::time::format_rfc3339(base + i as i64);
        monitor
            .publish_nowait(&format!(r#"{{"ts":"{ts}","hr":{}}}"#, 60 + i % 40))
            .await?;
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < N {
        let v = dash.until(|v| is(v, "vitals", "bed-01")).await?;
        let ts = v["ts"].as_str().unwrap_or_default().to_owned();
        assert!(seen.insert(ts.clone()), "duplicate {ts}");
    }
    Ok(())
}

/// NEWS2 travels with every complete reading, and a deteriorating patient raises a `news2`
/// alarm whose priority follows the RCP thresholds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn news2_is_scored_and_alarmed_end_to_end() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub
        .edge("edge-a", "ward-a", |c| c.news2.delay_s = 0)
        .await?;
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-a")).await?;
    let mut monitor = edge.device("mon-1", "bed-01").await?;

    monitor.publish(NORMAL).await?;
    let v = dash.until(|v| is(v, "vitals", "bed-01")).await?;
    assert_eq!(v["news2"], 0);

    // RR 26 (3) + HR 115 (2) + temp 38.5 (1) + SBP 105 (1) = 7: high.
    monitor
        .publish(
            r#"{"hr":115,"spo2":97,"rr":26,"temp":38.5,"sbp":105,"dbp":70,"o2":false,"acvpu":"A"}"#,
        )
        .await?;
    let alert = dash
        .until(|v| v["type"] == "alert" && v["kind"] == "news2")
        .await?;
    assert_eq!(alert["priority"], "high");
    assert_eq!(alert["state"], "raised");
    let scored = dash
        .seen
        .iter()
        .find(|v| is(v, "vitals", "bed-01") && v["values"]["rr"] == 26.0)
        .cloned();
    let scored = match scored {
        Some(v) => v,
        None => dash.until(|v| is(v, "vitals", "bed-01")).await?,
    };
    assert_eq!(scored["news2"], 7);
    assert_eq!(scored["news2_detail"]["rr"], 3);
    Ok(())
}
