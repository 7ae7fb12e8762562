//! A normalised reading: one patient's vital signs at one instant, whatever the device format.

use serde::{Deserialize, Serialize};

use crate::ids::PatientId;
use crate::time::Millis;

/// Level of consciousness on the ACVPU scale (NEWS2 chart 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Acvpu {
    /// Alert.
    A,
    /// New confusion.
    C,
    /// Responds to voice.
    V,
    /// Responds to pain.
    P,
    /// Unresponsive.
    U,
}

/// The vital signs of the contract. Every field is optional; a reading carries at least one.
///
/// Units: `hr` beats/min, `spo2` %, `rr` breaths/min, `temp` °C, `sbp`/`dbp` mmHg,
/// `o2` = on supplemental oxygen.
/// (De)serialises every field, `None` included, because the wire codec (postcard) is not
/// self-describing; JSON output that omits absent fields goes through
/// [`crate::dashboard`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Vitals {
    /// Heart rate, beats/min.
    pub hr: Option<f32>,
    /// Peripheral oxygen saturation, %.
    pub spo2: Option<f32>,
    /// Respiration rate, breaths/min.
    pub rr: Option<f32>,
    /// Body temperature, °C.
    pub temp: Option<f32>,
    /// Systolic blood pressure, mmHg.
    pub sbp: Option<f32>,
    /// Diastolic blood pressure, mmHg.
    pub dbp: Option<f32>,
    /// On supplemental oxygen.
    pub o2: Option<bool>,
    /// Level of consciousness.
    pub acvpu: Option<Acvpu>,
}

impl Vitals {
    /// True when no field is present.
    pub fn is_empty(&self) -> bool {
        *self == Vitals::default()
    }

    /// The value of one numeric vital sign.
    pub fn value(&self, sign: VitalSign) -> Option<f32> {
        match sign {
            VitalSign::Hr => self.hr,
            VitalSign::Spo2 => self.spo2,
            VitalSign::Rr => self.rr,
            VitalSign::Temp => self.temp,
            VitalSign::Sbp => self.sbp,
            VitalSign::Dbp => self.dbp,
        }
    }
}

/// The numeric vital signs, for rules that apply to any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VitalSign {
    /// Heart rate.
    Hr,
    /// Oxygen saturation.
    Spo2,
    /// Respiration rate.
    Rr,
    /// Temperature.
    Temp,
    /// Systolic blood pressure.
    Sbp,
    /// Diastolic blood pressure.
    Dbp,
}

impl VitalSign {
    /// Every numeric vital sign.
    pub const ALL: [VitalSign; 6] = [
        VitalSign::Hr,
        VitalSign::Spo2,
        VitalSign::Rr,
        VitalSign::Temp,
        VitalSign::Sbp,
        VitalSign::Dbp,
    ];

    /// The contract's field name.
    pub fn name(self) -> &'static str {
        match self {
            VitalSign::Hr => "hr",
            VitalSign::Spo2 => "spo2",
            VitalSign::Rr => "rr",
            VitalSign::Temp => "temp",
            VitalSign::Sbp => "sbp",
            VitalSign::Dbp => "dbp",
        }
    }

    /// The name shown to people.
    pub fn label(self) -> &'static str {
        match self {
            VitalSign::Hr => "HR",
            VitalSign::Spo2 => "SpO2",
            VitalSign::Rr => "RR",
            VitalSign::Temp => "Temp",
            VitalSign::Sbp => "SBP",
            VitalSign::Dbp => "DBP",
        }
    }

    /// The unit shown to people.
    pub fn unit(self) -> &'static str {
        match self {
            VitalSign::Hr => "/min",
            VitalSign::Spo2 => "%",
            VitalSign::Rr => "/min",
            VitalSign::Temp => "°C",
            VitalSign::Sbp | VitalSign::Dbp => "mmHg",
        }
    }
}

/// One normalised reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Whose vital signs these are.
    pub patient: PatientId,
    /// When they were measured (device time, or the edge's receive time when absent).
    pub ts: Millis,
    /// The values.
    pub vitals: Vitals,
}

/// What a device says about the quality of the signal behind one reading (contract fields
/// `sq`, `pi`, `leads_off`; all optional). Judged at the edge by the alarm engine
/// ([`crate::alarm::QualitySettings`]); not carried to the hub, which learns of poor signal
/// through the technical alarm `signal_poor`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quality {
    /// The device's own signal quality figure, 0–100: qualifies every value of the reading.
    pub sq: Option<f32>,
    /// Perfusion index, %: qualifies the SpO2 value.
    pub pi: Option<f32>,
    /// ECG leads off: the heart rate and the (impedance) respiration rate are not measured.
    pub leads_off: Option<bool>,
}

impl Quality {
    /// Nothing reported: every value is taken at face value.
    pub fn is_unknown(&self) -> bool {
        *self == Quality::default()
    }
}
