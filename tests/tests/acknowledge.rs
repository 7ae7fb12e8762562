//! Acknowledging from a dashboard: authorised by ward, seen by every dashboard with `by`,
//! and applied at the edge, so edge and hub agree on the alarm's state.

use std::time::Duration;

use wardlink_cloud::token::Role;
use wardlink_tests::{Dashboard, Hub, http_get};

async fn edge_alarms(edge: &wardlink_tests::Edge) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_str(
        &http_get(edge.running.admin_addr, "/alarms").await?,
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_reaches_other_dashboards_and_the_edge() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub.edge("edge-a", "ward-a", |_| {}).await?;
    let ann = hub.token("ann", Role::Nurse, &["ward-a"], Duration::from_secs(3600));
    let bob = hub.token("bob", Role::Doctor, &["ward-a"], Duration::from_secs(3600));
    let eve = hub.token("eve", Role::Nurse, &["ward-b"], Duration::from_secs(3600));
    let mut nurse = Dashboard::connect(&hub.ws_url(""), &ann).await?;
    let mut doctor = Dashboard::connect(&hub.ws_url(""), &bob).await?;
    let mut other_ward = Dashboard::connect(&hub.ws_url(""), &eve).await?;
    let mut monitor = edge.device("mon-1", "bed-01").await?;

    // Falling through the alarm band into the extreme: raised at once.
    monitor.publish(r#"{"hr":38}"#).await?;
    monitor.publish(r#"{"hr":25}"#).await?;
    let raised = nurse.until(|v| v["type"] == "alert").await?;
    assert_eq!(
        (raised["kind"].as_str(), raised["state"].as_str()),
        (Some("hr_low"), Some("raised"))
    );
    let id = raised["id"].as_str().unwrap_or_default().to_owned();

    // Someone from another ward cannot acknowledge it, nor learn that it exists.
    other_ward
        .send(&format!(r#"{{"type":"ack","alert":"{id}"}}"#))
        .await?;
    let refused = other_ward.until(|v| v["type"] == "error").await?;
    assert_eq!(refused["error"], "unknown_alert");
    other_ward
        .send(r#"{"type":"ack","alert":"no-such-alert"}"#)
        .await?;
    assert_eq!(
        other_ward.until(|v| v["type"] == "error").await?["error"],
        "unknown_alert"
    );

    // The nurse acknowledges; the doctor sees it, with who.
    nurse
        .send(&format!(r#"{{"type":"ack","alert":"{id}"}}"#))
        .await?;
    let acked = doctor
        .until(|v| v["type"] == "alert" && v["state"] == "acknowledged")
        .await?;
    assert_eq!(acked["id"], id.as_str());
    assert_eq!(acked["by"], "ann");
    assert_eq!(acked["kind"], "hr_low");
    assert!(acked["seq"].as_u64() > raised["seq"].as_u64());
    let own = nurse
        .until(|v| v["type"] == "alert" && v["state"] == "acknowledged")
        .await?;
    assert_eq!(own["by"], "ann");

    // The edge applied it: its active episode names who acknowledged.
    let deadline = tokio::time::Instant::now() + wardlink_tests::PATIENCE;
    loop {
        let alarms = edge_alarms(&edge).await?;
        let episode = alarms
            .as_array()
            .and_then(|a| a.iter().find(|e| e["id"] == id.as_str()))
            .cloned();
        if episode
            .as_ref()
            .is_some_and(|e| e["acknowledged_by"] == "ann")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "edge never applied the ack: {alarms}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Back to normal: resolved everywhere; acknowledging now is refused.
    monitor.publish(r#"{"hr":70}"#).await?;
    let resolved = doctor
        .until(|v| v["type"] == "alert" && v["state"] == "resolved")
        .await?;
    assert_eq!(resolved["id"], id.as_str());
    nurse
        .send(&format!(r#"{{"type":"ack","alert":"{id}"}}"#))
        .await?;
    assert_eq!(
        nurse.until(|v| v["type"] == "error").await?["error"],
        "resolved"
    );
    assert!(
        other_ward
            .seen
            .iter()
            .all(|v| v["type"] == "error" || v["ward"] == "ward-b")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_is_announced_and_applied_at_the_edge() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub
        .edge("edge-a", "ward-a", |c| {
            c.alarms.hr.delay_s = 0;
            c.silence.max_high_s = 0;
        })
        .await?;
    let ann = hub.token("ann", Role::Nurse, &["ward-a"], Duration::from_secs(3600));
    let eve = hub.token("eve", Role::Nurse, &["ward-b"], Duration::from_secs(3600));
    let mut nurse = Dashboard::connect(&hub.ws_url(""), &ann).await?;
    let mut watcher = Dashboard::connect(&hub.ws_url(""), &ann).await?;
    let mut other_ward = Dashboard::connect(&hub.ws_url(""), &eve).await?;
    let mut monitor = edge.device("mon-1", "bed-01").await?;
    monitor.publish(r#"{"hr":70}"#).await?;
    nurse.until(|v| v["type"] == "vitals").await?;

    // Refused: another ward's patient, an unknown patient, no reason, too long.
    other_ward
        .send(r#"{"type":"silence","patient":"bed-01","minutes":5,"reason":"x"}"#)
        .await?;
    let refused = other_ward.until(|v| v["type"] == "error").await?;
    assert_eq!(refused["error"], "unknown_patient");
    let bad = [
        (
            r#"{"type":"silence","patient":"bed-99","minutes":5,"reason":"x"}"#,
            "unknown_patient",
        ),
        (
            r#"{"type":"silence","patient":"bed-01","minutes":5,"reason":" "}"#,
            "invalid",
        ),
        (
            r#"{"type":"silence","patient":"bed-01","minutes":600,"reason":"x"}"#,
            "invalid",
        ),
    ];
    for (msg, error) in bad {
        nurse.send(msg).await?;
        assert_eq!(
            nurse.until(|v| v["type"] == "error").await?["error"],
            error,
            "{msg}"
        );
    }

    nurse
        .send(r#"{"type":"silence","patient":"bed-01","minutes":5,"reason":"washing"}"#)
        .await?;
    let announced = watcher.until(|v| v["type"] == "silence").await?;
    assert_eq!(announced["patient"], "bed-01");
    assert_eq!(announced["by"], "ann");
    assert_eq!(announced["reason"], "washing");
    assert!(
        announced["until"]
            .as_str()
            .is_some_and(|u| u.ends_with('Z'))
    );
    assert!(announced["seq"].as_u64().is_some());

    // The edge applies it: the next medium alarm is marked silenced; a high one (max_high_s = 0
    // on this edge) is not. Keep publishing until the command has reached the edge.
    let medium = loop {
        monitor.publish(r#"{"hr":150}"#).await?;
        let alert = watcher.until(|v| v["type"] == "alert").await?;
        if alert["silenced"] == true {
            break alert;
        }
        // Raised before the silence arrived: back to normal and try again.
        monitor.publish(r#"{"hr":70}"#).await?;
        watcher
            .until(|v| v["type"] == "alert" && v["state"] == "resolved")
            .await?;
    };
    assert_eq!(medium["priority"], "medium");
    monitor.publish(r#"{"hr":190}"#).await?;
    let high = watcher
        .until(|v| v["type"] == "alert" && v["priority"] == "high")
        .await?;
    assert!(high.get("silenced").is_none(), "{high}");
    assert!(other_ward.seen.iter().all(|v| v["type"] == "error"));
    Ok(())
}
