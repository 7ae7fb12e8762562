//! Notifications end to end (issue 6): a real hub and edge, a high-priority alarm from a real
//! MQTT reading, and SMS through a local provider speaking Twilio's Messages API. The
//! escalation timeline itself (30 s / 90 s, acknowledgement, storms, shifts and time zones) is
//! tested in virtual time in `cloud/src/notify/engine.rs` and `plan.rs`; here the parts meet.

use std::time::Duration;

use serde_json::Value;
use wardlink_cloud::token::Role;
use wardlink_shared::alarm::Priority;
use wardlink_tests::sms::{CHARGE_NURSE, DOCTOR, FakeSms, Mode};
use wardlink_tests::{
    Dashboard, Edge, Hub, PATIENCE, http_request, is, metric, wait_for_metric, wait_for_metric_eq,
};

const CN: &str = CHARGE_NURSE;
const DR: &str = DOCTOR;

async fn hub_with(sms: &FakeSms, first: u64, second: u64) -> anyhow::Result<Hub> {
    Hub::start_with(
        &sms.hub_notify(first, second),
        &[("sms.token", "secret-token\n")],
    )
    .await
}

/// An edge for ward-a whose heart-rate alarm is high priority and raised at the first sample.
async fn edge(hub: &Hub) -> anyhow::Result<Edge> {
    hub.edge("edge-a", "ward-a", |c| {
        c.alarms.hr.delay_s = 0;
        c.alarms.hr.extreme_confirm_s = 0;
        c.alarms.hr.priority = Priority::High;
    })
    .await
}

/// Polls until `ok` holds for the provider's delivered messages.
async fn delivered_until(
    sms: &FakeSms,
    ok: impl Fn(&[wardlink_tests::sms::Request]) -> bool,
) -> anyhow::Result<Vec<wardlink_tests::sms::Request>> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let d = sms.delivered();
        if ok(&d) {
            return Ok(d);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "provider has {d:?}, requests {:?}",
            sms.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_escalates_in_order_and_the_ack_stops_it() -> anyhow::Result<()> {
    let sms = FakeSms::start().await?;
    let hub = hub_with(&sms, 1, 2).await?;
    let edge = edge(&hub).await?;
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-a")).await?;
    let mut device = edge.device("mon-1", "bed-secret-17").await?;
    device.publish(r#"{"hr":150}"#).await?;
    let raised = dash
        .until(|v| is(v, "alert", "bed-secret-17") && v["priority"] == "high")
        .await?;
    let id = raised["id"].as_str().unwrap_or_default().to_owned();

    // Charge nurse first, then the doctor.
    let d = delivered_until(&sms, |d| d.len() >= 2).await?;
    assert_eq!(
        d.iter().map(|r| r.to.as_str()).collect::<Vec<_>>(),
        [CN, DR]
    );
    for r in &d {
        assert!(
            r.body.starts_with("Wardlink HIGH ward-a pt v1:"),
            "{}",
            r.body
        );
        assert!(r.body.contains("hr_high"), "{}", r.body);
        assert!(r.body.ends_with("https://wl.example/"), "{}", r.body);
        assert!(r.body.chars().count() <= 160, "{}", r.body);
        assert!(
            !r.body.contains("bed-secret-17"),
            "raw patient id in {}",
            r.body
        );
        assert_eq!(r.account, "ACtest");
        assert_eq!(r.from, "+15005550006");
        // Basic auth: base64("ACtest:secret-token").
        assert_eq!(r.authorization, "Basic QUN0ZXN0OnNlY3JldC10b2tlbg==");
        assert!(
            r.key.starts_with("wardlink-") && r.key.contains("-sms-"),
            "{}",
            r.key
        );
    }
    assert_ne!(d[0].key, d[1].key);
    // Dashboards see the escalation, once.
    dash.until(|v| v["type"] == "alert" && v["id"] == id.as_str() && v["state"] == "escalated")
        .await?;

    // The acknowledgement closes the chain.
    wait_for_metric_eq(|| hub.metrics(), "wardlink_hub_escalations_open", 1).await?;
    dash.send(&format!(r#"{{"type":"ack","alert":"{id}"}}"#))
        .await?;
    dash.until(|v| v["type"] == "alert" && v["id"] == id.as_str() && v["state"] == "acknowledged")
        .await?;
    wait_for_metric_eq(|| hub.metrics(), "wardlink_hub_escalations_open", 0).await?;
    let escalated = dash
        .seen
        .iter()
        .filter(|v| v["id"] == id.as_str() && v["state"] == "escalated")
        .count();
    assert_eq!(escalated, 1);

    // Every decision and attempt is in the audit log, pseudonymised.
    let auditor = hub.token("aud", Role::Auditor, &[], Duration::from_secs(600));
    let auth = format!("Bearer {auditor}");
    let (status, log) = http_request(
        hub.running.http_addr,
        "/api/audit",
        &[("authorization", &auth)],
    )
    .await?;
    assert_eq!(status, 200);
    let actions: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["action"].as_str().map(str::to_owned))
        .collect();
    for want in ["alarm_escalated", "sms_queued", "sms_sent"] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} not in {actions:?}"
        );
    }
    assert!(!log.contains("bed-secret-17"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_watching_the_ward_skips_to_the_first_sms() -> anyhow::Result<()> {
    let sms = FakeSms::start().await?;
    // Ten minutes to the first step: an SMS within the test means the wait was skipped.
    let hub = hub_with(&sms, 600, 1200).await?;
    let edge = edge(&hub).await?;
    // A dashboard of another ward does not count as watching ward-a.
    let _elsewhere = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-b")).await?;
    let mut device = edge.device("mon-1", "bed-1").await?;
    device.publish(r#"{"hr":150}"#).await?;
    let d = delivered_until(&sms, |d| !d.is_empty()).await?;
    assert_eq!(d[0].to, CN);
    wait_for_metric(|| hub.metrics(), "wardlink_hub_escalations_open", 1).await?;

    // With a ward-a dashboard connected, a new alarm waits for its step.
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-a")).await?;
    let mut other = edge.device("mon-2", "bed-2").await?;
    other.publish(r#"{"hr":151}"#).await?;
    dash.until(|v| is(v, "alert", "bed-2") && v["priority"] == "high")
        .await?;
    // The chain has started (and the decision for it has been taken): still one SMS.
    wait_for_metric_eq(|| hub.metrics(), "wardlink_hub_escalations_open", 2).await?;
    let text = hub.metrics().await?;
    assert_eq!(
        metric(&text, "wardlink_hub_sms_queued_total"),
        Some(1),
        "{text}"
    );
    assert_eq!(sms.delivered().len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_and_a_restart_deliver_each_sms_exactly_once() -> anyhow::Result<()> {
    let sms = FakeSms::start().await?;
    sms.set(Mode::Fail);
    // Nobody watching: each alarm's first SMS is due at once; the second step is far away.
    let hub = hub_with(&sms, 600, 1200).await?;
    let edge = edge(&hub).await?;
    for i in 0..3 {
        let mut device = edge
            .device(&format!("mon-{i}"), &format!("bed-{i}"))
            .await?;
        device.publish(r#"{"hr":150}"#).await?;
    }
    // The provider fails: every message is attempted and retried.
    wait_for_metric(|| hub.metrics(), "wardlink_hub_sms_queued_total", 3).await?;
    wait_for_metric(|| hub.metrics(), "wardlink_hub_sms_retries_total", 4).await?;
    assert!(sms.delivered().is_empty());

    // The hub restarts in the middle of the outage.
    let (dir, config) = hub.stop().await;
    let hub = Hub::restart(dir, config).await?;
    // The provider accepts but answers after the hub's timeout: the hub retries the same
    // idempotency keys, and nothing is delivered twice.
    sms.set(Mode::Slow(Duration::from_millis(600)));
    wait_for_metric(|| hub.metrics(), "wardlink_hub_sms_retries_total", 3).await?;
    sms.set(Mode::Accept);
    wait_for_metric(|| hub.metrics(), "wardlink_hub_sms_sent_total", 3).await?;
    let delivered = sms.delivered();
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    let mut keys: Vec<&str> = delivered.iter().map(|r| r.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 3);
    assert!(delivered.iter().all(|r| r.to == CN));
    assert!(
        sms.requests().len() > 3 + 3,
        "retries happened: {:?}",
        sms.requests().len()
    );
    // No new decision after the restart: the chains resumed where they stood.
    let text = hub.metrics().await?;
    assert_eq!(
        metric(&text, "wardlink_hub_sms_queued_total"),
        Some(0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "wardlink_hub_sms_failed_total"),
        Some(0),
        "{text}"
    );
    // The outbox, as an admin sees it.
    let (status, body) = http_request(
        hub.running.http_addr,
        "/api/notifications",
        &[("authorization", &format!("Bearer {}", hub.admin()))],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let rows: Vec<Value> = serde_json::from_str(&body)?;
    assert_eq!(rows.len(), 3, "{body}");
    assert!(
        rows.iter().all(|r| r["state"] == "sent" && r["to"] == "cn"),
        "{body}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_is_reported_not_retried() -> anyhow::Result<()> {
    let sms = FakeSms::start().await?;
    sms.set(Mode::Reject);
    let hub = hub_with(&sms, 600, 1200).await?;
    let edge = edge(&hub).await?;
    let mut device = edge.device("mon-1", "bed-1").await?;
    device.publish(r#"{"hr":150}"#).await?;
    wait_for_metric(|| hub.metrics(), "wardlink_hub_sms_failed_total", 1).await?;
    let text = hub.metrics().await?;
    assert_eq!(
        metric(&text, "wardlink_hub_sms_retries_total"),
        Some(0),
        "{text}"
    );
    assert_eq!(sms.requests().len(), 1);
    let admin = format!("Bearer {}", hub.admin());
    let (status, body) = http_request(
        hub.running.http_addr,
        "/api/notifications",
        &[("authorization", &admin)],
    )
    .await?;
    assert_eq!(status, 200);
    let rows: Vec<Value> = serde_json::from_str(&body)?;
    assert_eq!(rows[0]["state"], "failed", "{body}");
    assert!(
        rows[0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("400"),
        "{body}"
    );
    // Nurses do not read the outbox.
    let nurse = format!("Bearer {}", hub.nurse("ward-a"));
    let (status, _) = http_request(
        hub.running.http_addr,
        "/api/notifications",
        &[("authorization", &nurse)],
    )
    .await?;
    assert_eq!(status, 403);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_cancels_an_sms_still_waiting_to_go_out() -> anyhow::Result<()> {
    let sms = FakeSms::start().await?;
    sms.set(Mode::Fail);
    let hub = hub_with(&sms, 600, 1200).await?;
    let edge = edge(&hub).await?;
    let mut device = edge.device("mon-1", "bed-1").await?;
    device.publish(r#"{"hr":150}"#).await?;
    // Nobody watching: queued at once, and retried while the provider fails.
    wait_for_metric(|| hub.metrics(), "wardlink_hub_sms_retries_total", 1).await?;
    let mut dash = Dashboard::connect(&hub.ws_url("since=0"), &hub.nurse("ward-a")).await?;
    let alert = dash
        .until(|v| is(v, "alert", "bed-1") && v["priority"] == "high")
        .await?;
    let id = alert["id"].as_str().unwrap_or_default().to_owned();
    dash.send(&format!(r#"{{"type":"ack","alert":"{id}"}}"#))
        .await?;
    dash.until(|v| v["id"] == id.as_str() && v["state"] == "acknowledged")
        .await?;
    sms.set(Mode::Accept);
    wait_for_metric(|| hub.metrics(), "wardlink_hub_sms_cancelled_total", 1).await?;
    assert!(sms.delivered().is_empty(), "{:?}", sms.delivered());
    wait_for_metric_eq(|| hub.metrics(), "wardlink_hub_sms_pending", 0).await?;
    Ok(())
}
