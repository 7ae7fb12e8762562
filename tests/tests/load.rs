//! The load generator against the real binaries, small: every reading published by many
//! devices at once reaches every dashboard exactly once, and every MQTT subscriber on the
//! edge's broker gets its own patient's readings exactly once. Latency is reported by
//! `wardlink-bench`, never asserted here.

use std::time::Duration;

use wardlink_tests::bench::run::{Load, connect_devices, phase};
use wardlink_tests::bench::systems::Wardlink;

const PATIENTS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_reaches_every_receiver_once() -> anyhow::Result<()> {
    let wardlink = Wardlink::start(PATIENTS, true, "").await?;
    let devices = connect_devices(wardlink.edge.mqtt, &wardlink.devices).await?;
    let load = Load {
        rate_hz: 10.0,
        duration: Duration::from_secs(3),
        warmup: Duration::from_secs(1),
    };

    let dashboards = wardlink.dashboards(3);
    let (p, devices) = phase(
        "wardlink",
        "publish -> dashboard",
        devices,
        &dashboards,
        load,
        &wardlink.watched(),
    )
    .await?;
    assert_eq!(p.sent, (PATIENTS * 30) as u64, "{p:?}");
    assert_eq!(p.expected, p.sent * 3, "{p:?}");
    assert_eq!(
        (p.delivered, p.lost, p.duplicated),
        (p.expected, 0, 0),
        "{p:?}"
    );
    assert!(
        p.latency.count > 0 && p.latency.count < p.delivered,
        "warm-up excluded: {p:?}"
    );
    assert_eq!(p.processes.len(), 2);
    assert!(p.processes.iter().all(|u| u.peak_rss_mib > 1.0), "{p:?}");

    let subscribers = wardlink.subscribers();
    let (p, _) = phase(
        "wardlink-edge broker",
        "publish -> MQTT subscriber",
        devices,
        &subscribers,
        load,
        &wardlink.watched()[..1],
    )
    .await?;
    assert_eq!(p.sent, (PATIENTS * 30) as u64, "{p:?}");
    // One subscriber per patient: each expects its own patient's readings only.
    assert_eq!(
        (p.expected, p.delivered, p.lost, p.duplicated),
        (p.sent, p.sent, 0, 0),
        "{p:?}"
    );
    Ok(())
}
