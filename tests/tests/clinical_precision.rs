//! Issue 16 end to end: an acknowledgement names the version the clinician saw, so one that a
//! worsening overtook leaves the alarm news (dashboards, escalation chain, edge); and readings
//! of poor signal quality, published over MQTT, neither raise nor feed a physiological alarm
//! while a persistent poor signal raises `signal_poor`. The rules themselves are tested in
//! virtual time in `shared/src/alarm/precision_tests.rs`.

use std::time::Duration;

use serde_json::Value;
use wardlink_cloud::token::Role;
use wardlink_shared::alarm::Priority;
use wardlink_tests::sms::FakeSms;
use wardlink_tests::{Dashboard, Hub, PATIENCE, http_get, http_request, is, wait_for_metric_eq};

const CN: &str = wardlink_tests::sms::CHARGE_NURSE;

/// The edge's view of episode `id` (its admin `/alarms`).
async fn at_edge(edge: &wardlink_tests::Edge, id: &str) -> anyhow::Result<Option<Value>> {
    let alarms: Value = serde_json::from_str(&http_get(edge.running.admin_addr, "/alarms").await?)?;
    Ok(alarms
        .as_array()
        .and_then(|a| a.iter().find(|e| e["id"] == id))
        .cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_overtaken_by_a_worsening_leaves_the_alarm_news() -> anyhow::Result<()> {
    let sms = FakeSms::start().await?;
    let hub = Hub::start_with(&sms.hub_notify(3, 600), &[("sms.token", "secret-token\n")]).await?;
    let edge = hub
        .edge("edge-a", "ward-a", |c| {
            c.alarms.hr.delay_s = 0;
            c.alarms.hr.extreme_confirm_s = 0;
            c.alarms.hr.priority = Priority::High;
        })
        .await?;
    let ann = hub.token("ann", Role::Nurse, &["ward-a"], Duration::from_secs(3600));
    let bob = hub.token("bob", Role::Nurse, &["ward-a"], Duration::from_secs(3600));
    let mut nurse_a = Dashboard::connect(&hub.ws_url(""), &ann).await?;
    let mut monitor = edge.device("mon-1", "bed-01").await?;

    // Nurse A's screen shows version 1: HR 150.
    monitor.publish(r#"{"hr":150}"#).await?;
    let seen_by_a = nurse_a.until(|v| is(v, "alert", "bed-01")).await?;
    assert_eq!(
        (seen_by_a["version"].as_u64(), seen_by_a["current"].as_f64()),
        (Some(1), Some(150.0))
    );
    let id = seen_by_a["id"].as_str().unwrap_or_default().to_owned();

    // Before she clicks, the heart rate climbs a step further (same priority): version 2,
    // announced as news, which nurse B's screen shows.
    monitor.publish(r#"{"hr":166}"#).await?;
    let mut nurse_b = Dashboard::connect(&hub.ws_url(""), &bob).await?;
    let worse = nurse_b
        .until(|v| v["type"] == "alert" && v["id"] == id.as_str() && v["version"] == 2)
        .await?;
    // (`escalated` once the chain's first step went out.)
    assert!(
        worse["state"] == "raised" || worse["state"] == "escalated",
        "{worse}"
    );
    assert_eq!(worse["priority"], "high");
    assert!(
        worse["message"]
            .as_str()
            .unwrap_or_default()
            .contains("166"),
        "{worse}"
    );
    assert_eq!(worse["worst"].as_f64(), Some(166.0));

    // A little higher, not a step: an update, shown but not news. A screen opened now shows
    // the current text, and the time of the last change of state (the worsening), not the
    // update's.
    monitor.publish(r#"{"hr":170}"#).await?;
    let update = tokio::time::timeout(
        PATIENCE,
        nurse_b.until(|v| v["type"] == "alert" && v["id"] == id.as_str() && v["update"] == true),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no update: {:?}", nurse_b.seen))??;
    assert_eq!(
        (update["version"].as_u64(), update["worst"].as_f64()),
        (Some(2), Some(170.0))
    );
    let (status, body) = http_request(
        hub.running.http_addr,
        "/api/wards/ward-a/history",
        &[("authorization", &format!("Bearer {bob}"))],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let history: Value = serde_json::from_str(&body)?;
    // The open episode comes last, as it stands (a page's first paint).
    let painted = history["events"]
        .as_array()
        .and_then(|e| e.iter().rev().find(|v| v["id"] == id.as_str()))
        .cloned()
        .unwrap_or_default();
    assert!(
        painted["message"]
            .as_str()
            .unwrap_or_default()
            .contains("170"),
        "{painted}"
    );
    assert_eq!(painted["ts"], worse["ts"], "{painted}");

    // Nurse A's click names version 1: refused, recorded, the alarm stays raised.
    nurse_a
        .send(&format!(r#"{{"type":"ack","alert":"{id}","version":1}}"#))
        .await?;
    let refused = tokio::time::timeout(PATIENCE, nurse_a.until(|v| v["type"] == "error"))
        .await
        .map_err(|_| anyhow::anyhow!("no refusal: {:?}", nurse_a.seen))??;
    assert_eq!(refused["error"], "stale_version", "{refused}");
    assert_eq!(refused["version"], 2);

    // The chain goes on: the charge nurse is texted about the current state.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let text = loop {
        if let Some(r) = sms.delivered().into_iter().find(|r| r.to == CN) {
            break r.body;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no SMS: {:?}",
            sms.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        text.contains("166"),
        "the text names the current value: {text}"
    );
    // Nobody saw it acknowledged, and the edge holds it unacknowledged at version 2.
    for v in nurse_a.seen.iter().chain(&nurse_b.seen) {
        assert!(
            !(v["id"] == id.as_str() && v["state"] == "acknowledged"),
            "acknowledged by a stale click: {v}"
        );
    }
    let episode = at_edge(&edge, &id).await?;
    assert_eq!(
        episode
            .as_ref()
            .map(|e| (e["version"].clone(), e["acknowledged_by"].clone())),
        Some((Value::from(2), Value::Null)),
        "{episode:?}"
    );

    // Nurse B acknowledges what she saw, version 2: acknowledged everywhere, chain over.
    nurse_b
        .send(&format!(r#"{{"type":"ack","alert":"{id}","version":2}}"#))
        .await?;
    let acked = nurse_a
        .until(|v| v["type"] == "alert" && v["id"] == id.as_str() && v["state"] == "acknowledged")
        .await?;
    assert_eq!(
        (acked["by"].as_str(), acked["version"].as_u64()),
        (Some("bob"), Some(2))
    );
    wait_for_metric_eq(|| hub.metrics(), "wardlink_hub_escalations_open", 0).await?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while at_edge(&edge, &id)
        .await?
        .is_none_or(|e| e["acknowledged_by"] != "bob")
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the edge never applied it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The stale click is in the audit log, as what nurse A saw.
    let auditor = hub.token("aud", Role::Auditor, &[], Duration::from_secs(600));
    let (status, log) = http_request(
        hub.running.http_addr,
        "/api/audit",
        &[("authorization", &format!("Bearer {auditor}"))],
    )
    .await?;
    assert_eq!(status, 200);
    let stale: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["action"] == "ack_stale")
        .collect();
    assert_eq!(stale.len(), 1, "{log}");
    assert_eq!(stale[0]["actor"], "ann");
    assert!(
        stale[0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("version 1, current 2"),
        "{}",
        stale[0]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_of_poor_quality_raise_signal_poor_not_a_desaturation() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub
        .edge("edge-a", "ward-a", |c| {
            c.alarms.spo2.delay_s = 1;
            c.alarms.spo2.extreme_confirm_s = 1;
            c.quality.poor_after_s = 2;
        })
        .await?;
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-a")).await?;
    let mut oximeter = edge.device("ox-1", "bed-07").await?;

    // A probe slipping: SpO2 70 % with a perfusion index of 0.1 %. Had it started the
    // desaturation's wait (1 s), that alarm would come before the technical one (2 s).
    oximeter.publish(r#"{"spo2":70,"hr":80,"pi":0.1}"#).await?;
    let poor = dash.until(|v| is(v, "alert", "bed-07")).await?;
    assert_eq!(
        (poor["kind"].as_str(), poor["priority"].as_str()),
        (Some("signal_poor"), Some("low")),
        "only a technical alarm: {poor}"
    );
    assert_eq!(poor["message"], "Poor signal quality: SpO2");
    // Good perfusion again, the same low value: the technical alarm clears and the
    // desaturation is judged from here, after its delay.
    oximeter.publish(r#"{"spo2":70,"hr":80,"pi":2.5}"#).await?;
    dash.until(|v| is(v, "alert", "bed-07") && v["kind"] == "spo2_low")
        .await?;
    let kinds: Vec<(String, String)> = dash
        .seen
        .iter()
        .filter(|v| is(v, "alert", "bed-07"))
        .map(|v| {
            (
                v["kind"].as_str().unwrap_or_default().to_owned(),
                v["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let resolved = kinds
        .iter()
        .position(|k| *k == ("signal_poor".into(), "resolved".into()));
    let desat = kinds.iter().position(|(k, _)| k == "spo2_low");
    assert!(resolved.is_some() && resolved < desat, "{kinds:?}");
    Ok(())
}
