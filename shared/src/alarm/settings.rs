//! A ward's alarm settings (`edge.toml`'s `[alarms]`, `[news2]`, `[signal]`, `[trends]`,
//! `[silence]`, `[episodes]`) and one patient's own, with their validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Priority;
use super::limits::{AlarmLimits, VitalLimits};
use super::quality::QualitySettings;
use super::trend::TrendSettings;
use crate::news2::Spo2Scale;
use crate::vitals::VitalSign;

/// Episode settings of a ward (`[episodes]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EpisodeSettings {
    /// An acknowledged alarm that is still present notifies again after this long (seconds;
    /// 0 never).
    pub repeat_acknowledged_s: u32,
    /// How much further an open episode's measure must go, past what was last announced,
    /// to count as a worsening (a new version, notified again, an earlier acknowledgement
    /// void); a rise in priority always does.
    pub worsen_by: WorsenSteps,
}

impl Default for EpisodeSettings {
    fn default() -> Self {
        Self {
            repeat_acknowledged_s: 1800,
            worsen_by: WorsenSteps::default(),
        }
    }
}

/// The worsening steps of `[episodes.worsen_by]`: for a limit alarm, how far the value must
/// move further beyond the limit; for `news2`, how many points the score must rise.
///
/// Defaults are about one NEWS2 band of each parameter (Royal College of Physicians, NEWS2,
/// 2017, chart 1: heart rate bands 10–20 /min wide, respiration 3–4 /min, SpO2 2 points,
/// systolic pressure 10 mmHg, temperature 1 °C): a change that moves the patient's score,
/// not the noise of one device. Two NEWS2 points (e.g. 8 → 10) take the score to a worse
/// state than one parameter wobbling across a band edge does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorsenSteps {
    /// Heart rate, /min.
    pub hr: f32,
    /// SpO2, %.
    pub spo2: f32,
    /// Respiration rate, /min.
    pub rr: f32,
    /// Temperature, °C.
    pub temp: f32,
    /// Systolic pressure, mmHg.
    pub sbp: f32,
    /// Diastolic pressure, mmHg.
    pub dbp: f32,
    /// NEWS2 points.
    pub news2: u8,
}

impl Default for WorsenSteps {
    fn default() -> Self {
        Self {
            hr: 10.0,
            spo2: 3.0,
            rr: 4.0,
            temp: 0.5,
            sbp: 10.0,
            dbp: 10.0,
            news2: 2,
        }
    }
}

impl WorsenSteps {
    /// The step of one vital sign.
    pub fn of(&self, sign: VitalSign) -> f32 {
        match sign {
            VitalSign::Hr => self.hr,
            VitalSign::Spo2 => self.spo2,
            VitalSign::Rr => self.rr,
            VitalSign::Temp => self.temp,
            VitalSign::Sbp => self.sbp,
            VitalSign::Dbp => self.dbp,
        }
    }

    fn validate(&self) -> Result<(), (String, &'static str)> {
        for sign in VitalSign::ALL {
            let step = self.of(sign);
            if !(step.is_finite() && step > 0.0) {
                return Err((
                    format!("episodes.worsen_by.{}", sign.name()),
                    "must be above 0",
                ));
            }
        }
        if self.news2 == 0 {
            return Err(("episodes.worsen_by.news2".into(), "must be at least 1"));
        }
        Ok(())
    }
}

/// Silence settings of a ward (`[silence]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SilenceSettings {
    /// A silence covers high-priority physiological alarms only for this long after it
    /// began (seconds); after that they notify again however long the silence was.
    pub max_high_s: u32,
}

impl Default for SilenceSettings {
    fn default() -> Self {
        Self { max_high_s: 120 }
    }
}

/// NEWS2 settings of a ward (`[news2]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct News2Settings {
    /// SpO2 scale for patients without their own setting.
    pub scale: Spo2Scale,
    /// A parameter older than this (seconds) no longer counts towards the score.
    pub freshness_s: u32,
    /// How long a trigger must persist before the `news2` alarm is raised, in seconds.
    pub delay_s: u32,
}

impl Default for News2Settings {
    fn default() -> Self {
        Self {
            scale: Spo2Scale::One,
            freshness_s: 600,
            delay_s: 10,
        }
    }
}

/// Technical alarm settings (`[signal]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalSettings {
    /// `signal_lost` after this many of the device's observed intervals without data…
    pub lost_after_intervals: f32,
    /// …but never sooner than this many seconds.
    pub lost_min_s: u32,
    /// Priority of `signal_lost` (`low` or `medium`: technical alarms never outrank
    /// physiological ones).
    pub priority: Priority,
}

impl Default for SignalSettings {
    fn default() -> Self {
        Self {
            lost_after_intervals: 3.0,
            lost_min_s: 30,
            priority: Priority::Medium,
        }
    }
}

/// One patient's own settings, set at the hub by a clinician and applied at the edge. Each
/// vital listed replaces the ward's limits for that vital.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PatientSettings {
    /// Limits per vital sign, replacing the ward's.
    pub limits: BTreeMap<VitalSign, VitalLimits>,
    /// SpO2 scale, replacing the ward's (scale 2 must be prescribed).
    pub spo2_scale: Option<Spo2Scale>,
}

impl PatientSettings {
    /// The ward's limits with this patient's replacements.
    pub fn apply(&self, ward: &AlarmLimits) -> AlarmLimits {
        let mut limits = *ward;
        for (sign, l) in &self.limits {
            *limits.of_mut(*sign) = *l;
        }
        limits
    }

    /// Checks the replacements on their own; returns the offending key and reason.
    pub fn validate(&self) -> Result<(), (String, &'static str)> {
        self.apply(&AlarmLimits::default()).validate()
    }
}

/// Everything the engine decides with.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RuleSettings {
    /// Per-vital limits.
    pub limits: AlarmLimits,
    /// NEWS2.
    pub news2: News2Settings,
    /// Technical alarms.
    pub signal: SignalSettings,
    /// Trend pre-alerts.
    pub trends: TrendSettings,
    /// Silences.
    pub silence: SilenceSettings,
    /// Episodes.
    pub episodes: EpisodeSettings,
    /// Signal quality thresholds.
    pub quality: QualitySettings,
}

impl RuleSettings {
    /// Checks coherence; returns the offending key (relative to the config file) and reason.
    pub fn validate(&self) -> Result<(), (String, &'static str)> {
        self.limits
            .validate()
            .map_err(|(k, r)| (format!("alarms.{k}"), r))?;
        if self.signal.priority == Priority::High {
            return Err((
                "signal.priority".into(),
                "technical alarms are low or medium",
            ));
        }
        self.quality.validate()?;
        self.episodes.worsen_by.validate()?;
        if !(self.signal.lost_after_intervals >= 1.0
            && self.signal.lost_after_intervals.is_finite())
        {
            return Err(("signal.lost_after_intervals".into(), "must be at least 1"));
        }
        Ok(())
    }
}
