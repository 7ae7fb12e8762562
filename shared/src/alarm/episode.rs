//! An open episode: its version, what its condition measures now and at worst, and how a new
//! evaluation that does not clear it moves it on.
//!
//! A **worsening** (the priority rises, or the measure stays a step further than the version
//! last announced for the condition's alarm delay: [`super::WorsenSteps`]; the noise of a
//! sustained event does not re-notify) is a new version: notified again, and an earlier
//! acknowledgement no longer covers it. An acknowledgement names the version the clinician saw
//! and covers nothing newer. Any other change of the measure is an **update**: the event
//! carries the current and worst values and a current text, so no screen keeps showing a
//! raise that has been overtaken, and nobody is notified. Updates of a value that keeps moving
//! go out at most every [`UPDATE_EVERY_MS`], at once when the worst moves.

use std::time::Instant;

use super::limits::{self, Side};
use super::{AlarmEngine, AlarmEvent, AlertState, Condition, ConditionKey, Evaluation, Priority};
use crate::ids::PatientId;
use crate::time::{Millis, Now};
use crate::vitals::Vitals;

/// Updates of a moving value are at most this frequent (ms), unless the worst moves.
pub(super) const UPDATE_EVERY_MS: Millis = 5_000;

/// A raised episode.
#[derive(Debug, Clone)]
pub(crate) struct Open {
    pub(super) id: String,
    pub(super) kind: String,
    pub(super) priority: Priority,
    /// Who acknowledged it, and when (it covers the current version).
    pub(super) acknowledged: Option<(String, Instant)>,
    /// Whether its last notification went out silenced: when the silence no longer covers
    /// it, it is announced again.
    pub(super) silenced: bool,
    /// 1 at the raise, one more at each worsening.
    pub(super) version: u32,
    /// The current text (without the worst), as last announced.
    pub(super) text: String,
    /// Its measure, for conditions that have one.
    pub(super) track: Option<Track>,
}

/// An episode's measure over time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Track {
    /// As announced by the latest version.
    pub(super) announced: f32,
    /// The worst so far.
    pub(super) worst: f32,
    /// In the latest good reading.
    pub(super) current: f32,
    /// As last shown (raise, worsening or update), and when.
    pub(super) shown: f32,
    pub(super) shown_at: Instant,
    /// Since when the measure has stayed a worsening step beyond `announced`.
    pub(super) worse_since: Option<Instant>,
}

impl Open {
    /// A new episode raised by `eval` at `now`.
    pub(super) fn raise(id: String, eval: &Evaluation, silenced: bool, now: Now) -> Self {
        Open {
            id,
            kind: eval.kind.to_owned(),
            priority: eval.priority,
            acknowledged: None,
            silenced,
            version: 1,
            text: eval.raise_message.render(),
            track: eval.measure.map(|m| Track {
                announced: m,
                worst: m,
                current: m,
                shown: m,
                shown_at: now.mono,
                worse_since: None,
            }),
        }
    }

    /// An event of this episode carrying `message`.
    pub(super) fn event(
        &self,
        patient: &PatientId,
        state: AlertState,
        message: String,
        values: Vitals,
        now: Now,
    ) -> AlarmEvent {
        AlarmEvent {
            id: self.id.clone(),
            patient: patient.clone(),
            kind: self.kind.clone(),
            priority: self.priority,
            state,
            message,
            values,
            ts: now.wall,
            silenced: self.silenced,
            version: self.version,
            current: self.track.map(|t| t.current),
            worst: self.track.map(|t| t.worst),
            update: false,
        }
    }

    /// The current text, with the worst when it differs: `SpO2 low: 88 % < 92 (worst 84 %)`.
    pub(super) fn message(&self, key: ConditionKey) -> String {
        match self.track {
            Some(t) if shown_differs(t.worst, t.current) => {
                format!("{} (worst {})", self.text, show(key, t.worst))
            }
            _ => self.text.clone(),
        }
    }

    /// The state an update announces: the episode's own.
    fn state(&self) -> AlertState {
        if self.acknowledged.is_some() {
            AlertState::Acknowledged
        } else {
            AlertState::Raised
        }
    }
}

impl AlarmEngine {
    /// Moves the open episode of `key` by `eval`, which does not clear it: a worsening, an
    /// update, or nothing. `silenced`: whether a notification at this priority is covered
    /// by a silence now.
    pub(super) fn follow(
        &mut self,
        (patient, key): (&PatientId, ConditionKey),
        eval: &Evaluation,
        values: Vitals,
        now: Now,
        silenced: impl Fn(Priority) -> bool,
    ) -> Option<AlarmEvent> {
        let steps = self.settings.episodes.worsen_by;
        let step = match key {
            ConditionKey::Limit(sign, _) => Some(steps.of(sign)),
            ConditionKey::News2 => Some(f32::from(steps.news2)),
            _ => None,
        };
        let Some(Condition::Active(open)) = self
            .patients
            .get_mut(patient)
            .and_then(|s| s.conditions.get_mut(&key))
        else {
            return None;
        };
        let mut worst_moved = false;
        if let (Some(m), Some(t)) = (eval.measure, open.track.as_mut()) {
            t.current = m;
            if worse_by(key, m, t.worst) > 0.0 {
                t.worst = m;
                worst_moved = true;
            }
        }
        if worst_moved {
            self.changes += 1;
        }
        let priority_up = eval.violating && eval.priority > open.priority;
        let mut measure_up = false;
        if let (Some(t), Some(step)) = (open.track.as_mut(), step) {
            if eval.violating && worse_by(key, t.current, t.announced) >= step - STEP_SLACK {
                let since = *t.worse_since.get_or_insert(now.mono);
                measure_up = eval.bypass_delay || now.since(since) >= eval.delay_ms;
            } else {
                t.worse_since = None;
            }
        }
        if priority_up || measure_up {
            open.version += 1;
            open.priority = open.priority.max(eval.priority);
            open.acknowledged = None;
            open.silenced = silenced(open.priority);
            open.text = eval.raise_message.render();
            if let Some(t) = open.track.as_mut() {
                t.announced = t.current;
                t.shown = t.current;
                t.shown_at = now.mono;
                t.worse_since = None;
            }
            self.changes += 1;
            let message = open.message(key);
            return Some(open.event(patient, AlertState::Raised, message, values, now));
        }
        let t = open.track.as_mut()?;
        let due = worst_moved || now.since(t.shown_at) >= UPDATE_EVERY_MS;
        if !(shown_differs(t.current, t.shown) && due) {
            return None;
        }
        t.shown = t.current;
        t.shown_at = now.mono;
        open.text = current_text(key, eval);
        self.changes += 1;
        let message = open.message(key);
        let mut event = open.event(patient, open.state(), message, values, now);
        event.update = true;
        Some(event)
    }
}

/// Float noise in a measure compared with a step (values are device numbers, not sums).
const STEP_SLACK: f32 = 1e-3;

/// How much worse `a` is than `b` for condition `key` (negative: better).
fn worse_by(key: ConditionKey, a: f32, b: f32) -> f32 {
    match key {
        ConditionKey::Limit(_, Side::Low) => b - a,
        _ => a - b,
    }
}

/// Whether two measures read differently to a person (one decimal).
fn shown_differs(a: f32, b: f32) -> bool {
    (a * 10.0).round() != (b * 10.0).round()
}

/// A measure as people read it: `84 %`, `15` (NEWS2).
fn show(key: ConditionKey, m: f32) -> String {
    match key {
        ConditionKey::Limit(sign, _) => format!("{} {}", limits::fmt_value(m), sign.unit()),
        _ => limits::fmt_value(m),
    }
}

/// The text of the condition as `eval` finds it now: its raise text while it violates, and
/// for a limit value back inside the limit but not yet past the hysteresis, says so.
fn current_text(key: ConditionKey, eval: &Evaluation) -> String {
    match (key, eval.measure) {
        (ConditionKey::Limit(sign, _), Some(m)) if !eval.violating => format!(
            "{} {} {} inside the limit, not yet clear",
            sign.label(),
            limits::fmt_value(m),
            sign.unit()
        ),
        _ => eval.raise_message.render(),
    }
}
