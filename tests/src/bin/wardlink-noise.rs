//! `wardlink-noise`: how many notifications Wardlink's alarm engine produces on a realistic
//! ward, against a naive rule that alarms on every sample beyond a limit, and how quickly it
//! catches every true deterioration.
//!
//! Scripted traces, deterministic (a fixed seed), in virtual time — the engine is sans-IO, so
//! eight hours of a ward run in a second:
//! - every patient has physiological noise around a personal baseline, and the signal quality
//!   monitors report with each reading (`sq` 80–100, perfusion index 0.8–5 %);
//! - motion artefacts: probe slips (SpO2 drops to 70–88 % for 2–8 s) and movement (HR +30–60
//!   for 2–8 s), several per patient-hour. Most come with the quality signal a monitor gives
//!   (a probe slip: perfusion index 0.02–0.25 %; movement: `sq` 10–45, now and then leads
//!   off); one in five is not flagged at all, and only the alarm delays stand against it;
//! - true events: sustained tachycardia, desaturation or tachypnoea lasting minutes; half of
//!   them begin while the signal is poor (a window of 10–40 s of poor quality around onset).
//!
//! "Notifications" are `raised` events (a new episode or a worsening; updates of the values
//! are not notified): what would reach a clinician. The naive rule notifies on each transition
//! from a normal to an abnormal sample, whatever the quality. A true event counts as alarmed
//! in time when its alarm is raised within its delay + 2 s of its onset, or of the signal's
//! return to good quality for those that begin in poor signal.
//!
//! ```sh
//! cargo run --release -p wardlink-tests --bin wardlink-noise
//! ```

use wardlink_shared::alarm::{AlarmEngine, AlertState, RuleSettings};
use wardlink_shared::time::{Millis, Now};
use wardlink_shared::vitals::{Quality, VitalSign};
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

/// A true deterioration: `sign` beyond its limit from `start` for `len` ms; `poor`: a window
/// of poor signal quality for that sign around its onset.
#[derive(Debug, Clone, Copy)]
struct TrueEvent {
    patient: usize,
    sign: VitalSign,
    start: Millis,
    len: Millis,
    poor: Option<(Millis, Millis)>,
}

impl TrueEvent {
    /// From when the engine can see it: the onset, or the signal's return to good quality.
    fn visible_from(&self) -> Millis {
        self.poor.map_or(self.start, |(_, end)| end.max(self.start))
    }
}

/// What the monitor says of an artefact's quality.
#[derive(Debug, Clone, Copy)]
enum Flag {
    /// Perfusion index this low (a probe slip).
    Pi(f64),
    /// Signal quality this low (movement).
    Sq(f64),
    /// ECG leads off (movement).
    LeadsOff,
    /// Nothing: the artefact looks like a good reading.
    None,
}

#[derive(Clone, Copy)]
struct Artefact {
    start: Millis,
    len: Millis,
    sign: VitalSign,
    value: f64,
    flag: Flag,
}

/// The quality a monitor reports for `sign` when it is poor.
fn poor_for(sign: VitalSign, q: &mut Quality, rng: &mut Rng) {
    match sign {
        VitalSign::Spo2 => q.pi = Some(rng.range(0.02, 0.25) as f32),
        VitalSign::Rr => q.leads_off = Some(true),
        _ => q.sq = Some(rng.range(10.0, 45.0) as f32),
    }
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
            // Every other one begins in poor signal: from 10–20 s before onset to 0–20 s
            // after it.
            let poor = (p % 2 == 0).then(|| {
                let from = start - (rng.range(10.0, 20.0) * 1000.0) as Millis;
                (from, start + (rng.range(0.0, 20.0) * 1000.0) as Millis)
            });
            true_events.push(TrueEvent {
                patient: p,
                sign: kinds[p / 3 % 3],
                start,
                len: (rng.range(3.0, 20.0) * 60_000.0) as Millis,
                poor,
            });
        }
    }

    let mut engine = AlarmEngine::new(settings, "bench");
    // The same ward judged without the quality signals (delays and hysteresis only).
    let mut blind = AlarmEngine::new(settings, "blind");
    let mut blind_raised = 0usize;
    let mut wardlink_raised = 0usize;
    let mut naive_notifications = 0usize;
    let mut detections: Vec<Option<Millis>> = vec![None; true_events.len()];
    let mut flagged_total = 0usize;
    let mut artefacts_total = 0usize;
    let mut by_kind = std::collections::BTreeMap::new();

    for p in 0..PATIENTS {
        let patient =
            PatientId::new(format!("bed-{:02}", p + 1)).unwrap_or_else(|_| unreachable!());
        let base_hr = rng.range(62.0, 90.0);
        let base_spo2 = rng.range(95.0, 98.5);
        let base_rr = rng.range(12.0, 18.0);
        let base_pi = rng.range(0.8, 5.0);
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
            let flag = match (rng.unit(), sign) {
                (f, _) if f < 0.2 => Flag::None,
                (_, VitalSign::Spo2) => Flag::Pi(rng.range(0.02, 0.25)),
                (f, _) if f < 0.35 => Flag::LeadsOff,
                _ => Flag::Sq(rng.range(10.0, 45.0)),
            };
            if !matches!(flag, Flag::None) {
                flagged_total += 1;
            }
            artefacts.push(Artefact {
                start: t,
                len,
                sign,
                value,
                flag,
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
            let mut quality = Quality {
                sq: Some((92.0 + rng.noise(4.0)).clamp(80.0, 100.0) as f32),
                pi: Some((base_pi + rng.noise(0.2)).max(0.5) as f32),
                leads_off: Some(false),
            };
            for (_, e) in &mine {
                if let Some((from, to)) = e.poor
                    && t >= from
                    && t < to
                {
                    poor_for(e.sign, &mut quality, &mut rng);
                }
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
                    match a.flag {
                        Flag::Pi(pi) => quality.pi = Some(pi as f32),
                        Flag::Sq(sq) => quality.sq = Some(sq as f32),
                        Flag::LeadsOff => quality.leads_off = Some(true),
                        Flag::None => {}
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
            let mut events = engine
                .observe_with(&reading, &quality, true, virtual_now(t))
                .events;
            events.extend(engine.tick(virtual_now(t + STEP_MS / 2)));
            let mut unseen = blind.observe(&reading, virtual_now(t)).events;
            unseen.extend(blind.tick(virtual_now(t + STEP_MS / 2)));
            blind_raised += unseen
                .iter()
                .filter(|e| {
                    e.state == AlertState::Raised && !e.update && !e.kind.starts_with("trend_")
                })
                .count();
            for ev in events.iter().filter(|e| {
                e.state == AlertState::Raised && !e.update && !e.kind.starts_with("trend_")
            }) {
                wardlink_raised += 1;
                *by_kind
                    .entry(format!("{} {:?}", ev.kind, ev.priority))
                    .or_insert(0usize) += 1;
                for (idx, e) in &mine {
                    let kind_matches = ev.kind.starts_with(e.sign.name());
                    if kind_matches && ev.ts >= e.start && detections[*idx].is_none() {
                        detections[*idx] = Some(ev.ts - e.visible_from());
                    }
                }
            }
            t += STEP_MS;
        }
    }

    println!(
        "ward: {PATIENTS} patients x {HOURS} h at 1 Hz, {artefacts_total} artefacts of 2-{max_artefact_s} s ({flagged_total} flagged by signal quality), {} true events ({} beginning in poor signal)",
        true_events.len(),
        true_events.iter().filter(|e| e.poor.is_some()).count()
    );
    println!("notifications (raised, excluding low-priority trend pre-alerts):");
    println!("  naive per-sample thresholds: {naive_notifications}");
    println!("  wardlink, quality ignored:   {blind_raised}");
    println!("  wardlink:                    {wardlink_raised}");
    #[allow(clippy::cast_precision_loss)]
    let reduction = 100.0 * (1.0 - wardlink_raised as f64 / naive_notifications.max(1) as f64);
    println!("  reduction:                   {reduction:.1} %");
    for (kind, n) in &by_kind {
        println!("    {kind:<24} {n}");
    }
    println!(
        "true events (detection delay after onset, or after good signal returned; limit delay in brackets):"
    );
    let mut missed = 0;
    let mut late = 0;
    for (e, d) in true_events.iter().zip(&detections) {
        let delay_s = limits.of(e.sign).delay_s;
        match d {
            Some(ms) => {
                let in_time = *ms <= Millis::from(delay_s) * 1000 + 2000;
                if !in_time {
                    late += 1;
                }
                println!(
                    "  bed-{:02} {:<5} {:>5.1} min {:<19} detected after {:>5.1} s  [delay {delay_s} s]{}",
                    e.patient + 1,
                    e.sign.name(),
                    e.len as f64 / 60_000.0,
                    if e.poor.is_some() {
                        "(began poor signal)"
                    } else {
                        ""
                    },
                    *ms as f64 / 1000.0,
                    if in_time { "" } else { "  LATE" }
                );
            }
            None => {
                missed += 1;
                println!("  bed-{:02} {:<5} MISSED", e.patient + 1, e.sign.name());
            }
        }
    }
    println!("missed: {missed}, late: {late}");
}
