//! Signal quality: which values of a reading the device itself says it could not measure
//! well, and the ward's thresholds for saying so.
//!
//! A value of poor quality neither starts, feeds nor resolves a physiological alarm and does
//! not count towards NEWS2 freshness: a wait for an alarm delay is paused while the signal is
//! poor and goes on when good readings return. Poor quality that persists raises the technical
//! alarm `signal_poor` (low priority) instead.

use serde::{Deserialize, Serialize};

use super::limits::Side;
use super::text::Text;
use super::{Condition, ConditionKey, Evaluation, PatientState, Priority};
use crate::time::{Millis, Now};
use crate::vitals::{Quality, VitalSign, Vitals};

/// A ward's signal quality thresholds (`edge.toml`'s `[quality]`).
///
/// Defaults, from published practice:
/// - `pi_min` 0.3 %: Philips IntelliVue MP5 Instructions for Use (M8105-9001C, 2008,
///   "Perfusion Numeric"): "above 1 is optimal, between 0.3–1 is acceptable; below 0.3 is
///   marginal; reposition the sensor".
/// - `sq_min` 50 (of 100): Li & Clifford's photoplethysmogram quality index (Physiol. Meas.
///   33:1491, 2012) scores on 0–100 and accepts no signal whose first index is under 50 (all
///   of them at 70 or more is "acceptable"); below 50 is unacceptable by every one of its
///   rules. A device's own figure is taken on the same scale.
/// - `leads_off`: an ECG with leads off measures nothing; monitors treat it as a technical
///   alarm condition ("INOP", e.g. Philips IntelliVue MX40 manual), and the impedance
///   respiration rate comes from the same electrodes.
/// - `poor_after_s` 30 s: pulse oximeters announce an inadequate signal as a technical alarm
///   after 10 s (Nonin, dashes instead of values) to 50 s (Nellcor N-290/N-295 while motion
///   is detected, then a low-priority alarm).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualitySettings {
    /// A device quality figure (`sq`, 0–100) below this is poor.
    pub sq_min: f32,
    /// A perfusion index (`pi`, %) below this makes the SpO2 value poor.
    pub pi_min: f32,
    /// Poor quality for this long (seconds) raises `signal_poor`.
    pub poor_after_s: u32,
}

impl Default for QualitySettings {
    fn default() -> Self {
        Self {
            sq_min: 50.0,
            pi_min: 0.3,
            poor_after_s: 30,
        }
    }
}

impl QualitySettings {
    /// Checks the thresholds; returns the offending key and reason.
    pub fn validate(&self) -> Result<(), (String, &'static str)> {
        if !(0.0..=100.0).contains(&self.sq_min) {
            return Err(("quality.sq_min".into(), "must be within 0–100"));
        }
        if !(0.0..=100.0).contains(&self.pi_min) {
            return Err(("quality.pi_min".into(), "must be within 0–100"));
        }
        if self.poor_after_s == 0 {
            return Err(("quality.poor_after_s".into(), "must be at least 1"));
        }
        Ok(())
    }
}

/// The vital signs of one reading whose values are of poor quality.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Poor([bool; 6]);

impl Poor {
    /// Judges `quality` for the values present in `vitals`.
    pub(crate) fn judge(vitals: &Vitals, quality: &Quality, settings: &QualitySettings) -> Self {
        let mut poor = Poor::default();
        if quality.is_unknown() {
            return poor;
        }
        let all = quality.sq.is_some_and(|sq| sq < settings.sq_min);
        for sign in VitalSign::ALL {
            if vitals.value(sign).is_none() {
                continue;
            }
            let by_sign = match sign {
                VitalSign::Spo2 => quality.pi.is_some_and(|pi| pi < settings.pi_min),
                VitalSign::Hr | VitalSign::Rr => quality.leads_off == Some(true),
                _ => false,
            };
            poor.0[index(sign)] = all || by_sign;
        }
        poor
    }

    /// Whether `sign`'s value is poor.
    pub(crate) fn has(self, sign: VitalSign) -> bool {
        self.0[index(sign)]
    }

    /// This patient's signs in poor signal after a reading whose values are `vitals`, judged
    /// `reading`: each sign the reading measured takes the reading's verdict; the others keep
    /// theirs (devices of one patient may send separate readings, and an SpO2 in poor signal
    /// stays so until a good SpO2 value arrives, whatever else comes meanwhile).
    pub(crate) fn after(self, vitals: &Vitals, reading: Poor) -> Poor {
        let mut next = self;
        for sign in VitalSign::ALL {
            if vitals.value(sign).is_some() {
                next.0[index(sign)] = reading.has(sign);
            }
        }
        next
    }

    /// Whether any value is poor.
    pub(crate) fn any(self) -> bool {
        self.0.iter().any(|p| *p)
    }

    /// `vitals` without its poor values.
    pub(crate) fn good(self, vitals: &Vitals) -> Vitals {
        let keep = |sign, v: Option<f32>| if self.has(sign) { None } else { v };
        Vitals {
            hr: keep(VitalSign::Hr, vitals.hr),
            spo2: keep(VitalSign::Spo2, vitals.spo2),
            rr: keep(VitalSign::Rr, vitals.rr),
            temp: keep(VitalSign::Temp, vitals.temp),
            sbp: keep(VitalSign::Sbp, vitals.sbp),
            dbp: keep(VitalSign::Dbp, vitals.dbp),
            ..*vitals
        }
    }

    /// The poor signs' labels, for the technical alarm's text: `SpO2, HR`.
    pub(crate) fn labels(self) -> String {
        VitalSign::ALL
            .iter()
            .filter(|s| self.has(**s))
            .map(|s| s.label())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Pauses (`poor`) or resumes the waits of `sign`'s limit conditions; true if one changed.
/// A resumed wait goes on from where it stood: the poor stretch does not count. An open
/// episode's wait for a worsening starts again after poor signal (it must be seen in good
/// readings for its whole delay).
pub(super) fn pause(state: &mut PatientState, sign: VitalSign, poor: bool, now: Now) -> bool {
    let mut changed = false;
    for side in [Side::Low, Side::High] {
        let cond = state.conditions.get_mut(&ConditionKey::Limit(sign, side));
        if poor && let Some(Condition::Active(open)) = cond {
            if let Some(track) = open.track.as_mut() {
                track.worse_since = None;
            }
            continue;
        }
        if let Some(Condition::Pending { since, paused, .. }) = cond {
            match (poor, *paused) {
                (true, None) => *paused = Some(now.mono),
                (false, Some(at)) => {
                    *since += now.mono.saturating_duration_since(at);
                    *paused = None;
                }
                _ => continue,
            }
            changed = true;
        }
    }
    changed
}

/// The reading's signal quality: poor values for `poor_after_s` raise `signal_poor`; a
/// reading of good quality clears it.
pub(super) fn signal_poor(poor: Poor, settings: &QualitySettings) -> Evaluation {
    let any = poor.any();
    Evaluation {
        kind: "signal_poor",
        violating: any,
        extreme: false,
        bypass_delay: false,
        cleared: !any,
        priority: Priority::Low,
        delay_ms: Millis::from(settings.poor_after_s) * 1000,
        raise_message: if any {
            Text::Owned(format!("Poor signal quality: {}", poor.labels()))
        } else {
            Text::Fixed("")
        },
        clear_message: Text::Fixed("Signal quality good again"),
        measure: None,
    }
}

fn index(sign: VitalSign) -> usize {
    match sign {
        VitalSign::Hr => 0,
        VitalSign::Spo2 => 1,
        VitalSign::Rr => 2,
        VitalSign::Temp => 3,
        VitalSign::Sbp => 4,
        VitalSign::Dbp => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vitals() -> Vitals {
        Vitals {
            hr: Some(80.0),
            spo2: Some(90.0),
            rr: Some(16.0),
            temp: Some(37.0),
            ..Vitals::default()
        }
    }

    #[test]
    fn each_field_qualifies_its_own_values() {
        let s = QualitySettings::default();
        let v = vitals();
        assert!(!Poor::judge(&v, &Quality::default(), &s).any());
        let low_pi = Poor::judge(
            &v,
            &Quality {
                pi: Some(0.1),
                ..Quality::default()
            },
            &s,
        );
        assert_eq!(low_pi.labels(), "SpO2");
        let leads = Poor::judge(
            &v,
            &Quality {
                leads_off: Some(true),
                ..Quality::default()
            },
            &s,
        );
        assert_eq!(leads.labels(), "HR, RR");
        let good = leads.good(&v);
        assert_eq!((good.hr, good.spo2, good.rr), (None, Some(90.0), None));
        let low_sq = Poor::judge(
            &v,
            &Quality {
                sq: Some(20.0),
                pi: Some(4.0),
                leads_off: Some(false),
            },
            &s,
        );
        assert_eq!(low_sq.labels(), "HR, SpO2, RR, Temp");
        // At the threshold is good; absent values are never poor.
        let at = Poor::judge(
            &Vitals {
                hr: Some(80.0),
                ..Vitals::default()
            },
            &Quality {
                sq: Some(50.0),
                pi: Some(0.0),
                ..Quality::default()
            },
            &s,
        );
        assert!(!at.any());
    }
}
