//! `wardlink-bench`: measures device publish → dashboard receive latency through the whole
//! path (MQTT → edge → redb outbox → QUIC → hub store → WebSocket), in one process on loopback.
//!
//! Closed loop: one device publishes a reading, the dashboard waits for it, repeat; so each
//! sample is one reading's latency with nothing queued ahead of it. Prints p50/p99/p99.9/max.
//!
//! ```sh
//! cargo run --release -p wardlink-tests --bin wardlink-bench -- 2000
//! ```

use std::time::{Duration, Instant};

use wardlink_tests::{Dashboard, Hub, is};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let readings: usize = std::env::args().nth(1).map_or(Ok(2000), |s| s.parse())?;
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
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("device publish -> dashboard receive, {readings} readings, closed loop, loopback");
    println!(
        "p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(percentile(&samples, 99.9)),
        ms(samples.last().copied().unwrap_or_default())
    );
    hub.running.shutdown();
    edge.running.shutdown();
    Ok(())
}
