//! `wardlink-noise`: how many notifications Wardlink's alarm engine produces on a realistic
//! ward, against a naive rule that alarms on every sample beyond a limit, and how quickly it
//! catches every true deterioration.
//!
//! Scripted traces, deterministic (a fixed seed), in virtual time — the engine is sans-IO, so
//! eight hours of a ward run in a second:
//! - every patient has physiological noise around a personal baseline;
//! - motion artefacts: probe slips (SpO2 drops to 70–88 % for 2–8 s) and movement (HR +30–60
//!   for 2–8 s), several per patient-hour;
//! - true events: sustained tachycardia, desaturation or tachypnoea lasting minutes.
//!
//! "Notifications" are `raised` events (a new episode or a worsening): what would reach a
//! clinician. The naive rule notifies on each transition from a normal to an abnormal sample.
//!
//! ```sh
//! cargo run --release -p wardlink-tests --bin wardlink-noise
//! ```

use wardlink_shared::alarm::{AlarmEngine, AlertState, RuleSettings};
use wardlink_shared::time::{Millis, Now};
use wardlink_shared::vitals::VitalSign;
use wardlink_shared::{PatientId, Reading, Vitals};

const PATIENTS: usize = 24;
const HOURS: i64 = 8;
const STEP_MS: Millis = 1000;

/// A small deterministic generator (xorshift64*), so every run scores the same ward.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Roughly normal with standard deviation `sd` (a sum of six uniforms has variance 1/2).
    fn noise(&mut self, sd: f64) -> f64 {
        let sum: f64 = (0..6).map(|_| self.unit()).sum();
        (sum - 3.0) * std::f64::consts::SQRT_2 * sd
    }
}

/// A true deterioration: `sign` beyond its limit from `start` for `len` ms.
#[derive(Debug, Clone, Copy)]
struct TrueEvent {
    patient: usize,
    sign: VitalSign,
    start: Millis,
    len: Millis,
}

#[derive(Clone, Copy)]
struct Artefact {
    start: Millis,
    len: Millis,
    sign: VitalSign,
    value: f64,
}

/// Virtual time `ms` on both clocks: the monotonic one counts from the first call.
fn virtual_now(ms: Millis) -> Now {
    static BASE: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    Now {
        mono: *BASE + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
        wall: ms,
    }
}

fn main() {
    // Longest artefact, seconds (first argument; 8 by default).
    let max_artefact_s: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(8.0);
    let settings = RuleSettings::default();
    let limits = settings.limits;
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    let end = HOURS * 3600 * 1000;

    let mut true_events = Vec::new();
    let kinds = [VitalSign::Hr, VitalSign::Spo2, VitalSign::Rr];
    for p in 0..PATIENTS {
        if p % 3 == 0 {
            let start = (rng.range(0.5, f64::from(u32::try_from(HOURS).unwrap_or(8)) - 1.0)
                * 3_600_000.0) as Millis;
            true_events.push(TrueEvent {
                patient: p,
                sign: kinds[p / 3 % 3],
                start,
                len: (rng.range(3.0, 20.0) * 60_000.0) as Millis,
            });
        }
    }

    let mut engine = AlarmEngine::new(settings, "bench");
    let mut wardlink_raised = 0usize;
    let mut naive_notifications = 0usize;
    let mut detections: Vec<Option<Millis>> = vec![None; true_events.len()];
    let mut artefacts_total = 0usize;
    let mut by_kind = std::collections::BTreeMap::new();

    for p in 0..PATIENTS {
        let patient =
            PatientId::new(format!("bed-{:02}", p + 1)).unwrap_or_else(|_| unreachable!());
        let base_hr = rng.range(62.0, 90.0);
        let base_spo2 = rng.range(95.0, 98.5);
        let base_rr = rng.range(12.0, 18.0);
        // About 6 artefacts per patient-hour.
        let mut artefacts = Vec::new();
        let mut t = 0;
        while t < end {
            t += (rng.range(0.2, 1.8) * 600_000.0) as Millis;
            let len = (rng.range(2.0, max_artefact_s.max(2.0)) * 1000.0) as Millis;
            let (sign, value) = if rng.unit() < 0.5 {
                (VitalSign::Spo2, rng.range(70.0, 88.0))
            } else {
                (VitalSign::Hr, base_hr + rng.range(30.0, 60.0))
            };
            artefacts.push(Artefact {
                start: t,
                len,
                sign,
                value,
            });
        }
        artefacts_total += artefacts.len();
        let mine: Vec<(usize, TrueEvent)> = true_events
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, e)| e.patient == p)
            .collect();
        let mut naive_abnormal = [false; 3];
        let mut t = 0;
        while t < end {
            let mut hr = base_hr + rng.noise(2.0);
            let mut spo2 = (base_spo2 + rng.noise(0.7)).min(100.0);
            let mut rr = base_rr + rng.noise(1.0);
            for (_, e) in &mine {
                if t >= e.start && t < e.start + e.len {
                    match e.sign {
                        VitalSign::Hr => hr = 145.0 + rng.noise(4.0),
                        VitalSign::Spo2 => spo2 = 87.0 + rng.noise(1.0),
                        _ => rr = 30.0 + rng.noise(1.5),
                    }
                }
            }
            for a in &artefacts {
                if t >= a.start && t < a.start + a.len {
                    match a.sign {
                        VitalSign::Hr => hr = a.value,
                        _ => spo2 = a.value,
                    }
                }
            }
            let vitals = Vitals {
                hr: Some(hr.round() as f32),
                spo2: Some(spo2.round().min(100.0) as f32),
                rr: Some(rr.round() as f32),
                ..Vitals::default()
            };
            // Naive: notify on every transition into an out-of-range sample.
            for (i, sign) in kinds.iter().enumerate() {
                let l = limits.of(*sign);
                let v = vitals.value(*sign).unwrap_or(0.0);
                let abnormal = l.low.is_some_and(|lo| v < lo) || l.high.is_some_and(|hi| v > hi);
                if abnormal && !naive_abnormal[i] {
                    naive_notifications += 1;
                }
                naive_abnormal[i] = abnormal;
            }
            let reading = Reading {
                patient: patient.clone(),
                ts: t,
                vitals,
            };
            let mut events = engine.observe(&reading, virtual_now(t)).events;
            events.extend(engine.tick(virtual_now(t + STEP_MS / 2)));
            for ev in events
                .iter()
                .filter(|e| e.state == AlertState::Raised && !e.kind.starts_with("trend_"))
            {
                wardlink_raised += 1;
                *by_kind
                    .entry(format!("{} {:?}", ev.kind, ev.priority))
                    .or_insert(0usize) += 1;
                for (idx, e) in &mine {
                    let kind_matches = ev.kind.starts_with(e.sign.name());
                    if kind_matches && ev.ts >= e.start && detections[*idx].is_none() {
                        detections[*idx] = Some(ev.ts - e.start);
                    }
                }
            }
            t += STEP_MS;
        }
    }

    println!(
        "ward: {PATIENTS} patients x {HOURS} h at 1 Hz, {artefacts_total} artefacts of 2-{max_artefact_s} s, {} true events",
        true_events.len()
    );
    println!("notifications (raised, excluding low-priority trend pre-alerts):");
    println!("  naive per-sample thresholds: {naive_notifications}");
    println!("  wardlink:                    {wardlink_raised}");
    #[allow(clippy::cast_precision_loss)]
    let reduction = 100.0 * (1.0 - wardlink_raised as f64 / naive_notifications.max(1) as f64);
    println!("  reduction:                   {reduction:.1} %");
    for (kind, n) in &by_kind {
        println!("    {kind:<24} {n}");
    }
    println!("true events (detection delay after onset; limit delay in brackets):");
    let mut missed = 0;
    for (e, d) in true_events.iter().zip(&detections) {
        let delay_s = limits.of(e.sign).delay_s;
        match d {
            Some(ms) => println!(
                "  bed-{:02} {:<5} {:>5.1} min  detected after {:>5.1} s  [delay {delay_s} s]",
                e.patient + 1,
                e.sign.name(),
                e.len as f64 / 60_000.0,
                *ms as f64 / 1000.0
            ),
            None => {
                missed += 1;
                println!("  bed-{:02} {:<5} MISSED", e.patient + 1, e.sign.name());
            }
        }
    }
    println!("missed: {missed}");
}
