//! Crash loop: the edge runs as a child process under a steady stream of readings, each with a
//! unique timestamp, and is killed with SIGKILL at random moments, then started again on the
//! same data directory. At the end the hub must hold every reading the edge had committed
//! (found in its outbox file after each kill, or already acknowledged), each exactly once.
//!
//! `WARDLINK_CRASH_KILLS` sets the number of kills (default 50; the soak run uses 1000).

use std::collections::BTreeSet;
use std::time::Duration;

use rand::RngExt as _;
use wardlink_edge::config::EdgeConfig;
use wardlink_shared::wire::RecordBody;
use wardlink_shared::{DeviceId, PatientId};
use wardlink_tests::process::EdgeProcess;
use wardlink_tests::{Device, Hub, metric, stamped, stored_readings, wait_for_metric_eq};

/// An enrolled edge (not started) with device `mon-1` for `bed-01`; returns its directory,
/// config and the device's password.
fn enrolled(hub: &Hub, edge: &str) -> anyhow::Result<(tempfile::TempDir, EdgeConfig, String)> {
    let (dir, cfg) = hub.enroll_edge(edge, "ward-c", |_| {})?;
    let password = wardlink_edge::broker::add_device(
        &cfg.devices_path(),
        DeviceId::new("mon-1")?,
        PatientId::new("bed-01")?,
        cfg.mqtt.max_devices,
    )?;
    Ok((dir, cfg, password))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_committed_reading_and_stores_none_twice() -> anyhow::Result<()> {
    let kills: usize = std::env::var("WARDLINK_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let hub = Hub::start().await?;
    let (dir, cfg, password) = enrolled(&hub, "edge-c")?;
    let config_path = dir.path().join("edge.toml");
    let hub_addr = hub.running.quic_addr.to_string();

    // Each reading's timestamp is its identity: base + n ms.
    let base =
        wardlink_shared::time::Millis::try_from(wardlink_tests::unix_now())? * 1000 - 3_600_000;
    let mut sent = 0i64;
    let mut accepted: BTreeSet<i64> = BTreeSet::new();
    let mut committed: BTreeSet<i64> = BTreeSet::new();
    // The timestamps each round sent, [start, end), and how long it ran until the kill.
    let mut rounds = Vec::with_capacity(kills);
    let mut rng = rand::rng();
    let started = std::time::Instant::now();

    for _ in 0..kills {
        let mut edge = EdgeProcess::start(&config_path, &hub_addr).await?;
        let mut device = Device::connect(edge.mqtt, "mon-1", &password, "bed-01").await?;
        let first = base + sent;
        let run_for = Duration::from_millis(rng.random_range(10..250));
        let publishing = async {
            loop {
                let ts = base + sent;
                sent += 1;
                if device.publish(&stamped(72, ts)).await.is_err() {
                    return;
                }
                accepted.insert(ts);
            }
        };
        // The kill comes at a random moment, whatever is in flight.
        let round_started = std::time::Instant::now();
        tokio::select! {
            () = publishing => {}
            () = tokio::time::sleep(run_for) => {}
        }
        edge.process.kill()?;
        drop(device);
        rounds.push((first..base + sent, round_started.elapsed()));
        for record in wardlink_edge::outbox::inspect(&cfg.outbox_path())? {
            if let RecordBody::Vitals { reading, .. } = record.body {
                committed.insert(reading.ts);
            }
        }
    }

    // A last start drains the outbox.
    let edge = EdgeProcess::start(&config_path, &hub_addr).await?;
    wait_for_metric_eq(
        || edge.metrics(),
        "wardlink_edge_outbox_depth{lane=\"telemetry\"}",
        0,
    )
    .await?;
    wait_for_metric_eq(|| edge.metrics(), "wardlink_edge_outbox_held_records", 0).await?;

    let last = metric(&hub.metrics().await?, "wardlink_hub_last_event_seq").unwrap_or(0);
    let at_hub = stored_readings(&hub.ws_url("since=0"), &hub.admin(), "bed-01", last).await?;

    assert!(
        !committed.is_empty() && !at_hub.is_empty(),
        "nothing was committed or delivered at all"
    );
    let twice: Vec<_> = at_hub.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let lost_committed: Vec<_> = committed
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

    // The window a kill loses: readings the broker acknowledged that never reached the hub.
    let lost: BTreeSet<i64> = accepted
        .iter()
        .filter(|ts| !at_hub.contains_key(ts))
        .copied()
        .collect();
    // Commits and deliveries keep seq order, so what a kill loses is the tail of its round:
    // no reading of a round is lost while a later one of the same round survived.
    for (range, _) in &rounds {
        if let Some(first_lost) = lost.range(range.clone()).next() {
            let survivor = at_hub.range(first_lost..&range.end).next();
            assert!(
                survivor.is_none(),
                "reading {first_lost} was lost but the later {survivor:?} of the same run survived"
            );
        }
    }
    let mut lost_per_kill: Vec<usize> = rounds
        .iter()
        .map(|(r, _)| lost.range(r.clone()).count())
        .collect();
    if let Some((worst, (range, ran))) = rounds
        .iter()
        .enumerate()
        .max_by_key(|(_, (r, _))| lost.range(r.clone()).count())
    {
        eprintln!(
            "crash loop: the worst kill (round {worst}) lost {} of the {} readings acknowledged \
             in its {:.0} ms",
            lost.range(range.clone()).count(),
            accepted.range(range.clone()).count(),
            ran.as_secs_f64() * 1000.0
        );
    }
    lost_per_kill.sort_unstable();
    eprintln!(
        "crash loop: {kills} kills, {} readings acknowledged by the broker, {} reached the hub, \
         {} of them found committed after a kill; lost (acknowledged by the broker, never \
         committed): {} in all, per kill median {} / p90 {} / p99 {} / max {} (in {:.1} s)",
        accepted.len(),
        at_hub.len(),
        committed.len(),
        lost.len(),
        lost_per_kill[kills / 2],
        lost_per_kill[kills * 9 / 10],
        lost_per_kill[kills * 99 / 100],
        lost_per_kill[kills - 1],
        started.elapsed().as_secs_f64(),
    );
    Ok(())
}

/// SIGTERM is a clean stop: every reading the broker acknowledged is committed before the
/// edge exits (here with no hub to send to, so all of them are still in the outbox).
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
    let committed: BTreeSet<i64> = wardlink_edge::outbox::inspect(&cfg.outbox_path())?
        .into_iter()
        .filter_map(|r| match r.body {
            RecordBody::Vitals { reading, .. } => Some(reading.ts),
            _ => None,
        })
        .collect();
    let missing: Vec<i64> = (0..500)
        .map(|i| base + i)
        .filter(|ts| !committed.contains(ts))
        .collect();
    assert!(
        missing.is_empty(),
        "accepted but not committed: {missing:?}"
    );
    Ok(())
}
