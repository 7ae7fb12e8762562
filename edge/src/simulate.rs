//! `wardlink-edge simulate`: a ward of bedside monitors publishing realistic vitals over real
//! MQTT, some of them deteriorating (a sepsis-like course: rising heart and respiration rate,
//! fever, falling saturation and blood pressure).
//!
//! Each simulated monitor is registered as a device (`sim-{patient}`) and keeps its own
//! persistent MQTT session, so a broker restart does not lose its unacknowledged readings.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use rand::RngExt as _;
use rumqttc::{AsyncClient, Event, MqttOptions, QoS};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wardlink_shared::time::format_rfc3339;
use wardlink_shared::{DeviceId, PatientId};

use crate::broker::add_device;
use crate::clock::now_ms;

/// How a simulation runs.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// Number of patients (beds).
    pub patients: usize,
    /// Time between readings of one patient.
    pub interval: Duration,
    /// How many of them deteriorate.
    pub deteriorate: usize,
    /// The broker to publish to.
    pub broker: SocketAddr,
}

/// One patient's physiology: a baseline, noise, and optionally a deterioration.
#[derive(Debug, Clone)]
struct Patient {
    id: PatientId,
    hr: f64,
    spo2: f64,
    rr: f64,
    temp: f64,
    sbp: f64,
    dbp: f64,
    /// Seconds after start when deterioration begins.
    deteriorates_at: Option<f64>,
}

/// Seconds a deterioration takes to reach its worst.
const RAMP_S: f64 = 60.0;

impl Patient {
    fn new(i: usize, deteriorates_at: Option<f64>) -> anyhow::Result<Self> {
        let mut rng = rand::rng();
        Ok(Self {
            id: PatientId::new(format!("bed-{:02}", i + 1))?,
            hr: rng.random_range(62.0..88.0),
            spo2: rng.random_range(95.0..99.0),
            rr: rng.random_range(12.0..18.0),
            temp: rng.random_range(36.4..37.2),
            sbp: rng.random_range(108.0..135.0),
            dbp: rng.random_range(64.0..84.0),
            deteriorates_at,
        })
    }

    /// The reading at `elapsed` seconds since start.
    fn sample(&self, elapsed: f64) -> serde_json::Value {
        let mut rng = rand::rng();
        let mut noise = |amp: f64| (rng.random::<f64>() + rng.random::<f64>() - 1.0) * amp;
        let p = self
            .deteriorates_at
            .map_or(0.0, |t0| ((elapsed - t0) / RAMP_S).clamp(0.0, 1.0));
        let hr = self.hr + 75.0 * p + noise(3.0);
        let spo2 = (self.spo2 - 12.0 * p + noise(1.0)).min(100.0);
        let rr = self.rr + 16.0 * p + noise(1.5);
        let temp = self.temp + 2.0 * p + noise(0.1);
        let sbp = self.sbp - 35.0 * p + noise(4.0);
        let dbp = (self.dbp - 20.0 * p + noise(3.0)).min(sbp - 15.0);
        let acvpu = if p > 0.9 { "C" } else { "A" };
        // Signal quality as a monitor reports it: good, with a perfusion index that falls as
        // the circulation fails (still above the 0.3 % a ward treats as poor).
        let sq = (95.0 + noise(4.0)).min(100.0);
        let pi = (2.5 - 1.5 * p + noise(0.3)).max(0.5);
        json!({
            "ts": format_rfc3339(now_ms()),
            "hr": hr.round(),
            "spo2": spo2.round(),
            "rr": rr.round(),
            "temp": (temp * 10.0).round() / 10.0,
            "sbp": sbp.round(),
            "dbp": dbp.round(),
            "o2": false,
            "acvpu": acvpu,
            "sq": sq.round(),
            "pi": (pi * 10.0).round() / 10.0,
        })
    }
}

/// Registers the simulated devices in `devices_path` and publishes until `shutdown`.
pub async fn run(
    sim: Simulation,
    devices_path: &Path,
    max_devices: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..sim.patients {
        // Deteriorating patients start one after another, 15 s apart, after 10 s of calm.
        let at = (i < sim.deteriorate).then_some(10.0 + 15.0 * i as f64);
        let patient = Patient::new(i, at)?;
        let device = DeviceId::new(format!("sim-{}", patient.id))?;
        let password = add_device(
            devices_path,
            device.clone(),
            patient.id.clone(),
            max_devices,
        )
        .with_context(|| format!("registering {device}"))?;
        tasks.spawn(monitor(
            patient,
            device,
            password,
            sim.clone(),
            shutdown.clone(),
        ));
    }
    tracing::info!(
        patients = sim.patients,
        deteriorating = sim.deteriorate,
        interval_ms = u64::try_from(sim.interval.as_millis()).unwrap_or(u64::MAX),
        broker = %sim.broker,
        "simulating"
    );
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

async fn monitor(
    patient: Patient,
    device: DeviceId,
    password: String,
    sim: Simulation,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut opts = MqttOptions::new(
        device.as_str(),
        sim.broker.ip().to_string(),
        sim.broker.port(),
    );
    opts.set_credentials(device.as_str(), password);
    opts.set_clean_session(false);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 64);
    let topic = format!("patients/{}/vitals", patient.id);
    let started = tokio::time::Instant::now();
    // Stagger the first readings across the interval, as real monitors are not in phase.
    let offset = sim.interval.mul_f64(rand::rng().random::<f64>());
    let mut ticker = tokio::time::interval_at(started + offset, sim.interval);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = client.disconnect().await;
                return Ok(());
            }
            _ = ticker.tick() => {
                let payload = patient.sample(started.elapsed().as_secs_f64()).to_string();
                client.publish(&topic, QoS::AtLeastOnce, false, payload).await?;
            }
            ev = events.poll() => match ev {
                Ok(Event::Incoming(_) | Event::Outgoing(_)) => {}
                Err(e) => {
                    tracing::warn!(device = %device, error = %e, "simulated monitor disconnected; retrying");
                    // rumqttc has no reconnect backoff of its own.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardlink_shared::payload::decode_json;

    #[test]
    fn samples_are_valid_readings_and_deterioration_is_abnormal() {
        let calm = Patient::new(0, None).unwrap();
        let sick = Patient::new(1, Some(0.0)).unwrap();
        for elapsed in [0.0, 30.0, 120.0, 3600.0] {
            for p in [&calm, &sick] {
                let payload = p.sample(elapsed).to_string();
                let topic = format!("patients/{}/vitals", p.id);
                decode_json(&topic, payload.as_bytes(), now_ms()).unwrap();
            }
        }
        let late = sick.sample(RAMP_S * 2.0);
        assert!(late["hr"].as_f64().unwrap() > 130.0);
        assert!(late["spo2"].as_f64().unwrap() < 92.0);
        let calm_now = calm.sample(RAMP_S * 2.0);
        assert!(calm_now["hr"].as_f64().unwrap() < 100.0);
    }
}
