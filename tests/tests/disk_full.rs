//! A full disk does not silence the ward. The edge's data directory is a small tmpfs, filled to
//! the last byte while the hub is unreachable: commits fail, readings are held in memory, the
//! edge keeps running; an alarm raised then still reaches the dashboard. Once space returns the
//! edge recovers by itself and every reading arrives, once.
//!
//! Mounting a tmpfs needs root (CI runs as root); elsewhere the test says so and passes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use wardlink_tests::relay::Mode;
use wardlink_tests::{
    Dashboard, Hub, exactly_once, http_get, metric, stamped, stored_readings, wait_for_metric,
    wait_for_metric_eq,
};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> anyhow::Result<Option<Tmpfs>> {
        let uid = Command::new("id").arg("-u").output()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Ok(None);
        }
        let dir = tempfile::tempdir()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()?;
        anyhow::ensure!(status.success(), "mount -t tmpfs failed: {status}");
        Ok(Some(Tmpfs { dir }))
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the filesystem of `dir` until the disk refuses; returns the filler file.
fn fill(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path)?;
    let block = vec![0xa5u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&block) {
            anyhow::ensure!(
                e.raw_os_error() == Some(28),
                "expected ENOSPC while filling, got {e}"
            );
            break;
        }
    }
    // Single bytes too, so not even a page is left.
    while f.write_all(&[0]).is_ok() {}
    let _ = f.sync_all();
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_alarms_flowing_and_recovers() -> anyhow::Result<()> {
    let Some(tmpfs) = Tmpfs::mount("8m")? else {
        eprintln!("disk_full: not root, cannot mount a tmpfs; skipped");
        return Ok(());
    };
    let hub = Hub::start().await?;
    let data_dir = tmpfs.path().join("edge-data");
    let (relay, edge) = hub
        .edge_behind_relay("edge-f", "ward-f", |cfg| cfg.edge.data_dir = data_dir)
        .await?;
    relay.set(Mode::Pass);
    edge.wait_online().await?;
    let mut device = edge.device("mon-1", "bed-01").await?;
    let mut earlier = edge.device("mon-2", "bed-02").await?;
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-f")).await?;

    // Hub unreachable long enough for the edge to drop the connection; an alarm is committed
    // and waits on disk for the hub.
    relay.set(Mode::Cut);
    wait_for_metric_eq(|| edge.metrics(), "wardlink_edge_uplink_connected", 0).await?;
    earlier.publish(r#"{"hr":200}"#).await?;
    wait_for_metric(
        || edge.metrics(),
        "wardlink_edge_outbox_committed_total{lane=\"alarms\"}",
        1,
    )
    .await?;

    // The disk fills: the edge must hold in memory what it accepts. Nothing can be made
    // durable (no disk, no hub), so nothing is acknowledged yet: the device keeps it too.
    // redb first fills the free pages its file already has (how many depends on what was
    // written before: the alarm engine's state, too), so readings go on until a commit fails.
    let filler = fill(tmpfs.path())?;
    let base = i64::try_from(wardlink_tests::unix_now())? * 1000 - 3_600_000;
    let committed = "wardlink_edge_outbox_committed_total{lane=\"telemetry\"}";
    let mut sent = 0i64;
    loop {
        let before = metric(&edge.metrics().await?, committed).unwrap_or(0);
        device.publish_nowait(&stamped(74, base + sent)).await?;
        sent += 1;
        // One at a time: each is committed (room was left in the file) or the commit fails.
        let deadline = tokio::time::Instant::now() + wardlink_tests::PATIENCE;
        let failing = loop {
            let m = edge.metrics().await?;
            if metric(&m, "wardlink_edge_outbox_failing") == Some(1) {
                break true;
            }
            if metric(&m, committed).unwrap_or(0) > before {
                break false;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no commit, no failure"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        if failing {
            break;
        }
        anyhow::ensure!(sent < 20_000, "20,000 readings fitted on a full disk");
    }
    // (redb may still find room in its file for a first small commit.)
    wait_for_metric(|| edge.metrics(), "wardlink_edge_outbox_held_records", 1).await?;

    // The link returns, the disk is still full: the edge reconnects, the committed alarm and a
    // new one arrive. (The readings wait: committed telemetry cannot be read back while the
    // database is being reopened, so the hub cannot store them yet, and nothing is
    // acknowledged to the device until one of the two has them.)
    relay.set(Mode::Pass);
    device.publish_nowait(r#"{"hr":200}"#).await?;
    dash.until(|v| v["type"] == "alert" && v["patient"] == "bed-02" && v["kind"] == "hr_high")
        .await?;
    let alert = dash
        .until(|v| v["type"] == "alert" && v["patient"] == "bed-01" && v["kind"] == "hr_high")
        .await?;
    assert_eq!(alert["state"], "raised");
    // (Once the hub has acknowledged what was held, the edge needs no disk for it: commits
    // may succeed again before space returns.)
    assert!(http_get(edge.running.admin_addr, "/healthz").await.is_ok());

    // Space returns: the edge recovers by itself and everything arrives exactly once.
    std::fs::remove_file(&filler)?;
    wait_for_metric_eq(|| edge.metrics(), "wardlink_edge_outbox_failing", 0).await?;
    wait_for_metric_eq(|| edge.metrics(), "wardlink_edge_outbox_held_records", 0).await?;
    wait_for_metric_eq(
        || edge.metrics(),
        "wardlink_edge_outbox_depth{lane=\"telemetry\"}",
        0,
    )
    .await?;
    wait_for_metric(
        || hub.metrics(),
        "wardlink_hub_records_stored_total{lane=\"telemetry\"}",
        sent + 1,
    )
    .await?;
    let last = metric(&hub.metrics().await?, "wardlink_hub_last_event_seq").unwrap_or(0);
    let at_hub =
        stored_readings(&hub.ws_url("since=0"), &hub.nurse("ward-f"), "bed-01", last).await?;
    exactly_once(&at_hub, (0..sent).map(|i| base + i))?;
    let text = edge.metrics().await?;
    assert!(metric(&text, "wardlink_edge_outbox_errors_total").unwrap_or(0) > 0);
    assert_eq!(
        metric(&text, "wardlink_edge_records_dropped_total"),
        Some(0)
    );
    drop(edge);
    Ok(())
}
