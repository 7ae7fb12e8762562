//! Crash loop: the edge runs as a child process while a careful device (persistent session,
//! stable client id, 100 publishes in flight, re-sending what it has not seen acknowledged)
//! publishes uniquely stamped readings as fast as the edge acknowledges them. The edge is
//! killed with SIGKILL at random moments and started again on the same data directory and
//! address; the device reconnects by itself. At the end the hub must hold every reading the
//! device saw acknowledged ("acknowledged means durable"), and every reading found committed
//! in the outbox after a kill, each exactly once.
//!
//! `WARDLINK_CRASH_KILLS` sets the number of kills (default 50; the soak run uses 1000).
//! `WARDLINK_CRASH_EDGE` runs the edge through another command, e.g.
//! `"qemu-aarch64-static -L /usr/aarch64-linux-gnu target/aarch64-unknown-linux-gnu/release/wardlink-edge"`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rand::RngExt as _;
use wardlink_edge::config::EdgeConfig;
use wardlink_shared::wire::RecordBody;
use wardlink_tests::process::{EdgeProcess, binary};
use wardlink_tests::resending::ResendingDevice;
use wardlink_tests::{
    Device, Hub, free_port, metric, stamped, stored_readings, wait_for_metric_eq,
};

/// An enrolled edge (not started) with device `mon-1` for `bed-01`; returns its directory,
/// config and the device's password.
fn enrolled(hub: &Hub, edge: &str) -> anyhow::Result<(tempfile::TempDir, EdgeConfig, String)> {
    hub.enroll_edge_with_monitor(edge, "ward-c")
}

/// The edge program: the build's own, or the command in `WARDLINK_CRASH_EDGE`.
fn edge_program() -> anyhow::Result<Command> {
    match std::env::var("WARDLINK_CRASH_EDGE") {
        Ok(line) => {
            let mut words = line.split_whitespace();
            let mut cmd = Command::new(words.next().unwrap_or("wardlink-edge"));
            cmd.args(words);
            Ok(cmd)
        }
        Err(_) => Ok(Command::new(binary("wardlink-edge")?)),
    }
}

async fn start_edge(config: &Path, hub: &str, mqtt: SocketAddr) -> anyhow::Result<EdgeProcess> {
    EdgeProcess::start_program_on(edge_program()?, config, hub, None, mqtt).await
}

/// Timestamps of the readings committed in the outbox at `path`.
fn committed(path: &Path) -> anyhow::Result<BTreeSet<i64>> {
    Ok(wardlink_edge::outbox::inspect(path)?
        .into_iter()
        .filter_map(|r| match r.body {
            RecordBody::Vitals { reading, .. } => Some(reading.ts),
            _ => None,
        })
        .collect())
}

/// Starts the edge once more, lets it deliver everything, and returns how often the hub
/// stored each of `bed-01`'s readings.
async fn drained(
    hub: &Hub,
    config: &Path,
    mqtt: SocketAddr,
    device: &ResendingDevice,
) -> anyhow::Result<(EdgeProcess, std::collections::BTreeMap<i64, usize>)> {
    let edge = start_edge(config, &hub.running.quic_addr.to_string(), mqtt).await?;
    // What the device still holds is re-sent and acknowledged.
    device.settled().await?;
    wait_for_metric_eq(
        || edge.metrics(),
        "wardlink_edge_outbox_depth{lane=\"telemetry\"}",
        0,
    )
    .await?;
    wait_for_metric_eq(|| edge.metrics(), "wardlink_edge_outbox_held_records", 0).await?;
    let last = metric(&hub.metrics().await?, "wardlink_hub_last_event_seq").unwrap_or(0);
    let at_hub = stored_readings(&hub.ws_url("since=0"), &hub.admin(), "bed-01", last).await?;
    Ok((edge, at_hub))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_reading_and_stores_none_twice() -> anyhow::Result<()> {
    let kills: usize = std::env::var("WARDLINK_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let hub = Hub::start().await?;
    let (dir, cfg, password) = enrolled(&hub, "edge-c")?;
    let config = dir.path().join("edge.toml");
    let hub_addr = hub.running.quic_addr.to_string();
    let mqtt = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let device = ResendingDevice::start(mqtt, "mon-1", &password, "bed-01", 100);

    // Each reading's timestamp is its identity: base + n ms.
    let base =
        wardlink_shared::time::Millis::try_from(wardlink_tests::unix_now())? * 1000 - 3_600_000;
    let mut sent = 0i64;
    let mut found_committed: BTreeSet<i64> = BTreeSet::new();
    let mut acked_per_kill = Vec::with_capacity(kills);
    let mut rng = rand::rng();
    let started = std::time::Instant::now();

    for _ in 0..kills {
        let mut edge = start_edge(&config, &hub_addr, mqtt).await?;
        let acked_before = device.acked().len();
        let run_for = Duration::from_millis(rng.random_range(10..250));
        let publishing = async {
            loop {
                if device.try_publish(base + sent) {
                    sent += 1;
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        // The kill comes at a random moment, whatever is in flight.
        tokio::select! {
            () = publishing => {}
            () = tokio::time::sleep(run_for) => {}
        }
        edge.process.kill()?;
        acked_per_kill.push(device.acked().len() - acked_before);
        found_committed.extend(committed(&cfg.outbox_path())?);
    }

    let (_edge, at_hub) = drained(&hub, &config, mqtt, &device).await?;
    let acked = device.acked();
    assert!(
        !acked.is_empty() && !at_hub.is_empty(),
        "nothing was acknowledged or delivered at all"
    );
    let lost: Vec<_> = acked.iter().filter(|ts| !at_hub.contains_key(ts)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged to the device but never reached the hub: {lost:?}"
    );
    let twice: Vec<_> = at_hub.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let lost_committed: Vec<_> = found_committed
        .iter()
        .filter(|ts| !at_hub.contains_key(ts))
        .collect();
    assert!(
        lost_committed.is_empty(),
        "committed at a kill but never reached the hub: {lost_committed:?}"
    );
    let unknown: Vec<_> = at_hub.keys().filter(|ts| **ts >= base + sent).collect();
    assert!(
        unknown.is_empty(),
        "the hub holds readings never sent: {unknown:?}"
    );
    acked_per_kill.sort_unstable();
    eprintln!(
        "crash loop: {kills} kills in {:.1} s; {sent} readings published, {} acknowledged \
         (per kill median {} / max {}), {} re-sent after reconnects, {} at the hub; lost among \
         the acknowledged: {}, stored twice: {}",
        started.elapsed().as_secs_f64(),
        acked.len(),
        acked_per_kill[kills / 2],
        acked_per_kill[kills - 1],
        device.resent(),
        at_hub.len(),
        lost.len(),
        twice.len(),
    );
    Ok(())
}

/// 3,000 readings at QoS 1, every PUBACK received, then SIGKILL: after a restart all 3,000
/// reach the hub, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_burst_survives_sigkill() -> anyhow::Result<()> {
    const BURST: i64 = 3_000;
    let hub = Hub::start().await?;
    let (dir, _cfg, password) = enrolled(&hub, "edge-b")?;
    let config = dir.path().join("edge.toml");
    // No hub at first: everything the edge acknowledges is on its disk alone.
    let nowhere = format!("127.0.0.1:{}", wardlink_tests::process::free_udp_port());
    let mqtt = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut edge = start_edge(&config, &nowhere, mqtt).await?;
    let device = ResendingDevice::start(mqtt, "mon-1", &password, "bed-01", 100);
    let base =
        wardlink_shared::time::Millis::try_from(wardlink_tests::unix_now())? * 1000 - 3_600_000;
    for i in 0..BURST {
        device.publish(base + i).await;
    }
    device.settled().await?;
    assert_eq!(device.acked().len(), BURST as usize);
    edge.process.kill()?;

    let (_edge, at_hub) = drained(&hub, &config, mqtt, &device).await?;
    let missing: Vec<i64> = (0..BURST)
        .map(|i| base + i)
        .filter(|ts| !at_hub.contains_key(ts))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    let twice: Vec<_> = at_hub.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert_eq!(at_hub.len(), BURST as usize);
    Ok(())
}

/// SIGTERM is a clean stop: every reading the edge acknowledged is committed before it exits
/// (here with no hub to send to, so all of them are still in the outbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_every_accepted_reading() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let (dir, cfg, password) = enrolled(&hub, "edge-t")?;
    // No hub answers there.
    let nowhere = format!("127.0.0.1:{}", wardlink_tests::process::free_udp_port());
    let mut edge = EdgeProcess::start(&dir.path().join("edge.toml"), &nowhere).await?;
    let mut device = Device::connect(edge.mqtt, "mon-1", &password, "bed-01").await?;
    let base =
        wardlink_shared::time::Millis::try_from(wardlink_tests::unix_now())? * 1000 - 3_600_000;
    for i in 0..500 {
        device.publish(&stamped(72, base + i)).await?;
    }
    let status = edge.process.terminate()?;
    assert!(status.success(), "edge exited with {status}");
    let stored = committed(&cfg.outbox_path())?;
    let missing: Vec<i64> = (0..500)
        .map(|i| base + i)
        .filter(|ts| !stored.contains(ts))
        .collect();
    assert!(
        missing.is_empty(),
        "accepted but not committed: {missing:?}"
    );
    Ok(())
}
