//! `wardlink-bench`: measures device publish → dashboard receive latency through the whole
//! path (MQTT → edge → redb outbox → QUIC → hub store → WebSocket), in one process on loopback.
//!
//! Closed loop: one device publishes a reading, the dashboard waits for it, repeat; so each
//! sample is one reading's latency with nothing queued ahead of it. Prints p50/p99/p99.9/max.
//!
//! `backlog` mode: an edge cut off from its hub queues an hour of telemetry for 100 patients;
//! when the link returns, patients deteriorate one after another while the backlog drains, and
//! each alarm's publish → dashboard `alert` latency is measured.
//!
//! ```sh
//! cargo run --release -p wardlink-tests --bin wardlink-bench -- 2000
//! cargo run --release -p wardlink-tests --bin wardlink-bench -- backlog 200 4   # alarms, hours
//! ```

use std::time::{Duration, Instant};

use wardlink_tests::relay::Mode;
use wardlink_tests::{Dashboard, Hub, is, queue_backlog, wait_for_metric};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("{what}");
    println!(
        "p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        ms(percentile(samples, 50.0)),
        ms(percentile(samples, 99.0)),
        ms(percentile(samples, 99.9)),
        ms(samples.last().copied().unwrap_or_default())
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some("backlog") {
        let alarms: usize = args.next().map_or(Ok(200), |s| s.parse())?;
        let hours: i64 = args.next().map_or(Ok(1), |s| s.parse())?;
        return backlog(alarms, hours).await;
    }
    let readings: usize = first.map_or(Ok(2000), |s| s.parse())?;
    let warmup = readings / 10;
    let hub = Hub::start().await?;
    let edge = hub.edge("edge-bench", "ward-b", |_| {}).await?;
    edge.wait_online().await?;
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-b")).await?;
    let mut device = edge.device("mon-bench", "bed-01").await?;

    let mut samples = Vec::with_capacity(readings);
    for i in 0..readings + warmup {
        let hr = 60 + (i % 50);
        let payload = format!(r#"{{"hr":{hr},"spo2":97}}"#);
        let start = Instant::now();
        device.publish_nowait(&payload).await?;
        let want = hr as f64;
        dash.until(|v| is(v, "vitals", "bed-01") && v["values"]["hr"] == want)
            .await?;
        if i >= warmup {
            samples.push(start.elapsed());
        }
        dash.seen.clear();
    }
    report(
        &format!("device publish -> dashboard receive, {readings} readings, closed loop, loopback"),
        &mut samples,
    );
    hub.running.shutdown();
    edge.running.shutdown();
    Ok(())
}

const BACKLOG_PATIENTS: usize = 100;
/// One reading per patient every 10 s.
const BACKLOG_READINGS_PER_HOUR: i64 = 360;
const TELEMETRY: &str = "wardlink_hub_records_stored_total{lane=\"telemetry\"}";

async fn backlog(alarms: usize, hours: i64) -> anyhow::Result<()> {
    let each = BACKLOG_READINGS_PER_HOUR * hours;
    let hub = Hub::start().await?;
    let (relay, edge) = hub
        .edge_behind_relay("edge-bench", "ward-b", |_| {})
        .await?;
    let mut devices = Vec::with_capacity(BACKLOG_PATIENTS);
    for p in 0..BACKLOG_PATIENTS {
        devices.push(
            edge.device(&format!("mon-{p}"), &format!("bed-{p}"))
                .await?,
        );
    }
    let total = queue_backlog(&mut devices, each).await?;
    wait_for_metric(
        || edge.metrics(),
        "wardlink_edge_outbox_committed_total{lane=\"telemetry\"}",
        total,
    )
    .await?;
    let mut sick = Vec::with_capacity(alarms);
    for a in 0..alarms {
        sick.push(
            edge.device(&format!("mon-x{a}"), &format!("bed-x{a}"))
                .await?,
        );
    }
    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-b")).await?;

    relay.set(Mode::Pass);
    let started = Instant::now();
    wait_for_metric(|| hub.metrics(), TELEMETRY, 1).await?;
    // (hub seq of the alert, latency) per alarm.
    let mut alerts = Vec::with_capacity(alarms);
    let mut backlog_seen = 0i64;
    for (a, device) in sick.iter_mut().enumerate() {
        let patient = format!("bed-x{a}");
        let start = Instant::now();
        device.publish_nowait(r#"{"hr":200}"#).await?;
        let alert = dash
            .until(|v| v["type"] == "alert" && v["patient"] == patient.as_str())
            .await?;
        alerts.push((alert["seq"].as_u64().unwrap_or(u64::MAX), start.elapsed()));
        backlog_seen += dash.seen.iter().filter(|v| v["type"] == "vitals").count() as i64;
        dash.seen.clear();
    }
    // The rest of the backlog; the seq of its last reading tells which alarms overtook it.
    let mut last_backlog_seq = 0;
    while backlog_seen < total {
        let v = dash.next().await?;
        if v["type"] == "vitals" {
            backlog_seen += 1;
            last_backlog_seq = v["seq"].as_u64().unwrap_or(0);
        }
    }
    wait_for_metric(|| hub.metrics(), TELEMETRY, total).await?;
    let drained = started.elapsed();
    let mut samples: Vec<Duration> = alerts
        .iter()
        .filter(|(seq, _)| *seq < last_backlog_seq)
        .map(|(_, d)| *d)
        .collect();
    let during = samples.len();
    report(
        &format!(
            "alarm publish -> dashboard alert while a backlog of {total} readings drains \
             ({during} of {alarms} alarms raised before it had drained)"
        ),
        &mut samples,
    );
    println!(
        "backlog drained in {:.2} s ({:.0} readings/s)",
        drained.as_secs_f64(),
        total as f64 / drained.as_secs_f64()
    );
    hub.running.shutdown();
    edge.running.shutdown();
    Ok(())
}
