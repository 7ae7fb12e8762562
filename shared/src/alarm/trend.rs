//! Trend pre-alerts: a sustained rate of change over a window, before any limit is crossed
//! (e.g. heart rate +25/min over 10 minutes, SpO2 −4 points over 5 minutes).
//!
//! Readings are averaged into 10-second buckets, which smooths motion artefacts and bounds
//! memory (60 buckets for a 10-minute window, whatever the device's rate). The trend is the
//! least-squares slope over the buckets in the window, scaled to the window's length; it only
//! counts when the buckets cover most of the window, so a gap in the data is not a trend.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{Evaluation, Priority, Text};
use crate::time::Millis;
use crate::vitals::VitalSign;

const BUCKET_MS: Millis = 10_000;
/// Share of the window's buckets that must hold data.
const COVERAGE: f64 = 0.8;

/// One trend rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendRule {
    /// Change over the window that raises the pre-alert: positive for a rise, negative for a
    /// fall; 0 disables the rule.
    pub change: f32,
    /// Window length, seconds.
    pub window_s: u32,
}

/// Trend pre-alert settings of a ward (`[trends]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrendSettings {
    /// Heart rate.
    pub hr: TrendRule,
    /// Oxygen saturation.
    pub spo2: TrendRule,
    /// Respiration rate.
    pub rr: TrendRule,
}

impl Default for TrendSettings {
    fn default() -> Self {
        Self {
            hr: TrendRule {
                change: 25.0,
                window_s: 600,
            },
            spo2: TrendRule {
                change: -4.0,
                window_s: 300,
            },
            rr: TrendRule {
                change: 8.0,
                window_s: 600,
            },
        }
    }
}

impl TrendSettings {
    /// The signs with a trend rule, and their rules.
    pub(super) fn rules(&self) -> [(VitalSign, TrendRule); 3] {
        [
            (VitalSign::Hr, self.hr),
            (VitalSign::Spo2, self.spo2),
            (VitalSign::Rr, self.rr),
        ]
    }

    /// The longest window, which bounds what a series keeps.
    pub(super) fn longest_ms(&self) -> Millis {
        self.rules()
            .iter()
            .map(|(_, r)| Millis::from(r.window_s) * 1000)
            .max()
            .unwrap_or(0)
    }
}

/// Bucketed history of one vital sign.
#[derive(Debug, Default, Clone)]
pub(super) struct Series {
    /// (bucket start, sum, count), oldest first.
    buckets: VecDeque<(Millis, f64, u32)>,
}

impl Series {
    /// Adds a value measured at `ts` (the engine's measurement time, monotonic).
    pub(super) fn push(&mut self, ts: Millis, value: f32, keep_ms: Millis) {
        let start = ts - ts.rem_euclid(BUCKET_MS);
        match self.buckets.back_mut() {
            Some((s, sum, n)) if *s == start => {
                *sum += f64::from(value);
                *n += 1;
            }
            // A reading older than the newest bucket (late delivery) is not a trend input.
            Some((s, _, _)) if *s > start => return,
            _ => self.buckets.push_back((start, f64::from(value), 1)),
        }
        while self
            .buckets
            .front()
            .is_some_and(|(s, _, _)| *s < start - keep_ms)
        {
            self.buckets.pop_front();
        }
    }

    /// The least-squares change over the `window_ms` ending at the newest bucket, if the
    /// buckets cover enough of it.
    pub(super) fn change(&self, window_ms: Millis) -> Option<f64> {
        let newest = self.buckets.back()?.0;
        let points: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .filter(|(s, _, _)| *s > newest - window_ms)
            .map(|(s, sum, n)| {
                #[allow(clippy::cast_precision_loss)]
                let x = (s - newest) as f64;
                (x, sum / f64::from(*n))
            })
            .collect();
        #[allow(clippy::cast_precision_loss)]
        let needed = (window_ms / BUCKET_MS) as f64 * COVERAGE;
        #[allow(clippy::cast_precision_loss)]
        if (points.len() as f64) < needed.max(2.0) {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        let n = points.len() as f64;
        let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
        let my = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        if sxx == 0.0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        Some(sxy / sxx * window_ms as f64)
    }
}

/// Evaluates one trend rule on a series. Clears once the change is below half the trigger.
pub(super) fn evaluate(sign: VitalSign, rule: &TrendRule, series: &Series) -> Option<Evaluation> {
    if rule.change == 0.0 {
        return None;
    }
    let change = series.change(Millis::from(rule.window_s) * 1000)?;
    let trigger = f64::from(rule.change);
    // Same direction as the rule, as a fraction of it.
    let ratio = change / trigger;
    let rising = rule.change > 0.0;
    Some(Evaluation {
        kind: trend_kind(sign, rising),
        violating: ratio >= 1.0,
        extreme: false,
        bypass_delay: true,
        cleared: ratio < 0.5,
        priority: Priority::Low,
        delay_ms: 0,
        raise_message: Text::Trend {
            sign,
            rising,
            change,
            minutes: rule.window_s / 60,
        },
        clear_message: Text::TrendClear(sign),
        measure: None,
    })
}

/// The pre-alert kind of a trend rule, e.g. `trend_rr_rising`.
fn trend_kind(sign: VitalSign, rising: bool) -> &'static str {
    match (sign, rising) {
        (VitalSign::Hr, true) => "trend_hr_rising",
        (VitalSign::Hr, false) => "trend_hr_falling",
        (VitalSign::Spo2, true) => "trend_spo2_rising",
        (VitalSign::Spo2, false) => "trend_spo2_falling",
        (VitalSign::Rr, true) => "trend_rr_rising",
        (VitalSign::Rr, false) => "trend_rr_falling",
        (VitalSign::Temp, true) => "trend_temp_rising",
        (VitalSign::Temp, false) => "trend_temp_falling",
        (VitalSign::Sbp, true) => "trend_sbp_rising",
        (VitalSign::Sbp, false) => "trend_sbp_falling",
        (VitalSign::Dbp, true) => "trend_dbp_rising",
        (VitalSign::Dbp, false) => "trend_dbp_falling",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: impl Iterator<Item = (Millis, f32)>) -> Series {
        let mut s = Series::default();
        for (t, v) in values {
            s.push(t, v, 600_000);
        }
        s
    }

    #[test]
    fn a_steady_rise_measures_its_change() {
        // +30 over 10 minutes, one reading a second.
        let s = series((0..600).map(|i| (i * 1000, 70.0 + 30.0 * i as f32 / 600.0)));
        let change = s.change(600_000).unwrap();
        assert!((change - 30.0).abs() < 1.5, "{change}");
        let e = evaluate(VitalSign::Hr, &TrendSettings::default().hr, &s).unwrap();
        assert!(e.violating);
        assert_eq!(e.kind, "trend_hr_rising");
        assert_eq!(e.priority, Priority::Low);
    }

    #[test]
    fn noise_without_a_trend_does_not_trigger() {
        // ±8 bpm alternating noise around 80.
        let s = series((0..600).map(|i| (i * 1000, if i % 2 == 0 { 72.0 } else { 88.0 })));
        let e = evaluate(VitalSign::Hr, &TrendSettings::default().hr, &s).unwrap();
        assert!(!e.violating && e.cleared);
    }

    #[test]
    fn a_falling_saturation_is_a_falling_trend() {
        let s = series((0..300).map(|i| (i * 1000, 97.0 - 5.0 * i as f32 / 300.0)));
        let e = evaluate(VitalSign::Spo2, &TrendSettings::default().spo2, &s).unwrap();
        assert!(e.violating, "{:?}", s.change(300_000));
        assert_eq!(e.kind, "trend_spo2_falling");
        // A rising saturation is not a falling trend.
        let up = series((0..300).map(|i| (i * 1000, 92.0 + 5.0 * i as f32 / 300.0)));
        assert!(
            !evaluate(VitalSign::Spo2, &TrendSettings::default().spo2, &up)
                .unwrap()
                .violating
        );
    }

    #[test]
    fn too_little_data_is_no_trend() {
        // Two minutes of data cannot make a ten-minute trend.
        let s = series((0..120).map(|i| (i * 1000, 70.0 + i as f32)));
        assert!(s.change(600_000).is_none());
    }

    #[test]
    fn memory_is_bounded_by_the_window() {
        let s = series((0..36_000).map(|i| (i * 1000, 70.0)));
        assert!(s.buckets.len() <= 61, "{}", s.buckets.len());
    }
}
