//! The network between edge and hub fails in every way at once: a lossy, reordering link, a
//! partition long enough for the hub to mark the edge offline, and a hub killed with SIGKILL
//! and restarted mid-stream. Every reading the edge accepted reaches the hub exactly once, and
//! the ward's dashboards are told when the edge goes offline and comes back.

use std::time::Duration;

use serde_json::Value;
use wardlink_cloud::config::CloudConfig;
use wardlink_cloud::pki;
use wardlink_cloud::token::Role;
use wardlink_shared::{EdgeId, WardId};
use wardlink_tests::process::HubProcess;
use wardlink_tests::relay::{Mode, Relay};
use wardlink_tests::{
    Dashboard, Device, Edge, exactly_once, init_hub_dir, metric, sign_token, stamped,
    stored_readings, unix_now, wait_for_metric_eq,
};

fn edge_event(v: &Value, state: &str) -> bool {
    v["type"] == "edge" && v["edge"] == "edge-p" && v["state"] == state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_links_partitions_and_a_killed_hub_lose_and_duplicate_nothing() -> anyhow::Result<()>
{
    let (_hub_dir, hub_toml) = init_hub_dir()?;
    // A short offline time so the partition is noticed within the test.
    let text = std::fs::read_to_string(&hub_toml)?;
    std::fs::write(
        &hub_toml,
        text.replacen("[hub]\n", "[hub]\nedge_offline_after_ms = 1500\n", 1),
    )?;
    let hub_config = CloudConfig::load_with_env(&hub_toml, &Default::default())?;
    let mut hub = HubProcess::start(&hub_toml).await?;
    let relay = Relay::start(hub.quic).await?;

    let edge_dir = tempfile::tempdir()?;
    let edge_toml = pki::enroll(
        &hub_config,
        &EdgeId::new("edge-p")?,
        &WardId::new("ward-p")?,
        edge_dir.path(),
    )?;
    let env = [
        ("WARDLINK_MQTT_LISTEN", "127.0.0.1:0".to_owned()),
        ("WARDLINK_MQTT_TLS_LISTEN", "127.0.0.1:0".into()),
        ("WARDLINK_ADMIN_LISTEN", "127.0.0.1:0".into()),
        ("WARDLINK_HUB_ADDR", relay.addr.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut edge_config = wardlink_edge::config::EdgeConfig::load_with_env(&edge_toml, &env)?;
    edge_config.hub.heartbeat_ms = 200;
    let edge = Edge::start(edge_dir, edge_config).await?;
    edge.wait_online().await?;
    let mut device = edge.device("mon-1", "bed-01").await?;
    let token = sign_token(
        &hub_config,
        "nurse",
        Role::Nurse,
        &["ward-p"],
        unix_now(),
        Duration::from_secs(3600),
    );
    let mut dash = Dashboard::connect(&hub.ws_url("since=0"), &token).await?;
    dash.until(|v| edge_event(v, "online")).await?;

    let base = i64::try_from(unix_now())? * 1000 - 3_600_000;
    let mut sent = 0i64;
    let mut publish = async |device: &mut Device, n: i64| -> anyhow::Result<()> {
        for _ in 0..n {
            device.publish(&stamped(75, base + sent)).await?;
            sent += 1;
        }
        Ok(())
    };

    // A clean link, then a lossy and reordering one.
    publish(&mut device, 200).await?;
    relay.set(Mode::Lossy {
        drop_percent: 10,
        reorder: true,
    });
    publish(&mut device, 400).await?;

    // A partition: the hub notices the silence and tells the ward; readings queue at the edge.
    relay.set(Mode::Cut);
    publish(&mut device, 300).await?;
    dash.until(|v| edge_event(v, "offline")).await?;
    relay.set(Mode::Pass);
    dash.until(|v| edge_event(v, "online")).await?;

    // The hub is killed mid-stream and comes back on the same ports and data.
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let killer = async {
        // Once the stream is under way.
        let _ = (&mut rx).await;
        hub.kill_and_restart().await
    };
    let streaming = async {
        publish(&mut device, 150).await?;
        let _ = tx.send(());
        publish(&mut device, 450).await
    };
    let (killed, streamed) = tokio::join!(killer, streaming);
    killed?;
    streamed?;
    assert!(
        relay
            .stats
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
            && relay
                .stats
                .reordered
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0,
        "the relay dropped and reordered datagrams"
    );

    // Everything drains; the hub holds each reading exactly once.
    wait_for_metric_eq(
        || edge.metrics(),
        "wardlink_edge_outbox_depth{lane=\"telemetry\"}",
        0,
    )
    .await?;
    let last = metric(&hub.metrics().await?, "wardlink_hub_last_event_seq").unwrap_or(0);
    let at_hub = stored_readings(&hub.ws_url("since=0"), &token, "bed-01", last).await?;
    exactly_once(&at_hub, (0..sent).map(|i| base + i))?;
    Ok(())
}
