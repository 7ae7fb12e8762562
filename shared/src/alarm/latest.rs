//! The latest value of each NEWS2 parameter, with when it was measured, so a score can be
//! computed from readings that arrive separately (a monitor's SpO2 every second, a nurse's
//! consciousness check every hour) as long as each is fresh.
//!
//! Times are the engine's measurement times (see `AlarmEngine::measured`): monotonic, so a
//! step of the wall clock neither freezes a value nor makes one look fresh.

use crate::news2::Observations;
use crate::time::Millis;
use crate::vitals::{Acvpu, Vitals};

#[derive(Debug, Default, Clone)]
pub(super) struct Latest {
    rr: Option<(f32, Millis)>,
    spo2: Option<(f32, Millis)>,
    o2: Option<(bool, Millis)>,
    sbp: Option<(f32, Millis)>,
    hr: Option<(f32, Millis)>,
    acvpu: Option<(Acvpu, Millis)>,
    temp: Option<(f32, Millis)>,
}

fn keep<T: Copy>(slot: &mut Option<(T, Millis)>, value: Option<T>, at: Millis) {
    if let Some(v) = value {
        // An older reading arriving late (after an outage) does not replace a newer one.
        if slot.is_none_or(|(_, t)| t <= at) {
            *slot = Some((v, at));
        }
    }
}

impl Latest {
    /// Takes the parameters a reading measured at `at` carries.
    pub(super) fn update(&mut self, v: &Vitals, at: Millis) {
        keep(&mut self.rr, v.rr, at);
        keep(&mut self.spo2, v.spo2, at);
        keep(&mut self.o2, v.o2, at);
        keep(&mut self.sbp, v.sbp, at);
        keep(&mut self.hr, v.hr, at);
        keep(&mut self.acvpu, v.acvpu, at);
        keep(&mut self.temp, v.temp, at);
    }

    /// All seven observations, if each was measured within `freshness` of `now`.
    pub(super) fn observations(&self, now: Millis, freshness: Millis) -> Option<Observations> {
        fn fresh<T: Copy>(slot: Option<(T, Millis)>, now: Millis, freshness: Millis) -> Option<T> {
            slot.filter(|(_, t)| now - t <= freshness).map(|(v, _)| v)
        }
        Some(Observations {
            rr: fresh(self.rr, now, freshness)?,
            spo2: fresh(self.spo2, now, freshness)?,
            on_oxygen: fresh(self.o2, now, freshness)?,
            sbp: fresh(self.sbp, now, freshness)?,
            hr: fresh(self.hr, now, freshness)?,
            acvpu: fresh(self.acvpu, now, freshness)?,
            temp: fresh(self.temp, now, freshness)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combines_separate_readings_while_fresh() {
        let mut l = Latest::default();
        l.update(
            &Vitals {
                hr: Some(80.0),
                spo2: Some(97.0),
                rr: Some(16.0),
                sbp: Some(120.0),
                temp: Some(37.0),
                ..Vitals::default()
            },
            1_000,
        );
        assert!(
            l.observations(1_000, 60_000).is_none(),
            "o2 and ACVPU missing"
        );
        l.update(
            &Vitals {
                o2: Some(false),
                acvpu: Some(Acvpu::A),
                ..Vitals::default()
            },
            30_000,
        );
        let o = l.observations(30_000, 60_000).unwrap();
        assert_eq!(o.hr, 80.0);
        assert!(l.observations(61_001, 60_000).is_none(), "hr went stale");
        // A late, older reading does not overwrite a newer value.
        l.update(
            &Vitals {
                hr: Some(150.0),
                ..Vitals::default()
            },
            500,
        );
        assert_eq!(l.observations(30_000, 60_000).unwrap().hr, 80.0);
    }
}
