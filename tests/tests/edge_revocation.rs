//! `wardlink-cloud revoke`: a running hub closes the revoked edge's connection and refuses it
//! from then on, while other edges carry on; `--restore` lets it back, and what it held
//! meanwhile arrives.

use wardlink_tests::process::binary;
use wardlink_tests::{Dashboard, Hub, is, wait_for_metric, wait_for_metric_eq};

fn revoke(hub: &Hub, edge: &str, restore: bool) -> anyhow::Result<String> {
    let mut cmd = std::process::Command::new(binary("wardlink-cloud")?);
    cmd.arg("revoke").arg(hub.dir.path()).args(["--edge", edge]);
    if restore {
        cmd.arg("--restore");
    }
    let out = cmd.output()?;
    anyhow::ensure!(out.status.success(), "revoke failed: {out:?}");
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_edge_is_cut_off_at_once_and_refused() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let bad = hub.edge("edge-r", "ward-r", |_| {}).await?;
    let good = hub.edge("edge-g", "ward-r", |_| {}).await?;
    bad.wait_online().await?;
    good.wait_online().await?;
    let mut bad_device = bad.device("mon-r", "bed-r").await?;
    let mut good_device = good.device("mon-g", "bed-g").await?;
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-r")).await?;

    assert!(revoke(&hub, "edge-r", false)?.contains("edge edge-r revoked"));
    // The open connection is closed, and reconnects are refused.
    wait_for_metric_eq(|| bad.metrics(), "wardlink_edge_uplink_connected", 0).await?;
    wait_for_metric(
        || hub.metrics(),
        "wardlink_hub_edges_refused_total{reason=\"revoked\"}",
        2,
    )
    .await?;
    // Revoking twice changes nothing.
    assert!(revoke(&hub, "edge-r", false)?.contains("already revoked"));

    // The revoked edge keeps its readings; the other edge is undisturbed.
    bad_device.publish(r#"{"hr":81}"#).await?;
    good_device.publish(r#"{"hr":82}"#).await?;
    let v = dash.until(|v| v["type"] == "vitals").await?;
    assert!(
        is(&v, "vitals", "bed-g"),
        "only the good edge delivers: {v}"
    );

    // Restored, it reconnects by itself and delivers what it held.
    assert!(revoke(&hub, "edge-r", true)?.contains("edge edge-r restored"));
    bad.wait_online().await?;
    let v = dash.until(|v| is(v, "vitals", "bed-r")).await?;
    assert_eq!(v["values"]["hr"], 81.0);
    Ok(())
}
