//! The alarm engine runs on the monotonic clock: the real edge under libfaketime (Debian's
//! `faketime`; the wall clock stepped, the monotonic clock left alone, as NTP does on a
//! Raspberry Pi without a real-time clock) raises no `signal_lost` for a monitor that never
//! stopped, and a sustained HR 185 after a backward step is raised within its delay.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wardlink_tests::process::{EdgeProcess, binary};
use wardlink_tests::{
    Device, Hub, PATIENCE, free_port, http_get, metric, stored_readings, unix_now,
    wait_for_metric_eq,
};

/// Debian's libfaketime (package `faketime`, installed by `.ci/run`).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Sets the edge's wall clock `seconds` away from the real one (libfaketime reads the file at
/// most once a second: `FAKETIME_CACHE_DURATION`).
fn step_wall_clock(file: &Path, seconds: i64) -> anyhow::Result<()> {
    std::fs::write(file, format!("{seconds:+}\n"))?;
    Ok(())
}

/// Publishes HR `hr` every 0.5 s for `seconds`, without `ts` (the edge stamps each reading
/// with its own, stepped, wall clock).
async fn send(device: &mut Device, hr: u32, seconds: u64) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    for _ in 0..seconds * 2 {
        tick.tick().await;
        device
            .publish(&format!(r#"{{"hr":{hr},"spo2":97,"rr":16}}"#))
            .await?;
    }
    Ok(())
}

async fn alarm_events(edge: &EdgeProcess) -> anyhow::Result<i64> {
    Ok(metric(&edge.metrics().await?, "wardlink_edge_alarm_events_total").unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_steps_raise_no_signal_lost_and_freeze_no_alarm() -> anyhow::Result<()> {
    anyhow::ensure!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: apt-get install faketime (.ci/run does)"
    );
    let hub = Hub::start().await?;
    let (dir, cfg, password) = hub.enroll_edge_with_monitor("edge-t", "ward-t")?;
    let offset = dir.path().join("faketime");
    step_wall_clock(&offset, 0)?;
    let mut program = Command::new(binary("wardlink-edge")?);
    program
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_CACHE_DURATION", "1");
    let mqtt = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let edge = EdgeProcess::start_program_on(
        program,
        &dir.path().join("edge.toml"),
        &hub.running.quic_addr.to_string(),
        None,
        mqtt,
    )
    .await?;
    let mut device = Device::connect(mqtt, "mon-1", &password, "bed-01").await?;

    // Normal readings; the wall clock jumps 2 h ahead, then 3 h back (1 h behind real time).
    send(&mut device, 70, 3).await?;
    step_wall_clock(&offset, 7_200)?;
    send(&mut device, 70, 4).await?;
    step_wall_clock(&offset, -3_600)?;
    send(&mut device, 70, 4).await?;
    assert_eq!(
        alarm_events(&edge).await?,
        0,
        "a monitor that never stopped raised alarms: {}",
        http_get(edge.admin, "/alarms").await?
    );

    // A sustained HR 185 after the backward step: raised within its delay (the extreme
    // confirmation) plus 2 s, not frozen until the wall clock catches up.
    let hr = cfg.alarms.hr;
    let delay = Duration::from_secs(u64::from(hr.extreme_confirm_s.min(hr.delay_s)));
    let started = Instant::now();
    let sending = send(&mut device, 185, delay.as_secs() + 10);
    let raised = async {
        loop {
            let active = http_get(edge.admin, "/alarms").await?;
            if active.contains("hr_high") {
                return Ok::<_, anyhow::Error>(started.elapsed());
            }
            if started.elapsed() > delay + PATIENCE {
                anyhow::bail!("HR 185 never raised an alarm: {active}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let took = tokio::select! {
        r = sending => { r?; anyhow::bail!("the readings ended before the alarm was raised") }
        t = raised => t?,
    };
    assert!(
        took <= delay + Duration::from_secs(2),
        "HR 185 raised after {took:?}, its delay is {delay:?}"
    );
    let active = http_get(edge.admin, "/alarms").await?;
    assert!(!active.contains("signal_lost"), "{active}");

    // The steps were real: the edge stamped readings 2 h ahead and 1 h behind.
    wait_for_metric_eq(
        || edge.metrics(),
        "wardlink_edge_outbox_depth{lane=\"telemetry\"}",
        0,
    )
    .await?;
    let last = metric(&hub.metrics().await?, "wardlink_hub_last_event_seq").unwrap_or(0);
    let stamps = stored_readings(&hub.ws_url("since=0"), &hub.admin(), "bed-01", last).await?;
    let real = i64::try_from(unix_now())? * 1000;
    let ahead = stamps.keys().filter(|ts| **ts > real + 5_400_000).count();
    let behind = stamps.keys().filter(|ts| **ts < real - 1_800_000).count();
    assert!(
        ahead > 0 && behind > 0,
        "the edge's wall clock did not step: {ahead} readings ahead, {behind} behind"
    );
    Ok(())
}
