//! Episodes survive an edge crash: the edge is killed with SIGKILL in the middle of an
//! acknowledged episode and started again on the same data directory. The episode is open
//! again at once under its id, still acknowledged by the same nurse; the condition persisting
//! raises nothing new, and its end resolves that same id at the hub. The hub sees one episode.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use wardlink_cloud::token::Role;
use wardlink_tests::process::EdgeProcess;
use wardlink_tests::{
    Dashboard, Device, Hub, PATIENCE, free_port, http_get, metric, wait_for_metric_eq,
};

async fn edge_alarms(edge: &EdgeProcess) -> anyhow::Result<Vec<Value>> {
    let v: Value = serde_json::from_str(&http_get(edge.admin, "/alarms").await?)?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// An edge process of ward-k with a monitor for bed-01 whose HR fell into the extreme, and a
/// nurse's hub dashboard that saw the episode raised.
struct Raised {
    hub: Hub,
    dir: tempfile::TempDir,
    cfg: wardlink_edge::config::EdgeConfig,
    mqtt: SocketAddr,
    password: String,
    edge: EdgeProcess,
    nurse: Dashboard,
    /// Held while the edge runs (its connection dies with the edge).
    _device: Device,
    id: String,
}

impl Raised {
    async fn start() -> anyhow::Result<Raised> {
        let hub = Hub::start().await?;
        let (dir, cfg, password) = hub.enroll_edge_with_monitor("edge-k", "ward-k")?;
        let mqtt = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let edge = EdgeProcess::start_on(
            &dir.path().join("edge.toml"),
            &hub.running.quic_addr.to_string(),
            mqtt,
        )
        .await?;
        let ann = hub.token("ann", Role::Nurse, &["ward-k"], Duration::from_secs(3600));
        let mut nurse = Dashboard::connect(&hub.ws_url(""), &ann).await?;
        let mut device = Device::connect(mqtt, "mon-1", &password, "bed-01").await?;
        // Falling through the alarm band into the extreme: raised at once.
        device.publish(r#"{"hr":38}"#).await?;
        device.publish(r#"{"hr":25}"#).await?;
        let raised = nurse
            .until(|v| v["type"] == "alert" && v["state"] == "raised")
            .await?;
        assert_eq!(raised["kind"], "hr_low");
        let id = raised["id"].as_str().unwrap_or_default().to_owned();
        Ok(Raised {
            hub,
            dir,
            cfg,
            mqtt,
            password,
            edge,
            nurse,
            _device: device,
            id,
        })
    }

    /// Starts the edge again on the same directory and address.
    async fn restart(&self) -> anyhow::Result<EdgeProcess> {
        EdgeProcess::start_on(
            &self.dir.path().join("edge.toml"),
            &self.hub.running.quic_addr.to_string(),
            self.mqtt,
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_episode_keeps_its_id_and_acknowledgement_across_kill_9() -> anyhow::Result<()> {
    let mut r = Raised::start().await?;
    let (id, nurse) = (r.id.clone(), &mut r.nurse);
    // The nurse acknowledges.
    nurse
        .send(&format!(r#"{{"type":"ack","alert":"{id}"}}"#))
        .await?;
    nurse
        .until(|v| v["type"] == "alert" && v["state"] == "acknowledged")
        .await?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !edge_alarms(&r.edge)
        .await?
        .iter()
        .any(|e| e["id"] == id.as_str() && e["acknowledged_by"] == "ann")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edge never applied the acknowledgement"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What the edge shows is committed (or being committed): wait for the commit, then kill.
    wait_for_metric_eq(|| r.edge.metrics(), "wardlink_edge_alarm_state_unsaved", 0).await?;
    r.edge.process.kill()?;

    // Started again: the episode is open under its id before any reading, still acknowledged.
    let edge = r.restart().await?;
    let alarms = edge_alarms(&edge).await?;
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0]["id"], id.as_str());
    assert_eq!(alarms[0]["kind"], "hr_low");
    assert_eq!(alarms[0]["acknowledged_by"], "ann");

    // The condition persists: nothing new. Then it ends: that same episode resolves.
    let mut device = Device::connect(r.mqtt, "mon-1", &r.password, "bed-01").await?;
    // (The same value as before: a new worst would be shown as an update of the episode.)
    device.publish(r#"{"hr":25}"#).await?;
    device.publish(r#"{"hr":25}"#).await?;
    device.publish(r#"{"hr":70}"#).await?;
    let resolved = r
        .nurse
        .until(|v| v["type"] == "alert" && v["state"] == "resolved")
        .await?;
    assert_eq!(resolved["id"], id.as_str(), "{:?}", r.nurse.seen);
    // Resolved by the edge's reading, not closed by the hub for want of it.
    assert!(
        !resolved["message"]
            .as_str()
            .is_some_and(|m| m.contains("after its restart")),
        "{resolved}"
    );
    let alerts: Vec<&Value> = r
        .nurse
        .seen
        .iter()
        .filter(|v| v["type"] == "alert")
        .collect();
    assert!(
        alerts.iter().all(|v| v["id"] == id.as_str()),
        "another episode appeared: {alerts:?}"
    );
    let raised = alerts.iter().filter(|v| v["state"] == "raised").count();
    assert_eq!(raised, 1, "raised again after the restart: {alerts:?}");
    // The restarted edge produced exactly one alarm event: the resolution.
    assert_eq!(
        metric(&edge.metrics().await?, "wardlink_edge_alarm_events_total"),
        Some(1)
    );
    assert!(edge_alarms(&edge).await?.is_empty());
    Ok(())
}

/// An edge that comes back without its state (its SD card replaced, or the state unreadable)
/// tells the hub which episodes it holds open, none: the hub resolves the old ones rather
/// than keep them open for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_closes_what_a_restarted_edge_no_longer_holds_open() -> anyhow::Result<()> {
    let mut r = Raised::start().await?;
    let id = r.id.clone();
    wait_for_metric_eq(
        || r.edge.metrics(),
        "wardlink_edge_outbox_depth{lane=\"alarms\"}",
        0,
    )
    .await?;
    r.edge.process.kill()?;

    // A new disk: no outbox, no state. The device registry is configuration: kept.
    std::fs::remove_file(r.cfg.outbox_path())?;
    let _edge = r.restart().await?;
    let closed = r
        .nurse
        .until(|v| v["type"] == "alert" && v["id"] == id.as_str() && v["state"] == "resolved")
        .await?;
    assert!(
        closed["message"]
            .as_str()
            .is_some_and(|m| m.contains("after its restart")),
        "{closed}"
    );
    Ok(())
}

/// An edge restarted while the hub is down, with an alarm raised after the restart: the hub
/// gets the edge's "episodes open" and the new raise in one delivery, and applies them in
/// order (the new episode is not closed as one the edge does not hold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raise_after_a_restart_survives_the_hubs_reconciliation() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let edge = hub
        .edge("edge-k", "ward-k", |c| c.hub.heartbeat_ms = 200)
        .await?;
    let (hub_dir, hub_config) = hub.stop().await;
    let wardlink_tests::Edge {
        dir,
        mut config,
        mut running,
    } = edge;
    running.shutdown();
    running.wait().await?;
    config.mqtt.listen.set_port(free_port());
    let edge = wardlink_tests::Edge::start(dir, config).await?;
    let mut monitor = edge.device("mon-1", "bed-01").await?;
    monitor.publish(r#"{"hr":38}"#).await?;
    monitor.publish(r#"{"hr":25}"#).await?;
    wait_for_metric_eq(|| edge.metrics(), "wardlink_edge_alarm_events_total", 1).await?;

    let hub = Hub::resume(hub_dir, hub_config).await?;
    let mut nurse = Dashboard::connect(&hub.ws_url("since=0"), &hub.nurse("ward-k")).await?;
    let raised = nurse
        .until(|v| v["type"] == "alert" && v["state"] == "raised")
        .await?;
    // Everything the edge sent is stored: no resolve came with it.
    wait_for_metric_eq(
        || edge.metrics(),
        "wardlink_edge_outbox_depth{lane=\"alarms\"}",
        0,
    )
    .await?;
    let auth = format!("Bearer {}", hub.nurse("ward-k"));
    let (status, body) = wardlink_tests::http_request(
        hub.running.http_addr,
        "/api/wards/ward-k/history",
        &[("authorization", &auth)],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let history: Value = serde_json::from_str(&body)?;
    let states: Vec<&Value> = history["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|v| v["id"] == raised["id"])
                .map(|v| &v["state"])
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !states.is_empty() && states.iter().all(|s| *s != "resolved"),
        "the new episode was closed: {states:?}"
    );
    Ok(())
}
