//! Issue 17, first step: an edge that knows several hub replicas (`hub.addrs`) moves to the
//! next when its hub goes away, and its readings reach the dashboards there. The replicas here
//! share the hub directory's CA, keys and configuration but not a store (shared PostgreSQL
//! storage is the issue's next step): this checks the edge's side only.

use wardlink_tests::{Dashboard, Hub, PATIENCE, is};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_moves_to_the_next_replica_when_its_hub_goes_away() -> anyhow::Result<()> {
    let a = Hub::start().await?;
    // Replica B: the same hub directory (CA, keys, audit key), its own data directory.
    let b_data = tempfile::tempdir()?;
    let mut b_config = a.config.clone();
    b_config.hub.data_dir = b_data.path().to_path_buf();
    b_config.hub.http_listen = "127.0.0.1:0".parse()?;
    b_config.hub.quic_listen = "127.0.0.1:0".parse()?;
    let b = wardlink_cloud::start(b_config).await?;
    let b_quic = b.quic_addr.to_string();
    let edge = a
        .edge("edge-a", "ward-a", |c| {
            c.hub.addrs = vec![b_quic.clone()];
            c.hub.heartbeat_ms = 200;
        })
        .await?;
    let token = a.nurse("ward-a");
    let mut on_a = Dashboard::connect(&a.ws_url(""), &token).await?;
    let mut on_b = Dashboard::connect(&format!("ws://{}/ws", b.http_addr), &token).await?;
    let mut monitor = edge.device("mon-1", "bed-01").await?;

    // Connected to the first address: A stores and shows the reading.
    monitor.publish(r#"{"hr":71}"#).await?;
    let first = on_a.until(|v| is(v, "vitals", "bed-01")).await?;
    assert_eq!(first["values"]["hr"], 71.0);

    // A goes away; the edge keeps accepting readings and delivers them to B.
    drop(on_a);
    let _ = a.stop().await;
    monitor.publish(r#"{"hr":72}"#).await?;
    let moved = tokio::time::timeout(
        PATIENCE,
        on_b.until(|v| is(v, "vitals", "bed-01") && v["values"]["hr"] == 72.0),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the edge never reached replica B: {:?}", on_b.seen))??;
    assert_eq!(moved["ward"], "ward-a");
    // B never saw the reading A stored (A acknowledged it; the edge does not send it twice).
    assert!(
        !on_b
            .seen
            .iter()
            .any(|v| is(v, "vitals", "bed-01") && v["values"]["hr"] == 71.0),
        "{:?}",
        on_b.seen
    );
    b.shutdown();
    b.wait().await;
    Ok(())
}
