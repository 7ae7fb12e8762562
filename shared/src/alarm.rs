//! Per-vital alarm limits and the alarm state machine that turns readings into alarm events.
//!
//! Sans-IO: [`AlarmEngine::observe`] takes a reading and `now`, [`AlarmEngine::tick`] takes
//! `now`; both return the events to publish. The engine holds one condition state per patient
//! and alarm kind, so repeated samples never re-raise an active alarm.
//!
//! Each limit has an alarm delay (the condition must persist before it is raised: most
//! out-of-range samples are artefacts and resolve by themselves), an extreme threshold that
//! bypasses the delay, and a clearing hysteresis so a value hovering at the limit does not
//! chatter. Defaults follow common adult monitor presets and the NEWS2 score-3 boundaries
//! (Royal College of Physicians, NEWS2, 2017, chart 1).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::ids::PatientId;
use crate::time::Millis;
use crate::vitals::{Reading, VitalSign, Vitals};

/// Alarm priority, as in IEC 60601-1-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Awareness; no immediate action.
    Low,
    /// Prompt response required.
    Medium,
    /// Immediate response required.
    High,
}

/// Where an alarm episode stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition is present and nobody has acknowledged it.
    Raised,
    /// Nobody acknowledged in time; notification went further up the chain.
    Escalated,
    /// A clinician has acknowledged it.
    Acknowledged,
    /// The condition is over.
    Resolved,
}

/// One alarm event: a change in an episode's state or priority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmEvent {
    /// Stable for the whole episode.
    pub id: String,
    /// Whose alarm.
    pub patient: PatientId,
    /// What condition, e.g. `hr_high`.
    pub kind: String,
    /// Current priority.
    pub priority: Priority,
    /// Current state.
    pub state: AlertState,
    /// Human-readable summary, without patient identity.
    pub message: String,
    /// The values that caused this event.
    pub values: Vitals,
    /// When this event happened.
    pub ts: Millis,
}

/// Limits for one vital sign. `None` disables that side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitalLimits {
    /// Alarm when the value falls below this.
    pub low: Option<f32>,
    /// Alarm when the value rises above this.
    pub high: Option<f32>,
    /// Raise at once, with `high` priority, below this.
    pub low_extreme: Option<f32>,
    /// Raise at once, with `high` priority, above this.
    pub high_extreme: Option<f32>,
    /// How long the condition must persist before it is raised, in seconds.
    pub delay_s: u32,
    /// How far back inside the limit a value must come before the alarm clears.
    pub hysteresis: f32,
    /// Priority of a limit alarm that is not extreme.
    pub priority: Priority,
}

impl VitalLimits {
    const fn new(low: Option<f32>, high: Option<f32>, delay_s: u32, hysteresis: f32) -> Self {
        Self {
            low,
            high,
            low_extreme: None,
            high_extreme: None,
            delay_s,
            hysteresis,
            priority: Priority::Medium,
        }
    }
}

/// Alarm limits for every numeric vital sign (a ward's defaults or one patient's settings).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlarmLimits {
    /// Heart rate.
    pub hr: VitalLimits,
    /// Oxygen saturation.
    pub spo2: VitalLimits,
    /// Respiration rate.
    pub rr: VitalLimits,
    /// Temperature.
    pub temp: VitalLimits,
    /// Systolic blood pressure.
    pub sbp: VitalLimits,
    /// Diastolic blood pressure.
    pub dbp: VitalLimits,
}

impl Default for AlarmLimits {
    /// Adult defaults. High/low edges sit at the NEWS2 score-3 boundaries where one exists
    /// (HR ≤40 / ≥131, SpO2 scale 1 ≤91, RR ≤8 / ≥25, SBP ≤90 / ≥220, temperature ≤35.0).
    fn default() -> Self {
        Self {
            hr: VitalLimits {
                low_extreme: Some(30.0),
                high_extreme: Some(180.0),
                ..VitalLimits::new(Some(41.0), Some(130.0), 10, 5.0)
            },
            spo2: VitalLimits {
                low_extreme: Some(80.0),
                ..VitalLimits::new(Some(92.0), None, 15, 2.0)
            },
            rr: VitalLimits {
                low_extreme: Some(5.0),
                high_extreme: Some(35.0),
                ..VitalLimits::new(Some(9.0), Some(24.0), 15, 2.0)
            },
            temp: VitalLimits::new(Some(35.1), Some(39.0), 30, 0.2),
            sbp: VitalLimits {
                low_extreme: Some(70.0),
                ..VitalLimits::new(Some(91.0), Some(219.0), 10, 5.0)
            },
            dbp: VitalLimits::new(Some(40.0), Some(120.0), 10, 5.0),
        }
    }
}

impl AlarmLimits {
    /// The limits of one vital sign.
    pub fn of(&self, sign: VitalSign) -> &VitalLimits {
        match sign {
            VitalSign::Hr => &self.hr,
            VitalSign::Spo2 => &self.spo2,
            VitalSign::Rr => &self.rr,
            VitalSign::Temp => &self.temp,
            VitalSign::Sbp => &self.sbp,
            VitalSign::Dbp => &self.dbp,
        }
    }

    /// Checks that every limit is coherent; returns the offending key and reason.
    pub fn validate(&self) -> Result<(), (String, &'static str)> {
        for sign in VitalSign::ALL {
            let l = self.of(sign);
            let key = |k: &str| format!("{}.{k}", sign.name());
            if let (Some(lo), Some(hi)) = (l.low, l.high)
                && lo >= hi
            {
                return Err((key("low"), "must be below high"));
            }
            if let (Some(e), Some(lo)) = (l.low_extreme, l.low)
                && e > lo
            {
                return Err((key("low_extreme"), "must not be above low"));
            }
            if let (Some(e), Some(hi)) = (l.high_extreme, l.high)
                && e < hi
            {
                return Err((key("high_extreme"), "must not be below high"));
            }
            if !(l.hysteresis >= 0.0 && l.hysteresis.is_finite()) {
                return Err((key("hysteresis"), "must be a finite number >= 0"));
            }
        }
        Ok(())
    }
}

/// Which side of a limit a condition watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Low,
    High,
}

/// The alarm kind for one side of one vital, e.g. `hr_high`, `spo2_low`.
pub fn limit_kind(sign: VitalSign, low: bool) -> String {
    format!("{}_{}", sign.name(), if low { "low" } else { "high" })
}

#[derive(Debug, Clone)]
enum Condition {
    /// Violating since `since`; not yet raised.
    Pending { since: Millis, values: Vitals },
    /// Raised as episode `id`.
    Active { id: String, priority: Priority },
}

/// One patient's condition states, keyed by (vital, side).
#[derive(Debug, Default)]
struct PatientAlarms {
    conditions: BTreeMap<(VitalSign, Side), Condition>,
}

/// The alarm state machine for a ward.
#[derive(Debug)]
pub struct AlarmEngine {
    limits: AlarmLimits,
    id_prefix: String,
    next_id: u64,
    patients: HashMap<PatientId, PatientAlarms>,
}

impl AlarmEngine {
    /// An engine with the ward's limits. `id_prefix` (the edge id) makes episode ids unique
    /// across edges.
    pub fn new(limits: AlarmLimits, id_prefix: impl Into<String>) -> Self {
        Self {
            limits,
            id_prefix: id_prefix.into(),
            next_id: 0,
            patients: HashMap::new(),
        }
    }

    /// Feeds one reading received at `now`; returns the alarm events it causes.
    pub fn observe(&mut self, reading: &Reading, now: Millis) -> Vec<AlarmEvent> {
        let mut events = Vec::new();
        for sign in VitalSign::ALL {
            let Some(value) = reading.vitals.value(sign) else {
                continue;
            };
            for side in [Side::Low, Side::High] {
                if let Some(e) = self.step(&reading.patient, sign, side, value, reading, now) {
                    events.push(e);
                }
            }
        }
        events
    }

    /// Raises every pending condition whose delay has elapsed by `now`, so an alarm is not
    /// late when the device reports less often than the delay.
    pub fn tick(&mut self, now: Millis) -> Vec<AlarmEvent> {
        let mut due = Vec::new();
        for (patient, alarms) in &self.patients {
            for (&(sign, side), cond) in &alarms.conditions {
                if let Condition::Pending { since, values } = cond {
                    let delay = Millis::from(self.limits.of(sign).delay_s) * 1000;
                    if now - since >= delay {
                        due.push((patient.clone(), sign, side, *values));
                    }
                }
            }
        }
        due.into_iter()
            .map(|(patient, sign, side, values)| {
                let limits = *self.limits.of(sign);
                let value = values.value(sign).unwrap_or(f32::NAN);
                self.raise(&patient, sign, side, &limits, value, values, now)
            })
            .collect()
    }

    /// Forgets a patient's state (discharge).
    pub fn forget(&mut self, patient: &PatientId) {
        self.patients.remove(patient);
    }

    fn step(
        &mut self,
        patient: &PatientId,
        sign: VitalSign,
        side: Side,
        value: f32,
        reading: &Reading,
        now: Millis,
    ) -> Option<AlarmEvent> {
        let limits = *self.limits.of(sign);
        let (limit, extreme) = match side {
            Side::Low => (limits.low?, limits.low_extreme),
            Side::High => (limits.high?, limits.high_extreme),
        };
        let beyond = |threshold: f32| match side {
            Side::Low => value < threshold,
            Side::High => value > threshold,
        };
        let violating = beyond(limit);
        let is_extreme = extreme.is_some_and(beyond);
        let cleared = match side {
            Side::Low => value >= limit + limits.hysteresis,
            Side::High => value <= limit - limits.hysteresis,
        };
        let key = (sign, side);
        let state = self
            .patients
            .get(patient)
            .and_then(|p| p.conditions.get(&key))
            .cloned();
        match state {
            None if violating => {
                let delay = Millis::from(limits.delay_s) * 1000;
                if is_extreme || delay == 0 {
                    return Some(self.raise(
                        patient,
                        sign,
                        side,
                        &limits,
                        value,
                        reading.vitals,
                        now,
                    ));
                }
                self.set(
                    patient,
                    key,
                    Condition::Pending {
                        since: now,
                        values: reading.vitals,
                    },
                );
                None
            }
            None => None,
            Some(Condition::Pending { since, .. }) => {
                if !violating {
                    self.clear(patient, key);
                    return None;
                }
                let delay = Millis::from(limits.delay_s) * 1000;
                if is_extreme || now - since >= delay {
                    return Some(self.raise(
                        patient,
                        sign,
                        side,
                        &limits,
                        value,
                        reading.vitals,
                        now,
                    ));
                }
                self.set(
                    patient,
                    key,
                    Condition::Pending {
                        since,
                        values: reading.vitals,
                    },
                );
                None
            }
            Some(Condition::Active { id, priority }) => {
                if cleared {
                    self.clear(patient, key);
                    return Some(AlarmEvent {
                        id,
                        patient: patient.clone(),
                        kind: limit_kind(sign, side == Side::Low),
                        priority,
                        state: AlertState::Resolved,
                        message: format!(
                            "{} {} {} back within limits",
                            sign.label(),
                            fmt_value(value),
                            sign.unit()
                        ),
                        values: reading.vitals,
                        ts: now,
                    });
                }
                if is_extreme && priority < Priority::High {
                    // Worsening: same episode, higher priority, notify again.
                    self.set(
                        patient,
                        key,
                        Condition::Active {
                            id: id.clone(),
                            priority: Priority::High,
                        },
                    );
                    return Some(AlarmEvent {
                        id,
                        patient: patient.clone(),
                        kind: limit_kind(sign, side == Side::Low),
                        priority: Priority::High,
                        state: AlertState::Raised,
                        message: limit_message(sign, side, value, limit),
                        values: reading.vitals,
                        ts: now,
                    });
                }
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn raise(
        &mut self,
        patient: &PatientId,
        sign: VitalSign,
        side: Side,
        limits: &VitalLimits,
        value: f32,
        values: Vitals,
        now: Millis,
    ) -> AlarmEvent {
        let (limit, extreme) = match side {
            Side::Low => (limits.low, limits.low_extreme),
            Side::High => (limits.high, limits.high_extreme),
        };
        let is_extreme = extreme.is_some_and(|e| match side {
            Side::Low => value < e,
            Side::High => value > e,
        });
        let priority = if is_extreme {
            Priority::High
        } else {
            limits.priority
        };
        self.next_id += 1;
        let id = format!("{}-{:x}-{}", self.id_prefix, now, self.next_id);
        self.set(
            patient,
            (sign, side),
            Condition::Active {
                id: id.clone(),
                priority,
            },
        );
        AlarmEvent {
            id,
            patient: patient.clone(),
            kind: limit_kind(sign, side == Side::Low),
            priority,
            state: AlertState::Raised,
            message: limit_message(sign, side, value, limit.unwrap_or(f32::NAN)),
            values,
            ts: now,
        }
    }

    fn set(&mut self, patient: &PatientId, key: (VitalSign, Side), c: Condition) {
        self.patients
            .entry(patient.clone())
            .or_default()
            .conditions
            .insert(key, c);
    }

    fn clear(&mut self, patient: &PatientId, key: (VitalSign, Side)) {
        if let Some(p) = self.patients.get_mut(patient) {
            p.conditions.remove(&key);
        }
    }
}

fn fmt_value(v: f32) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn limit_message(sign: VitalSign, side: Side, value: f32, limit: f32) -> String {
    let (word, cmp) = match side {
        Side::Low => ("low", "<"),
        Side::High => ("high", ">"),
    };
    format!(
        "{} {word}: {} {} {cmp} {}",
        sign.label(),
        fmt_value(value),
        sign.unit(),
        fmt_value(limit)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient() -> PatientId {
        PatientId::new("bed-1").unwrap()
    }

    fn hr(v: f32, ts: Millis) -> Reading {
        Reading {
            patient: patient(),
            ts,
            vitals: Vitals {
                hr: Some(v),
                ..Vitals::default()
            },
        }
    }

    fn engine() -> AlarmEngine {
        AlarmEngine::new(AlarmLimits::default(), "edge")
    }

    #[test]
    fn normal_values_raise_nothing() {
        let mut e = engine();
        for (i, v) in [60.0, 72.0, 99.0, 130.0, 41.0].into_iter().enumerate() {
            let t = i64::try_from(i).unwrap() * 1000;
            assert!(e.observe(&hr(v, t), t).is_empty());
            assert!(e.tick(t + 500).is_empty());
        }
    }

    #[test]
    fn delay_must_elapse_before_raise() {
        let mut e = engine();
        assert!(e.observe(&hr(150.0, 0), 0).is_empty());
        assert!(e.observe(&hr(150.0, 9_000), 9_000).is_empty());
        let ev = e.observe(&hr(151.0, 10_000), 10_000);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, "hr_high");
        assert_eq!(ev[0].state, AlertState::Raised);
        assert_eq!(ev[0].priority, Priority::Medium);
        // Repeated samples do not re-raise.
        assert!(e.observe(&hr(152.0, 11_000), 11_000).is_empty());
    }

    #[test]
    fn transient_spike_never_raises() {
        let mut e = engine();
        assert!(e.observe(&hr(150.0, 0), 0).is_empty());
        assert!(e.observe(&hr(80.0, 2_000), 2_000).is_empty());
        assert!(e.tick(60_000).is_empty());
    }

    #[test]
    fn tick_raises_when_delay_elapses_between_samples() {
        let mut e = engine();
        assert!(e.observe(&hr(150.0, 0), 0).is_empty());
        assert!(e.tick(9_999).is_empty());
        let ev = e.tick(10_000);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].values.hr, Some(150.0));
        assert!(e.tick(20_000).is_empty());
    }

    #[test]
    fn extreme_bypasses_delay_and_worsening_keeps_episode() {
        let mut e = engine();
        let limits = AlarmLimits::default();
        assert!(e.observe(&hr(150.0, 0), 0).is_empty());
        let first = e.tick(10_000);
        assert_eq!(first[0].priority, Priority::Medium);
        let worse = e.observe(&hr(190.0, 11_000), 11_000);
        assert_eq!(worse.len(), 1);
        assert_eq!(worse[0].id, first[0].id);
        assert_eq!(worse[0].priority, Priority::High);
        assert!(limits.hr.high_extreme.is_some());

        let mut fresh = engine();
        let ev = fresh.observe(&hr(25.0, 0), 0);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, "hr_low");
        assert_eq!(ev[0].priority, Priority::High);
    }

    #[test]
    fn clears_only_past_hysteresis() {
        let mut e = engine();
        e.observe(&hr(150.0, 0), 0);
        let raised = e.tick(10_000);
        // 128 is inside the limit (130) but not past the 5 bpm hysteresis.
        assert!(e.observe(&hr(128.0, 11_000), 11_000).is_empty());
        let ev = e.observe(&hr(125.0, 12_000), 12_000);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].state, AlertState::Resolved);
        assert_eq!(ev[0].id, raised[0].id);
        // A new episode gets a new id.
        let again = e.observe(&hr(200.0, 13_000), 13_000);
        assert_ne!(again[0].id, raised[0].id);
    }

    #[test]
    fn patients_are_independent() {
        let mut e = engine();
        e.observe(&hr(150.0, 0), 0);
        let other = Reading {
            patient: PatientId::new("bed-2").unwrap(),
            ..hr(70.0, 5_000)
        };
        assert!(e.observe(&other, 5_000).is_empty());
        let ev = e.tick(10_000);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].patient, patient());
    }

    #[test]
    fn validation_names_the_key() {
        let mut l = AlarmLimits::default();
        assert_eq!(l.validate(), Ok(()));
        l.hr.low = Some(200.0);
        assert_eq!(l.validate().unwrap_err().0, "hr.low");
    }
}
