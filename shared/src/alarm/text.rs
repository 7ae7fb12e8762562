//! Alarm messages as people read them.

use super::limits;
use crate::vitals::VitalSign;

/// An alarm message, formatted only when an event carries it: most evaluations of a reading
/// emit nothing, and formatting a dozen messages per reading was most of the engine's time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Text {
    /// A fixed text.
    Fixed(&'static str),
    /// Already formatted.
    Owned(String),
    /// `HR high: 150 /min > 130`.
    Limit {
        sign: VitalSign,
        side: limits::Side,
        value: f32,
        limit: f32,
    },
    /// `HR 120 /min back within limits`.
    LimitClear { sign: VitalSign, value: f32 },
    /// `RR rising: +8 /min over 30 min`.
    Trend {
        sign: VitalSign,
        rising: bool,
        change: f64,
        minutes: u32,
    },
    /// `RR steady again`.
    TrendClear(VitalSign),
    /// `NEWS2 7` (with why, when a single parameter scores 3).
    News2 { total: u8, single: bool },
    /// `NEWS2 2: low risk again`.
    News2Clear(u8),
}

impl Text {
    /// The text people read.
    pub(crate) fn render(&self) -> String {
        match self {
            Text::Fixed(t) => (*t).to_owned(),
            Text::Owned(t) => t.clone(),
            Text::Limit {
                sign,
                side,
                value,
                limit,
            } => {
                let (word, cmp) = match side {
                    limits::Side::Low => ("low", "<"),
                    limits::Side::High => ("high", ">"),
                };
                format!(
                    "{} {word}: {} {} {cmp} {}",
                    sign.label(),
                    limits::fmt_value(*value),
                    sign.unit(),
                    limits::fmt_value(*limit)
                )
            }
            Text::LimitClear { sign, value } => format!(
                "{} {} {} back within limits",
                sign.label(),
                limits::fmt_value(*value),
                sign.unit()
            ),
            Text::Trend {
                sign,
                rising,
                change,
                minutes,
            } => format!(
                "{} {}: {:+.0} {} over {minutes} min",
                sign.label(),
                if *rising { "rising" } else { "falling" },
                change,
                sign.unit()
            ),
            Text::TrendClear(sign) => format!("{} steady again", sign.label()),
            Text::News2 { total, single } => {
                let why = if *single {
                    " (a single parameter scores 3)"
                } else {
                    ""
                };
                format!("NEWS2 {total}{why}")
            }
            Text::News2Clear(total) => format!("NEWS2 {total}: low risk again"),
        }
    }
}
