//! A patient's own alarm settings, set at the hub, applied at the edge without a restart and
//! kept across one.

use std::time::Duration;

use wardlink_cloud::token::Role;
use wardlink_tests::{Dashboard, Edge, Hub, free_port, is, put_settings};

const STRICT_HR: &str = r#"{"limits":{"hr":{"low":45,"high":100,"low_extreme":30,"high_extreme":180,"delay_s":0,"hysteresis":5,"priority":"medium"}},"spo2_scale":2}"#;

async fn put(hub: &Hub, token: &str, patient: &str, body: &str) -> anyhow::Result<(u16, String)> {
    put_settings(hub.running.http_addr, token, patient, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_apply_at_the_edge_and_survive_its_restart() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub.edge("edge-a", "ward-a", |_| {}).await?;
    let doctor = hub.token("doc", Role::Doctor, &["ward-a"], Duration::from_secs(3600));
    let nurse = hub.nurse("ward-a");
    let other = hub.token(
        "doc-b",
        Role::Doctor,
        &["ward-b"],
        Duration::from_secs(3600),
    );
    let mut dash = Dashboard::connect(&hub.ws_url(""), &nurse).await?;
    let mut monitor = edge.device("mon-1", "bed-01").await?;
    monitor.publish(r#"{"hr":70}"#).await?;
    dash.until(|v| is(v, "vitals", "bed-01")).await?;

    // Refusals: no token, a nurse, another ward's doctor, an unknown patient, bad settings.
    assert_eq!(put(&hub, "x", "bed-01", STRICT_HR).await?.0, 401);
    assert_eq!(put(&hub, &nurse, "bed-01", STRICT_HR).await?.0, 403);
    assert_eq!(put(&hub, &other, "bed-01", STRICT_HR).await?.0, 404);
    assert_eq!(put(&hub, &doctor, "bed-99", STRICT_HR).await?.0, 404);
    let (status, body) = put(
        &hub,
        &doctor,
        "bed-01",
        &STRICT_HR.replace("\"high\":100", "\"high\":10"),
    )
    .await?;
    assert_eq!(status, 400);
    assert!(body.contains("hr.low"), "{body}");
    assert_eq!(put(&hub, &doctor, "bed-01", "{\"colour\":1}").await?.0, 400);

    let (status, _) = put(&hub, &doctor, "bed-01", STRICT_HR).await?;
    assert_eq!(status, 202);

    // HR 110 is normal on the ward's limits (130) and high on this patient's (100): keep
    // publishing until the edge has applied the settings and raises.
    let alert = loop {
        monitor.publish(r#"{"hr":110}"#).await?;
        tokio::select! {
            a = dash.until(|v| v["type"] == "alert" && v["kind"] == "hr_high") => break a?,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    assert!(
        alert["message"]
            .as_str()
            .is_some_and(|m| m.contains("> 100")),
        "{alert}"
    );

    // Kept on the edge's disk.
    let saved = std::fs::read_to_string(edge.config.edge.data_dir.join("patient_settings.json"))?;
    assert!(
        saved.contains("bed-01") && saved.contains("\"spo2_scale\": 2"),
        "{saved}"
    );

    // Back to normal (an open episode would be restored with its id after the restart and
    // prove nothing), then restart the edge: the settings are still in force.
    monitor.publish(r#"{"hr":70}"#).await?;
    dash.until(|v| v["type"] == "alert" && v["kind"] == "hr_high" && v["state"] == "resolved")
        .await?;
    let Edge {
        dir,
        mut config,
        running,
    } = edge;
    drop(monitor);
    running.shutdown();
    let mut running = running;
    running.wait().await?;
    config.mqtt.listen.set_port(free_port());
    let edge = Edge::start(dir, config).await?;
    let mut monitor = edge.device("mon-1", "bed-01").await?;
    monitor.publish(r#"{"hr":112}"#).await?;
    let again = dash
        .until(|v| v["type"] == "alert" && v["kind"] == "hr_high" && v["values"]["hr"] == 112.0)
        .await?;
    assert_eq!(again["state"], "raised");
    Ok(())
}
