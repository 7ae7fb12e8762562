//! Per-vital alarm limits: thresholds, alarm delays, extreme bypass and clearing hysteresis.
//!
//! Defaults follow common adult monitor presets and the NEWS2 score-3 boundaries (Royal
//! College of Physicians, NEWS2, 2017, chart 1).

use serde::{Deserialize, Serialize};

use super::{Evaluation, Priority, Text};
use crate::vitals::VitalSign;

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
    /// An extreme value bypasses the delay when the value got there through the alarm band
    /// (a physiological fall or rise). A jump straight from normal to extreme is what a
    /// slipping probe or a loose lead produces, so it must persist this long (seconds, at most
    /// `delay_s`) first.
    #[serde(default)]
    pub extreme_confirm_s: u32,
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
            extreme_confirm_s: 3,
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
                // Probe slips last seconds; a real fall to below 80 % passes through 80–91.
                extreme_confirm_s: 8,
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

    /// The limits of one vital sign, to change.
    pub fn of_mut(&mut self, sign: VitalSign) -> &mut VitalLimits {
        match sign {
            VitalSign::Hr => &mut self.hr,
            VitalSign::Spo2 => &mut self.spo2,
            VitalSign::Rr => &mut self.rr,
            VitalSign::Temp => &mut self.temp,
            VitalSign::Sbp => &mut self.sbp,
            VitalSign::Dbp => &mut self.dbp,
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
            if l.low_extreme.is_some() && l.low.is_none() {
                return Err((key("low_extreme"), "needs a low limit"));
            }
            if l.high_extreme.is_some() && l.high.is_none() {
                return Err((key("high_extreme"), "needs a high limit"));
            }
            if !(l.hysteresis >= 0.0 && l.hysteresis.is_finite()) {
                return Err((key("hysteresis"), "must be a finite number >= 0"));
            }
        }
        Ok(())
    }

    /// Evaluates one side of one vital's limits against `value`; `None` when that side is off.
    /// `through_band`: the latest non-extreme sample was already beyond the limit.
    pub(super) fn evaluate(
        &self,
        sign: VitalSign,
        side: Side,
        value: f32,
        through_band: bool,
    ) -> Option<Evaluation> {
        let l = self.of(sign);
        let (limit, extreme) = match side {
            Side::Low => (l.low?, l.low_extreme),
            Side::High => (l.high?, l.high_extreme),
        };
        let beyond = |threshold: f32| match side {
            Side::Low => value < threshold,
            Side::High => value > threshold,
        };
        let is_extreme = extreme.is_some_and(beyond);
        Some(Evaluation {
            kind: limit_kind(sign, side),
            violating: beyond(limit),
            extreme: is_extreme,
            bypass_delay: is_extreme && through_band,
            cleared: match side {
                Side::Low => value >= limit + l.hysteresis,
                Side::High => value <= limit - l.hysteresis,
            },
            priority: if is_extreme {
                Priority::High
            } else {
                l.priority
            },
            delay_ms: i64::from(if is_extreme {
                l.extreme_confirm_s.min(l.delay_s)
            } else {
                l.delay_s
            }) * 1000,
            raise_message: Text::Limit {
                sign,
                side,
                value,
                limit,
            },
            clear_message: Text::LimitClear { sign, value },
            measure: Some(value),
        })
    }
}

/// The alarm kind of one side of one vital's limits, e.g. `hr_high`.
fn limit_kind(sign: VitalSign, side: Side) -> &'static str {
    match (sign, side) {
        (VitalSign::Hr, Side::Low) => "hr_low",
        (VitalSign::Hr, Side::High) => "hr_high",
        (VitalSign::Spo2, Side::Low) => "spo2_low",
        (VitalSign::Spo2, Side::High) => "spo2_high",
        (VitalSign::Rr, Side::Low) => "rr_low",
        (VitalSign::Rr, Side::High) => "rr_high",
        (VitalSign::Temp, Side::Low) => "temp_low",
        (VitalSign::Temp, Side::High) => "temp_high",
        (VitalSign::Sbp, Side::Low) => "sbp_low",
        (VitalSign::Sbp, Side::High) => "sbp_high",
        (VitalSign::Dbp, Side::Low) => "dbp_low",
        (VitalSign::Dbp, Side::High) => "dbp_high",
    }
}

/// Which side of a limit a condition watches.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub(crate) enum Side {
    Low,
    High,
}

/// A value as people read it: whole numbers without decimals.
pub(crate) fn fmt_value(v: f32) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key() {
        let mut l = AlarmLimits::default();
        assert_eq!(l.validate(), Ok(()));
        l.hr.low = Some(200.0);
        assert_eq!(l.validate().unwrap_err().0, "hr.low");
    }

    #[test]
    fn evaluation_of_each_side() {
        let l = AlarmLimits::default();
        let e = l.evaluate(VitalSign::Hr, Side::High, 150.0, false).unwrap();
        assert!(e.violating && !e.bypass_delay && !e.cleared);
        assert_eq!(e.kind, "hr_high");
        assert_eq!(e.priority, Priority::Medium);
        assert_eq!(e.delay_ms, 10_000);
        let e = l.evaluate(VitalSign::Hr, Side::High, 190.0, true).unwrap();
        assert!(e.bypass_delay);
        assert_eq!(e.priority, Priority::High);
        // Inside the limit but within the hysteresis: neither violating nor cleared.
        let e = l.evaluate(VitalSign::Hr, Side::High, 128.0, true).unwrap();
        assert!(!e.violating && !e.cleared);
        assert!(
            l.evaluate(VitalSign::Spo2, Side::High, 100.0, false)
                .is_none()
        );
        let e = l.evaluate(VitalSign::Spo2, Side::Low, 79.0, true).unwrap();
        assert_eq!((e.kind, e.priority), ("spo2_low", Priority::High));
        assert!(e.bypass_delay);
        // Straight from normal to extreme: confirmed first, for the shorter of the two delays.
        let e = l.evaluate(VitalSign::Spo2, Side::Low, 75.0, false).unwrap();
        assert!(!e.bypass_delay);
        assert_eq!(e.delay_ms, 8_000);
    }
}
