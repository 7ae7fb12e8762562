//! NEWS2, the National Early Warning Score 2 (Royal College of Physicians, *National Early
//! Warning Score (NEWS) 2: Standardising the assessment of acute-illness severity in the NHS*,
//! London 2017, chart 1 "The NEWS scoring system" and chart 2 "NEWS thresholds and triggers").
//!
//! Seven parameters each score 0–3; the aggregate and any single parameter scoring 3 set the
//! clinical response. SpO2 has two scales: scale 2 is for patients with hypercapnic respiratory
//! failure whose target saturation is 88–92 %, prescribed by a clinician.
//!
//! Chart values are whole numbers (temperature one decimal): readings are rounded the same way
//! before scoring, so 90.6 bpm scores as 91.

use serde::{Deserialize, Serialize};

use crate::vitals::Acvpu;

/// Which SpO2 scale a patient is scored on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Spo2Scale {
    /// Scale 1: everyone unless prescribed otherwise.
    #[default]
    One,
    /// Scale 2: hypercapnic respiratory failure, target 88–92 %.
    Two,
}

impl TryFrom<u8> for Spo2Scale {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(Spo2Scale::One),
            2 => Ok(Spo2Scale::Two),
            _ => Err(format!("SpO2 scale must be 1 or 2, not {v}")),
        }
    }
}

impl From<Spo2Scale> for u8 {
    fn from(s: Spo2Scale) -> u8 {
        match s {
            Spo2Scale::One => 1,
            Spo2Scale::Two => 2,
        }
    }
}

/// The seven observations NEWS2 needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observations {
    /// Respiration rate, breaths/min.
    pub rr: f32,
    /// SpO2, %.
    pub spo2: f32,
    /// On supplemental oxygen.
    pub on_oxygen: bool,
    /// Systolic blood pressure, mmHg.
    pub sbp: f32,
    /// Pulse, beats/min.
    pub hr: f32,
    /// Consciousness.
    pub acvpu: Acvpu,
    /// Temperature, °C.
    pub temp: f32,
}

/// The RCP's clinical risk bands (chart 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Aggregate 0–4, no single 3.
    Low,
    /// A single parameter scores 3 (aggregate below 5): urgent ward-based response.
    LowMedium,
    /// Aggregate 5–6: urgent response.
    Medium,
    /// Aggregate 7 or more: emergency response.
    High,
}

/// A NEWS2 score: the aggregate and each parameter's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct News2 {
    /// Aggregate score, 0–20.
    pub total: u8,
    /// Respiration rate part.
    pub rr: u8,
    /// SpO2 part (on `scale`).
    pub spo2: u8,
    /// Air or oxygen part.
    pub o2: u8,
    /// Systolic blood pressure part.
    pub sbp: u8,
    /// Pulse part.
    pub hr: u8,
    /// Consciousness part.
    pub acvpu: u8,
    /// Temperature part.
    pub temp: u8,
    /// The SpO2 scale used.
    pub scale: Spo2Scale,
}

impl News2 {
    /// Whether any single parameter scores 3.
    pub fn any_three(&self) -> bool {
        [
            self.rr, self.spo2, self.o2, self.sbp, self.hr, self.acvpu, self.temp,
        ]
        .contains(&3)
    }

    /// The clinical risk band.
    pub fn risk(&self) -> Risk {
        match self.total {
            7.. => Risk::High,
            5..=6 => Risk::Medium,
            _ if self.any_three() => Risk::LowMedium,
            _ => Risk::Low,
        }
    }
}

fn whole(v: f32) -> i32 {
    // Observations are range-checked at the edge's door; this is far inside i32.
    #[allow(clippy::cast_possible_truncation)]
    let r = v.round() as i32;
    r
}

fn rr_score(rr: i32) -> u8 {
    match rr {
        ..=8 => 3,
        9..=11 => 1,
        12..=20 => 0,
        21..=24 => 2,
        _ => 3,
    }
}

fn spo2_score(spo2: i32, on_oxygen: bool, scale: Spo2Scale) -> u8 {
    match scale {
        Spo2Scale::One => match spo2 {
            ..=91 => 3,
            92..=93 => 2,
            94..=95 => 1,
            _ => 0,
        },
        Spo2Scale::Two => match spo2 {
            ..=83 => 3,
            84..=85 => 2,
            86..=87 => 1,
            88..=92 => 0,
            // 93 and above: no points on air; on oxygen, over-oxygenation scores.
            _ if !on_oxygen => 0,
            93..=94 => 1,
            95..=96 => 2,
            _ => 3,
        },
    }
}

fn sbp_score(sbp: i32) -> u8 {
    match sbp {
        ..=90 => 3,
        91..=100 => 2,
        101..=110 => 1,
        111..=219 => 0,
        _ => 3,
    }
}

fn hr_score(hr: i32) -> u8 {
    match hr {
        ..=40 => 3,
        41..=50 => 1,
        51..=90 => 0,
        91..=110 => 1,
        111..=130 => 2,
        _ => 3,
    }
}

fn temp_score(temp: f32) -> u8 {
    // In tenths of a degree, as charted.
    match whole(temp * 10.0) {
        ..=350 => 3,
        351..=360 => 1,
        361..=380 => 0,
        381..=390 => 1,
        _ => 2,
    }
}

/// Scores a complete set of observations.
pub fn score(o: &Observations, scale: Spo2Scale) -> News2 {
    let parts = News2 {
        total: 0,
        rr: rr_score(whole(o.rr)),
        spo2: spo2_score(whole(o.spo2), o.on_oxygen, scale),
        o2: if o.on_oxygen { 2 } else { 0 },
        sbp: sbp_score(whole(o.sbp)),
        hr: hr_score(whole(o.hr)),
        acvpu: if o.acvpu == Acvpu::A { 0 } else { 3 },
        temp: temp_score(o.temp),
        scale,
    };
    News2 {
        total: parts.rr + parts.spo2 + parts.o2 + parts.sbp + parts.hr + parts.acvpu + parts.temp,
        ..parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A patient scoring 0 everywhere; cases change one parameter.
    const CALM: Observations = Observations {
        rr: 16.0,
        spo2: 97.0,
        on_oxygen: false,
        sbp: 120.0,
        hr: 70.0,
        acvpu: Acvpu::A,
        temp: 37.0,
    };

    #[test]
    fn calm_scores_zero() {
        let s = score(&CALM, Spo2Scale::One);
        assert_eq!(s.total, 0);
        assert_eq!(s.risk(), Risk::Low);
    }

    #[test]
    fn respiration_rate_bands() {
        // Both sides of every boundary: ≤8 | 9–11 | 12–20 | 21–24 | ≥25.
        for (rr, want) in [
            (8.0, 3),
            (9.0, 1),
            (11.0, 1),
            (12.0, 0),
            (20.0, 0),
            (21.0, 2),
            (24.0, 2),
            (25.0, 3),
            (0.0, 3),
            (60.0, 3),
        ] {
            let s = score(&Observations { rr, ..CALM }, Spo2Scale::One);
            assert_eq!((s.rr, s.total), (want, want), "rr {rr}");
        }
    }

    #[test]
    fn spo2_scale_1_bands() {
        // ≤91 | 92–93 | 94–95 | ≥96, same on air or oxygen.
        for on_oxygen in [false, true] {
            for (spo2, want) in [
                (91.0, 3),
                (92.0, 2),
                (93.0, 2),
                (94.0, 1),
                (95.0, 1),
                (96.0, 0),
                (100.0, 0),
                (50.0, 3),
            ] {
                let s = score(
                    &Observations {
                        spo2,
                        on_oxygen,
                        ..CALM
                    },
                    Spo2Scale::One,
                );
                assert_eq!(s.spo2, want, "spo2 {spo2} oxygen {on_oxygen}");
                assert_eq!(s.total, want + if on_oxygen { 2 } else { 0 });
            }
        }
    }

    #[test]
    fn spo2_scale_2_bands() {
        // ≤83 | 84–85 | 86–87 | 88–92 | ≥93 on air; on oxygen 93–94 | 95–96 | ≥97.
        let on_air = [
            (83.0, 3),
            (84.0, 2),
            (85.0, 2),
            (86.0, 1),
            (87.0, 1),
            (88.0, 0),
            (92.0, 0),
            (93.0, 0),
            (97.0, 0),
            (100.0, 0),
        ];
        for (spo2, want) in on_air {
            let s = score(&Observations { spo2, ..CALM }, Spo2Scale::Two);
            assert_eq!(s.spo2, want, "air spo2 {spo2}");
        }
        let on_oxygen = [
            (83.0, 3),
            (84.0, 2),
            (86.0, 1),
            (88.0, 0),
            (92.0, 0),
            (93.0, 1),
            (94.0, 1),
            (95.0, 2),
            (96.0, 2),
            (97.0, 3),
            (100.0, 3),
        ];
        for (spo2, want) in on_oxygen {
            let s = score(
                &Observations {
                    spo2,
                    on_oxygen: true,
                    ..CALM
                },
                Spo2Scale::Two,
            );
            assert_eq!(s.spo2, want, "oxygen spo2 {spo2}");
            assert_eq!(s.o2, 2);
            assert_eq!(s.scale, Spo2Scale::Two);
        }
    }

    #[test]
    fn air_or_oxygen() {
        assert_eq!(score(&CALM, Spo2Scale::One).o2, 0);
        assert_eq!(
            score(
                &Observations {
                    on_oxygen: true,
                    ..CALM
                },
                Spo2Scale::One
            )
            .o2,
            2
        );
    }

    #[test]
    fn systolic_bands() {
        // ≤90 | 91–100 | 101–110 | 111–219 | ≥220.
        for (sbp, want) in [
            (90.0, 3),
            (91.0, 2),
            (100.0, 2),
            (101.0, 1),
            (110.0, 1),
            (111.0, 0),
            (219.0, 0),
            (220.0, 3),
        ] {
            assert_eq!(
                score(&Observations { sbp, ..CALM }, Spo2Scale::One).sbp,
                want,
                "sbp {sbp}"
            );
        }
    }

    #[test]
    fn pulse_bands() {
        // ≤40 | 41–50 | 51–90 | 91–110 | 111–130 | ≥131.
        for (hr, want) in [
            (40.0, 3),
            (41.0, 1),
            (50.0, 1),
            (51.0, 0),
            (90.0, 0),
            (91.0, 1),
            (110.0, 1),
            (111.0, 2),
            (130.0, 2),
            (131.0, 3),
        ] {
            assert_eq!(
                score(&Observations { hr, ..CALM }, Spo2Scale::One).hr,
                want,
                "hr {hr}"
            );
        }
        // Rounded as charted.
        assert_eq!(
            score(&Observations { hr: 90.4, ..CALM }, Spo2Scale::One).hr,
            0
        );
        assert_eq!(
            score(&Observations { hr: 90.6, ..CALM }, Spo2Scale::One).hr,
            1
        );
    }

    #[test]
    fn consciousness() {
        for (acvpu, want) in [
            (Acvpu::A, 0),
            (Acvpu::C, 3),
            (Acvpu::V, 3),
            (Acvpu::P, 3),
            (Acvpu::U, 3),
        ] {
            let s = score(&Observations { acvpu, ..CALM }, Spo2Scale::One);
            assert_eq!(s.acvpu, want, "{acvpu:?}");
        }
    }

    #[test]
    fn temperature_bands() {
        // ≤35.0 | 35.1–36.0 | 36.1–38.0 | 38.1–39.0 | ≥39.1.
        for (temp, want) in [
            (35.0, 3),
            (35.1, 1),
            (36.0, 1),
            (36.1, 0),
            (38.0, 0),
            (38.1, 1),
            (39.0, 1),
            (39.1, 2),
            (42.0, 2),
            (30.0, 3),
        ] {
            assert_eq!(
                score(&Observations { temp, ..CALM }, Spo2Scale::One).temp,
                want,
                "temp {temp}"
            );
        }
    }

    #[test]
    fn aggregate_thresholds() {
        // 4 without a 3: low. A single 3: low-medium. 5–6: medium. 7+: high.
        let four = Observations {
            rr: 21.0,
            hr: 111.0,
            ..CALM
        }; // 2 + 2
        assert_eq!(
            (
                score(&four, Spo2Scale::One).total,
                score(&four, Spo2Scale::One).risk()
            ),
            (4, Risk::Low)
        );
        let single = Observations {
            acvpu: Acvpu::C,
            ..CALM
        };
        assert_eq!(score(&single, Spo2Scale::One).risk(), Risk::LowMedium);
        let five = Observations {
            rr: 21.0,
            hr: 111.0,
            temp: 38.5,
            ..CALM
        }; // 2 + 2 + 1
        assert_eq!(
            (
                score(&five, Spo2Scale::One).total,
                score(&five, Spo2Scale::One).risk()
            ),
            (5, Risk::Medium)
        );
        let six = Observations {
            rr: 21.0,
            hr: 111.0,
            temp: 39.5,
            ..CALM
        }; // 2 + 2 + 2
        assert_eq!(
            (
                score(&six, Spo2Scale::One).total,
                score(&six, Spo2Scale::One).risk()
            ),
            (6, Risk::Medium)
        );
        let seven = Observations {
            rr: 25.0,
            hr: 111.0,
            temp: 38.5,
            sbp: 105.0,
            ..CALM
        }; // 3 + 2 + 1 + 1
        assert_eq!(
            (
                score(&seven, Spo2Scale::One).total,
                score(&seven, Spo2Scale::One).risk()
            ),
            (7, Risk::High)
        );
        let worst = Observations {
            rr: 40.0,
            spo2: 80.0,
            on_oxygen: true,
            sbp: 80.0,
            hr: 150.0,
            acvpu: Acvpu::U,
            temp: 34.0,
        };
        assert_eq!(score(&worst, Spo2Scale::One).total, 20);
    }

    #[test]
    fn scale_parses_from_config_numbers() {
        assert_eq!(
            serde_json::from_str::<Spo2Scale>("2").unwrap(),
            Spo2Scale::Two
        );
        assert!(serde_json::from_str::<Spo2Scale>("3").is_err());
    }
}
