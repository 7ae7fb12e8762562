//! `wardlink-bench`: the load generator. It starts the systems under test as real processes on
//! loopback (Wardlink's release binaries; Debian's Mosquitto; Node-RED from npm), drives
//! simulated monitors over MQTT and dashboards over WebSocket, and reports device publish →
//! dashboard receive latency (HDR histogram), sustained readings/s, lost and duplicated
//! deliveries, and each process's peak RSS and CPU. Each run prints a table and writes
//! `report.json` and `latency.svg` under `target/bench/`.
//!
//! ```sh
//! deploy/bench-peers.sh                    # once: Mosquitto (Debian) and Node-RED (npm)
//! cargo build --release --workspace --bins
//! target/release/wardlink-bench steady     # 1,000 patients × 1 Hz, 1 and 100 dashboards, peers
//! target/release/wardlink-bench ceiling    # raise the rate until loss or p99 > 50 ms
//! target/release/wardlink-bench fanout     # 10,000 dashboards
//! target/release/wardlink-bench backlog    # an hour of queued telemetry draining, new alarms
//! target/release/wardlink-bench footprint  # edge RSS with 1,000 devices
//! target/release/wardlink-bench closed     # one reading at a time, nothing queued ahead
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use wardlink_tests::bench::report::{Latency, Phase, Report, machine};
use wardlink_tests::bench::run::{Load, Receivers, WsClient, connect_devices, phase};
use wardlink_tests::bench::stats::Watched;
use wardlink_tests::bench::systems::{Mosquitto, NodeRed, Wardlink};
use wardlink_tests::bench::track::histogram;
use wardlink_tests::relay::Mode;
use wardlink_tests::{Dashboard, Hub, is, queue_backlog, wait_for_metric};

#[derive(Parser)]
#[command(about = "Wardlink load generator and benchmark")]
struct Cli {
    /// Where report.json and latency.svg go (default target/bench/<scenario>-<time>).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Steady ward load through Wardlink, then the same load through Mosquitto + Node-RED, and
    /// the MQTT hop alone on the edge's broker and on Mosquitto.
    Steady {
        /// Patients (one monitor each).
        #[arg(long, default_value_t = 1000)]
        patients: usize,
        /// Readings per second per patient.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// Dashboard counts, one phase each.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 100])]
        dashboards: Vec<usize>,
        /// Seconds per phase (the first 2 s are warm-up).
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Wardlink only: no Mosquitto or Node-RED phases.
        #[arg(long)]
        no_peers: bool,
    },
    /// Raises the offered rate step by step until readings are lost or p99 exceeds 50 ms.
    Ceiling {
        /// Patients (one monitor each).
        #[arg(long, default_value_t = 100)]
        patients: usize,
        /// Offered readings per second, all patients together, one step each.
        #[arg(long, value_delimiter = ',',
              default_values_t = [5_000, 10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000])]
        rates: Vec<u32>,
        /// Seconds per step.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Also find Mosquitto's (MQTT hop) and Mosquitto + Node-RED's ceilings.
        #[arg(long)]
        peers: bool,
    },
    /// Many dashboards on one hub.
    Fanout {
        /// Dashboards.
        #[arg(long, default_value_t = 10_000)]
        dashboards: usize,
        /// Patients (one monitor each).
        #[arg(long, default_value_t = 10)]
        patients: usize,
        /// Readings per second per patient.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 30)]
        duration: u64,
    },
    /// An edge cut off from its hub queues `hours` of telemetry for 100 patients; when the
    /// link returns, `alarms` patients deteriorate one after another while the backlog drains.
    Backlog {
        /// Alarms raised while the backlog drains.
        #[arg(long, default_value_t = 200)]
        alarms: usize,
        /// Hours of telemetry queued (100 patients, one reading each per 10 s).
        #[arg(long, default_value_t = 1)]
        hours: i64,
    },
    /// The edge's memory with 1,000 monitors connected and publishing.
    Footprint {
        /// Patients (one monitor each).
        #[arg(long, default_value_t = 1000)]
        patients: usize,
        /// Seconds of publishing at 1 Hz.
        #[arg(long, default_value_t = 60)]
        duration: u64,
    },
    /// Draws `latency.svg` again from a run's `report.json` (beside it).
    Plot {
        /// A `report.json` written by an earlier run.
        report: PathBuf,
    },
    /// One reading at a time through the whole path (in one process), nothing queued ahead.
    Closed {
        /// Readings measured (plus 10 % warm-up).
        #[arg(long, default_value_t = 2000)]
        readings: usize,
    },
}

const WARMUP: Duration = Duration::from_secs(2);
const P99_LIMIT_MS: f64 = 50.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wardlink_tests::init();
    let cli = Cli::parse();
    raise_open_file_limit();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    if let Scenario::Plot { report } = &cli.scenario {
        let text = std::fs::read_to_string(report)?;
        let parsed: Report = serde_json::from_str(&text)?;
        let svg = report.with_file_name("latency.svg");
        std::fs::write(&svg, parsed.svg())?;
        println!("wrote {}", svg.display());
        return Ok(());
    }
    let (name, phases, ratios, notes) = match cli.scenario {
        Scenario::Steady {
            patients,
            rate,
            dashboards,
            duration,
            no_peers,
        } => steady(patients, rate, &dashboards, duration, !no_peers).await?,
        Scenario::Ceiling {
            patients,
            rates,
            duration,
            peers,
        } => ceiling(patients, &rates, duration, peers).await?,
        Scenario::Fanout {
            dashboards,
            patients,
            rate,
            duration,
        } => fanout(dashboards, patients, rate, duration).await?,
        Scenario::Backlog { alarms, hours } => backlog(alarms, hours).await?,
        Scenario::Footprint { patients, duration } => footprint(patients, duration).await?,
        Scenario::Closed { readings } => closed(readings).await?,
        Scenario::Plot { .. } => return Ok(()),
    };
    let now = jiff_like_now();
    let report = Report {
        scenario: name.to_owned(),
        command,
        date: now.clone(),
        machine: machine(),
        phases,
        ratios,
        notes,
    };
    report.print();
    let out = cli.out.unwrap_or_else(|| {
        PathBuf::from("target/bench").join(format!("{name}-{}", now.replace([':', '-'], "")))
    });
    report.write(&out)?;
    Ok(())
}

/// Raises this process's open-file limit to its hard limit (the systems under test inherit
/// it): 1,000 devices and 100 dashboards need several thousand sockets between the generator,
/// the edge (three per device: the device's, the gate's to rumqttd, rumqttd's) and the hub,
/// beyond a stock shell's 1,024.
fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current.is_some_and(|soft| soft < hard)
    {
        let raised = Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            eprintln!("could not raise the open-file limit to {hard}: {e}");
        }
    }
}

type Outcome = (&'static str, Vec<Phase>, Vec<String>, Vec<String>);

/// UTC now as `YYYY-MM-DDTHH:MM:SSZ`.
fn jiff_like_now() -> String {
    let ms = i64::try_from(wardlink_tests::unix_now()).unwrap_or(0) * 1000;
    let s = wardlink_shared::time::format_rfc3339(ms);
    format!("{}Z", s.get(..19).unwrap_or(&s))
}

fn load(rate_hz: f64, seconds: u64) -> Load {
    Load {
        rate_hz,
        duration: Duration::from_secs(seconds),
        warmup: WARMUP.min(Duration::from_secs(seconds) / 4),
    }
}

fn ratio(what: &str, ours: &Phase, theirs: &Phase) -> String {
    let r = |a: f64, b: f64| if a > 0.0 { b / a } else { f64::NAN };
    format!(
        "{what}: {} / wardlink — p50 {:.2}x, p99 {:.2}x, p99.9 {:.2}x ({} p50 {:.3} / {:.3} ms, p99 {:.3} / {:.3} ms)",
        theirs.system,
        r(ours.latency.p50_ms, theirs.latency.p50_ms),
        r(ours.latency.p99_ms, theirs.latency.p99_ms),
        r(ours.latency.p999_ms, theirs.latency.p999_ms),
        theirs.system,
        theirs.latency.p50_ms,
        ours.latency.p50_ms,
        theirs.latency.p99_ms,
        ours.latency.p99_ms,
    )
}

/// Target: p50 and p99 at or below the peer's in the same run.
fn at_most(what: &str, ours: &Phase, theirs: &Phase) -> String {
    let mark = |a: f64, b: f64| if a <= b { "met" } else { "MISSED" };
    format!(
        "target {what} at or below {}: p50 {:.3} vs {:.3} ms ({}), p99 {:.3} vs {:.3} ms ({})",
        theirs.system,
        ours.latency.p50_ms,
        theirs.latency.p50_ms,
        mark(ours.latency.p50_ms, theirs.latency.p50_ms),
        ours.latency.p99_ms,
        theirs.latency.p99_ms,
        mark(ours.latency.p99_ms, theirs.latency.p99_ms),
    )
}

/// Target: at most 50 µs of CPU per reading in each of Wardlink's processes.
fn cpu_per_reading(p: &Phase) -> Vec<String> {
    p.processes
        .iter()
        .map(|u| {
            let mark = if u.cpu_us_per_reading <= 50.0 {
                "met"
            } else {
                "MISSED"
            };
            format!(
                "target {} CPU per reading <= 50 us ({} receivers): {:.1} us ({mark})",
                u.name, p.receivers, u.cpu_us_per_reading
            )
        })
        .collect()
}

fn verdict(what: &str, value: f64, target: f64) -> String {
    if value <= 0.0 {
        return format!("target {what} <= {target} ms: no samples");
    }
    let mark = if value <= target { "met" } else { "MISSED" };
    format!("target {what} <= {target} ms: {value:.3} ms ({mark})")
}

async fn steady(
    patients: usize,
    rate: f64,
    dashboards: &[usize],
    seconds: u64,
    peers: bool,
) -> anyhow::Result<Outcome> {
    let mut phases = Vec::new();
    let mut notes = Vec::new();
    let wardlink = Wardlink::start(patients, peers, "").await?;
    let mut devices = connect_devices(wardlink.edge.mqtt, &wardlink.devices).await?;
    let mut ours = Vec::new();
    let mut first = true;
    for &count in dashboards {
        let receivers = wardlink.dashboards(count);
        let (p, back) = phase(
            "wardlink",
            "publish -> dashboard",
            devices,
            &receivers,
            load(rate, seconds),
            &wardlink.watched(),
        )
        .await?;
        devices = back;
        let target = if count == 1 { 0.5 } else { 1.5 };
        notes.push(verdict(
            &format!("p99 with {count} dashboards"),
            p.latency.p99_ms,
            target,
        ));
        if count == 1 {
            notes.push(verdict("p50 with 1 dashboard", p.latency.p50_ms, 0.25));
        }
        notes.push(format!(
            "wardlink, {count} dashboards: {} lost, {} duplicated (target 0, 0)",
            p.lost, p.duplicated
        ));
        notes.extend(cpu_per_reading(&p));
        if first {
            // The PUBACK waits for the outbox's commit (acknowledged means durable).
            notes.push(verdict(
                "publish -> PUBACK p99 (commit window 10 ms + 5 ms)",
                p.ack_latency.p99_ms,
                15.0,
            ));
            first = false;
        }
        ours.push(p.clone());
        phases.push(p);
    }
    // One dashboard whose TCP stack delays its ACKs (Python's `websockets`): a hub that left
    // Nagle's algorithm on would stall here while the Rust dashboards above hid it.
    let receivers = wardlink.dashboards(1).with_client(WsClient::Python);
    let (p, back) = phase(
        "wardlink (python ws)",
        "publish -> dashboard",
        devices,
        &receivers,
        load(rate, seconds),
        &wardlink.watched(),
    )
    .await?;
    devices = back;
    if let Some(rust) = ours.first() {
        notes.push(format!(
            "python dashboard vs rust dashboard: p50 {:.3} / {:.3} ms, p99 {:.3} / {:.3} ms",
            p.latency.p50_ms, rust.latency.p50_ms, p.latency.p99_ms, rust.latency.p99_ms
        ));
    }
    phases.push(p);
    if !peers {
        return Ok(("steady", phases, Vec::new(), notes));
    }
    let receivers = wardlink.subscribers();
    let (edge_hop, _) = phase(
        "wardlink-edge broker",
        "publish -> MQTT subscriber",
        devices,
        &receivers,
        load(rate, seconds),
        &wardlink.watched()[..1],
    )
    .await?;
    phases.push(edge_hop.clone());
    drop(wardlink);
    notes.push(verdict(
        "edge broker publish -> PUBACK p99 (commit window 10 ms + 5 ms)",
        edge_hop.ack_latency.p99_ms,
        15.0,
    ));

    let mosquitto = Mosquitto::start().await?;
    let logins = Mosquitto::logins("mon", patients);
    let mut devices = connect_devices(mosquitto.addr, &logins).await?;
    let receivers = Receivers::Mqtt {
        addr: mosquitto.addr,
        logins: Mosquitto::logins("watch", patients),
    };
    let watched = vec![("mosquitto".to_owned(), mosquitto.process.id())];
    let (mosquitto_hop, back) = phase(
        "mosquitto",
        "publish -> MQTT subscriber",
        devices,
        &receivers,
        load(rate, seconds),
        &watched,
    )
    .await?;
    devices = back;
    phases.push(mosquitto_hop.clone());
    let mut ratios = vec![ratio("MQTT hop", &edge_hop, &mosquitto_hop)];
    notes.push(at_most("MQTT hop", &edge_hop, &mosquitto_hop));

    let node_red = NodeRed::start(mosquitto.addr).await?;
    let watched = vec![
        ("mosquitto".to_owned(), mosquitto.process.id()),
        ("node-red".to_owned(), node_red.process.id()),
    ];
    for (&count, ours) in dashboards.iter().zip(&ours) {
        let receivers = node_red.dashboards(count);
        let (p, back) = phase(
            "mosquitto+node-red",
            "publish -> dashboard",
            devices,
            &receivers,
            load(rate, seconds),
            &watched,
        )
        .await?;
        devices = back;
        ratios.push(ratio(&format!("{count} dashboards"), ours, &p));
        notes.push(at_most(&format!("{count} dashboards"), ours, &p));
        if let Some(peer) = p
            .processes
            .iter()
            .map(|u| u.cpu_us_per_reading)
            .reduce(|a, b| a + b)
        {
            notes.push(format!(
                "mosquitto + node-red, {count} dashboards: {peer:.0} us CPU per reading together"
            ));
        }
        phases.push(p);
    }
    Ok(("steady", phases, ratios, notes))
}

async fn ceiling(
    patients: usize,
    rates: &[u32],
    seconds: u64,
    peers: bool,
) -> anyhow::Result<Outcome> {
    let mut phases = Vec::new();
    let mut notes = Vec::new();
    // The per-device rate limit must not be what is measured.
    let top = rates.iter().copied().max().unwrap_or(1) as usize;
    let per_device = (top / patients.max(1) + 1) * 2;
    let wardlink = Wardlink::start(
        patients,
        false,
        &format!("max_publish_rate = {per_device}\nmax_publish_burst = {per_device}"),
    )
    .await?;
    let devices = connect_devices(wardlink.edge.mqtt, &wardlink.devices).await?;
    let receivers = wardlink.dashboards(1);
    let (held, devices) = climb(
        "wardlink",
        "publish -> dashboard",
        devices,
        &receivers,
        rates,
        patients,
        seconds,
        &wardlink.watched(),
        &mut phases,
    )
    .await?;
    notes.push(format!(
        "wardlink held {held} readings/s with 0 lost and p99 <= {P99_LIMIT_MS} ms (target >= 50000)"
    ));
    drop(devices);
    drop(wardlink);
    if peers {
        let mosquitto = Mosquitto::start().await?;
        let devices = connect_devices(mosquitto.addr, &Mosquitto::logins("mon", patients)).await?;
        let node_red = NodeRed::start(mosquitto.addr).await?;
        let receivers = node_red.dashboards(1);
        let watched = vec![
            ("mosquitto".to_owned(), mosquitto.process.id()),
            ("node-red".to_owned(), node_red.process.id()),
        ];
        let (peer, _) = climb(
            "mosquitto+node-red",
            "publish -> dashboard",
            devices,
            &receivers,
            rates,
            patients,
            seconds,
            &watched,
            &mut phases,
        )
        .await?;
        notes.push(format!(
            "mosquitto+node-red held {peer} readings/s; wardlink / node-red = {:.2}x",
            held as f64 / peer.max(1) as f64
        ));
    }
    Ok(("ceiling", phases, Vec::new(), notes))
}

/// Runs the rate steps until one loses a reading or exceeds the p99 limit; returns the
/// highest rate held.
#[allow(clippy::too_many_arguments)]
async fn climb(
    system: &str,
    path: &str,
    mut devices: Vec<wardlink_tests::bench::mqtt::Publisher>,
    receivers: &Receivers,
    rates: &[u32],
    patients: usize,
    seconds: u64,
    watched: &[(String, u32)],
    phases: &mut Vec<Phase>,
) -> anyhow::Result<(u32, Vec<wardlink_tests::bench::mqtt::Publisher>)> {
    let mut held = 0;
    for &total in rates {
        let per_patient = f64::from(total) / patients as f64;
        let (p, back) = phase(
            system,
            path,
            devices,
            receivers,
            load(per_patient, seconds),
            watched,
        )
        .await?;
        devices = back;
        // Held: nothing lost or doubled, p99 within the limit, and the rate really offered and
        // carried (the generator kept to its schedule and the receiver kept up with it).
        let ok = p.lost == 0
            && p.duplicated == 0
            && p.latency.p99_ms <= P99_LIMIT_MS
            && p.sent == p.scheduled
            && p.sustained_per_s >= 0.95 * p.offered_per_s;
        phases.push(p);
        if !ok {
            break;
        }
        held = total;
    }
    Ok((held, devices))
}

async fn fanout(
    dashboards: usize,
    patients: usize,
    rate: f64,
    seconds: u64,
) -> anyhow::Result<Outcome> {
    let wardlink = Wardlink::start(patients, false, "").await?;
    let devices = connect_devices(wardlink.edge.mqtt, &wardlink.devices).await?;
    eprintln!("connecting {dashboards} dashboards…");
    let receivers = wardlink.dashboards(dashboards);
    let (p, _) = phase(
        "wardlink",
        "publish -> dashboard",
        devices,
        &receivers,
        load(rate, seconds),
        &wardlink.watched(),
    )
    .await?;
    let notes = vec![
        verdict(
            &format!("p99 with {dashboards} dashboards"),
            p.latency.p99_ms,
            20.0,
        ),
        format!("{} lost, {} duplicated", p.lost, p.duplicated),
    ];
    Ok(("fanout", vec![p], Vec::new(), notes))
}

async fn footprint(patients: usize, seconds: u64) -> anyhow::Result<Outcome> {
    let wardlink = Wardlink::start(patients, false, "").await?;
    let idle = wardlink_tests::bench::stats::rss(wardlink.edge.process.id())
        .map_or(0.0, |(now, _)| now as f64 / 1048576.0);
    let devices = connect_devices(wardlink.edge.mqtt, &wardlink.devices).await?;
    let mut connected = Watched::start("wardlink-edge", wardlink.edge.process.id());
    let connected = connected.finish().rss_mib;
    let receivers = wardlink.dashboards(1);
    let (p, _) = phase(
        "wardlink",
        "publish -> dashboard",
        devices,
        &receivers,
        load(1.0, seconds),
        &wardlink.watched(),
    )
    .await?;
    let peak = p.processes.first().map_or(0.0, |u| u.peak_rss_mib);
    let notes = vec![
        format!("edge RSS: {idle:.1} MiB started with no device connected"),
        format!("edge RSS: {connected:.1} MiB with {patients} devices connected, idle"),
        format!(
            "edge RSS: peak {peak:.1} MiB with {patients} devices publishing at 1 Hz for {seconds} s \
             (target <= 48 MiB: {})",
            if peak <= 48.0 { "met" } else { "MISSED" }
        ),
    ];
    Ok(("footprint", vec![p], Vec::new(), notes))
}

fn phase_of(system: &str, path: &str, samples: &[Duration], sent: u64) -> Phase {
    let mut h = histogram();
    for s in samples {
        h.saturating_record(u64::try_from(s.as_nanos()).unwrap_or(u64::MAX).max(1));
    }
    Phase {
        system: system.into(),
        path: path.into(),
        patients: 1,
        offered_per_s: 0.0,
        receivers: 1,
        duration_s: 0.0,
        scheduled: sent,
        sent,
        max_send_lag_ms: 0.0,
        expected: sent,
        delivered: samples.len() as u64,
        lost: sent.saturating_sub(samples.len() as u64),
        duplicated: 0,
        sustained_per_s: 0.0,
        latency: Latency::of(&h),
        ack_latency: Latency::default(),
        processes: Vec::new(),
    }
}

/// Closed loop, in one process: one device publishes a reading, the dashboard waits for it,
/// repeat; each sample is one reading's latency with nothing queued ahead of it.
async fn closed(readings: usize) -> anyhow::Result<Outcome> {
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
    hub.running.shutdown();
    edge.running.shutdown();
    let p = phase_of(
        "wardlink (in-process)",
        "publish -> dashboard, closed loop",
        &samples,
        readings as u64,
    );
    Ok(("closed", vec![p], Vec::new(), Vec::new()))
}

const BACKLOG_PATIENTS: usize = 100;

/// A reading of the queued backlog (`bed-N`), not one of the deteriorating patients'
/// (`bed-xN`).
fn is_backlog(v: &serde_json::Value) -> bool {
    v["type"] == "vitals"
        && v["patient"]
            .as_str()
            .is_some_and(|p| p.starts_with("bed-") && !p.starts_with("bed-x"))
}
/// One reading per patient every 10 s.
const BACKLOG_READINGS_PER_HOUR: i64 = 360;
const TELEMETRY: &str = "wardlink_hub_records_stored_total{lane=\"telemetry\"}";

async fn backlog(alarms: usize, hours: i64) -> anyhow::Result<Outcome> {
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
    eprintln!(
        "queueing {} readings behind a cut uplink…",
        BACKLOG_PATIENTS as i64 * each
    );
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
    let mut last_backlog_seq = 0;
    for (a, device) in sick.iter_mut().enumerate() {
        let patient = format!("bed-x{a}");
        let start = Instant::now();
        device.publish_nowait(r#"{"hr":200}"#).await?;
        let alert = dash
            .until(|v| v["type"] == "alert" && v["patient"] == patient.as_str())
            .await?;
        alerts.push((alert["seq"].as_u64().unwrap_or(u64::MAX), start.elapsed()));
        for v in dash.seen.iter().filter(|v| is_backlog(v)) {
            backlog_seen += 1;
            last_backlog_seq = last_backlog_seq.max(v["seq"].as_u64().unwrap_or(0));
        }
        dash.seen.clear();
        if a % 20 == 0 {
            eprint!("\ralarms {a}/{alarms}, backlog readings seen {backlog_seen}/{total}");
        }
    }
    eprintln!();
    // The rest of the backlog; the seq of its last reading tells which alarms overtook it.
    while backlog_seen < total {
        let v = dash.next().await?;
        if is_backlog(&v) {
            backlog_seen += 1;
            last_backlog_seq = last_backlog_seq.max(v["seq"].as_u64().unwrap_or(0));
        }
    }
    wait_for_metric(|| hub.metrics(), TELEMETRY, total).await?;
    let drained = started.elapsed();
    let samples: Vec<Duration> = alerts
        .iter()
        .filter(|(seq, _)| *seq < last_backlog_seq)
        .map(|(_, d)| *d)
        .collect();
    let during = samples.len();
    let mut p = phase_of(
        "wardlink (in-process)",
        "alarm -> dashboard alert",
        &samples,
        during as u64,
    );
    p.patients = BACKLOG_PATIENTS + alarms;
    let notes = vec![
        format!(
            "{during} of {alarms} alarms were raised and shown while the backlog of {total} readings \
             was still draining; only those are in the histogram"
        ),
        format!(
            "backlog drained in {:.2} s ({:.0} readings/s)",
            drained.as_secs_f64(),
            total as f64 / drained.as_secs_f64()
        ),
        verdict("alarm p99 while draining", p.latency.p99_ms, 50.0),
    ];
    hub.running.shutdown();
    edge.running.shutdown();
    Ok(("backlog", vec![p], Vec::new(), notes))
}
