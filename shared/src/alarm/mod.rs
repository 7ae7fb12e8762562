//! The alarm engine: readings and `now` in, alarm events out.
//!
//! Sans-IO: [`AlarmEngine::observe`] takes a reading and `now`, [`AlarmEngine::tick`] takes
//! `now`; both return the events to publish. Every condition a patient can be in (a vital
//! beyond a limit, a NEWS2 trigger, a silent device) is one entry with its own episode, so
//! repeated samples never re-raise an active alarm, a worsening updates the same episode, and
//! it resolves only once its clearing condition holds.
//!
//! A condition must persist for its alarm delay before it is raised (most out-of-range samples
//! are artefacts that resolve by themselves); extreme values bypass the delay; clearing needs
//! the value back past a hysteresis band, so a value hovering at the limit does not chatter.

mod episode;
mod latest;
mod limits;
mod quality;
mod settings;
mod snapshot;
mod text;
mod trend;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use limits::Side;
pub use limits::{AlarmLimits, VitalLimits};
pub use quality::QualitySettings;
pub use settings::{
    EpisodeSettings, News2Settings, PatientSettings, RuleSettings, SignalSettings, SilenceSettings,
    WorsenSteps,
};
pub use snapshot::EngineSnapshot;
use text::Text;
pub use trend::{TrendRule, TrendSettings};

use crate::ids::PatientId;
use crate::news2::{self, News2, Risk};
use crate::time::{Millis, Now};
use crate::vitals::{Quality, Reading, VitalSign, Vitals};
use episode::Open;
use quality::{Poor, pause, signal_poor};

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
    /// What condition, e.g. `hr_high`, `news2`, `signal_lost`.
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
    /// A clinician silenced this patient's alarms: shown, but not notified.
    pub silenced: bool,
    /// Grows with every worsening of the episode, from 1 at its raise; an acknowledgement
    /// names the version the clinician saw. 0: from an edge that does not number them
    /// (protocol 2 or older).
    pub version: u32,
    /// The condition's measure as of this event (the vital sign's value, the NEWS2 total),
    /// for conditions that have one.
    pub current: Option<f32>,
    /// The worst measure of the episode so far.
    pub worst: Option<f32>,
    /// Only the values changed (no raise, worsening or reminder): shown, never notified.
    pub update: bool,
}

/// A silence of one patient's alarms, decided at the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Silence {
    from: Instant,
    until: Instant,
}

/// What one condition looks like at one instant; produced by the rule, applied by the engine.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Evaluation {
    kind: &'static str,
    violating: bool,
    /// Beyond an extreme threshold.
    extreme: bool,
    bypass_delay: bool,
    cleared: bool,
    priority: Priority,
    delay_ms: Millis,
    raise_message: Text,
    clear_message: Text,
    /// What the condition measures in this reading (see [`AlarmEvent::current`]).
    measure: Option<f32>,
}

/// The conditions one patient can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum ConditionKey {
    Limit(VitalSign, Side),
    News2,
    SignalLost,
    Trend(VitalSign),
    /// Poor signal quality (appended: snapshots number the variants).
    SignalPoor,
}

impl ConditionKey {
    /// A technical condition (about the device, not the patient).
    fn technical(self) -> bool {
        matches!(self, ConditionKey::SignalLost | ConditionKey::SignalPoor)
    }
}

#[derive(Debug, Clone)]
enum Condition {
    /// Violating since `since`; not yet raised. `paused` since when the sign's signal has
    /// been poor: the wait stands still until good readings return.
    Pending {
        since: Instant,
        eval: Evaluation,
        values: Vitals,
        paused: Option<Instant>,
    },
    /// Raised as an episode.
    Active(Open),
}

#[derive(Debug, Default)]
struct PatientState {
    conditions: BTreeMap<ConditionKey, Condition>,
    latest: latest::Latest,
    /// When the last reading arrived (the edge's monotonic clock).
    last_seen: Option<Instant>,
    /// Smoothed time between readings.
    interval_ms: Option<f64>,
    /// Bucketed history per vital sign with a trend rule.
    series: BTreeMap<VitalSign, trend::Series>,
    /// Per limit: whether the latest non-extreme sample was beyond it (see
    /// [`VitalLimits::extreme_confirm_s`]).
    in_band: BTreeMap<(VitalSign, Side), bool>,
    /// The current silence, if any.
    silence: Option<Silence>,
    /// Since when conditions were pending before a restart ([`AlarmEngine::restore`]): a
    /// condition that is violated again takes up its wait where it was.
    carried: BTreeMap<ConditionKey, Instant>,
    /// The newest timestamp among the readings the patient's devices stamped themselves.
    device_newest: Option<Millis>,
    /// The signs whose latest value was of poor quality (what `signal_poor` is about).
    poor: Poor,
}

/// Whose clock stamped a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    /// The device's: its stamps are in order among themselves, and say how late a reading
    /// arrives, whatever the edge's wall clock does.
    Device,
    /// The edge's, on arrival.
    Arrival,
}

impl PatientState {
    /// When a reading stamped `ts` was measured, on the engine's monotonic scale (`now` is
    /// its arrival): the arrival, less how far its stamp lies behind the newest the device
    /// stamped before (a backlog delivered late counts as old). NEWS2 freshness and trends
    /// order readings by this, never by stamps compared with the edge's wall clock: a step of
    /// that clock, or a device clock ahead of it, changes nothing. A reading the edge stamped
    /// is measured at its arrival.
    fn measured(&mut self, ts: Millis, now: Millis, clock: Clock) -> Millis {
        if clock == Clock::Arrival {
            return now;
        }
        let newest = self.device_newest.map_or(ts, |n| n.max(ts));
        self.device_newest = Some(newest);
        now.saturating_sub(newest - ts)
    }
}

/// An active episode as the edge reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveAlarm {
    /// Episode id.
    pub id: String,
    /// Whose.
    pub patient: PatientId,
    /// Condition.
    pub kind: String,
    /// Current priority.
    pub priority: Priority,
    /// Who acknowledged it, if anyone has.
    pub acknowledged_by: Option<String>,
    /// Its version (see [`AlarmEvent::version`]).
    pub version: u32,
}

/// What an acknowledgement did at the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckResult {
    /// Acknowledged, as of this version.
    Acknowledged {
        /// The episode's version.
        version: u32,
    },
    /// The clinician saw an older version: nothing acknowledged.
    Stale {
        /// The episode's version now.
        current: u32,
    },
    /// No open episode has that id (it resolved meanwhile, or the edge restarted).
    Unknown,
}

impl AckResult {
    /// Whether the episode is acknowledged now.
    pub fn acknowledged(self) -> bool {
        matches!(self, AckResult::Acknowledged { .. })
    }
}

/// The result of one reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The patient's NEWS2, if every parameter is fresh.
    pub news2: Option<News2>,
    /// Alarm events this reading caused.
    pub events: Vec<AlarmEvent>,
}

/// The alarm state machine for a ward.
#[derive(Debug)]
pub struct AlarmEngine {
    settings: RuleSettings,
    id_prefix: String,
    next_id: u64,
    patients: HashMap<PatientId, PatientState>,
    /// Patients with settings of their own.
    overrides: HashMap<PatientId, PatientSettings>,
    /// Counts changes to what [`AlarmEngine::snapshot`] keeps (episodes opened, worsened,
    /// acknowledged, resolved; conditions starting or ending a wait; silences), so a driver
    /// persists the state only when it changed.
    changes: u64,
    /// The origin of measurement times (see [`AlarmEngine::measured`]): the first instant the
    /// engine was given.
    origin: Option<Instant>,
}

impl AlarmEngine {
    /// An engine with the ward's settings. `id_prefix` (the edge id) makes episode ids unique
    /// across edges.
    pub fn new(settings: RuleSettings, id_prefix: impl Into<String>) -> Self {
        Self {
            settings,
            id_prefix: id_prefix.into(),
            next_id: 0,
            patients: HashMap::new(),
            overrides: HashMap::new(),
            changes: 0,
            origin: None,
        }
    }

    /// Replaces `patient`'s own settings (empty settings: back to the ward's) at `now`.
    ///
    /// The patient's limit conditions were judged by the old limits, so they end here: pending
    /// ones are dropped and active ones resolve (the returned events); the next reading is
    /// judged by the new limits and raises afresh if it must.
    pub fn set_patient_settings(
        &mut self,
        patient: PatientId,
        settings: PatientSettings,
        now: Now,
    ) -> Vec<AlarmEvent> {
        if settings == PatientSettings::default() {
            self.overrides.remove(&patient);
        } else {
            self.overrides.insert(patient.clone(), settings);
        }
        let Some(state) = self.patients.get_mut(&patient) else {
            return Vec::new();
        };
        self.changes += 1;
        let limit_keys: Vec<ConditionKey> = state
            .conditions
            .keys()
            .filter(|k| matches!(k, ConditionKey::Limit(..)))
            .copied()
            .collect();
        state.in_band.clear();
        let mut events = Vec::new();
        for key in limit_keys {
            if let Some(Condition::Active(open)) = state.conditions.remove(&key) {
                events.push(open.event(
                    &patient,
                    AlertState::Resolved,
                    "alarm limits changed; judged anew from the next reading".into(),
                    Vitals::default(),
                    now,
                ));
            }
        }
        events
    }

    /// The settings in force for `patient`.
    fn settings_for(&self, patient: &PatientId) -> RuleSettings {
        let mut s = self.settings;
        if let Some(o) = self.overrides.get(patient) {
            s.limits = o.apply(&s.limits);
            if let Some(scale) = o.spo2_scale {
                s.news2.scale = scale;
            }
        }
        s
    }

    /// Feeds one reading its device stamped, received at `now`.
    pub fn observe(&mut self, reading: &Reading, now: Now) -> Observation {
        self.observe_with(reading, &Quality::default(), true, now)
    }

    /// [`AlarmEngine::observe`] for a reading the edge stamped itself on arrival (the device
    /// sent no time): it is the newest, whatever the wall clock did since the last one.
    pub fn observe_unstamped(&mut self, reading: &Reading, now: Now) -> Observation {
        self.observe_with(reading, &Quality::default(), false, now)
    }

    /// Feeds one reading with what its device said of the signal's quality; `stamped`: the
    /// device stamped it (see [`AlarmEngine::observe_unstamped`] otherwise). Values of poor
    /// quality neither start, feed nor resolve an alarm (a wait for an alarm delay stands
    /// still while they last) and do not count towards NEWS2 freshness; persistent poor
    /// quality raises `signal_poor`.
    pub fn observe_with(
        &mut self,
        reading: &Reading,
        quality: &Quality,
        stamped: bool,
        now: Now,
    ) -> Observation {
        let clock = if stamped {
            Clock::Device
        } else {
            Clock::Arrival
        };
        let on_scale = self.on_scale(now);
        let mut events = Vec::new();
        let settings = self.settings_for(&reading.patient);
        let poor = Poor::judge(&reading.vitals, quality, &settings.quality);
        let good = poor.good(&reading.vitals);
        let state = self.patients.entry(reading.patient.clone()).or_default();
        let measured = state.measured(reading.ts, on_scale, clock);
        if let Some(prev) = state.last_seen {
            // Exponentially smoothed, so one late reading does not halve the timeout.
            #[allow(clippy::cast_precision_loss)]
            let gap = now.since(prev) as f64;
            state.interval_ms = Some(state.interval_ms.map_or(gap, |i| 0.8 * i + 0.2 * gap));
        }
        state.last_seen = Some(now.mono);
        state.latest.update(&good, measured);
        // Scored as of the reading's own measurement time, so a reading delivered late (a
        // device catching up after an outage) is scored with what was known then.
        let news2 = state
            .latest
            .observations(measured, Millis::from(settings.news2.freshness_s) * 1000)
            .map(|o| news2::score(&o, settings.news2.scale));

        state.poor = state.poor.after(&reading.vitals, poor);
        let mut evaluations = vec![
            (ConditionKey::SignalLost, signal_back()),
            (
                ConditionKey::SignalPoor,
                signal_poor(state.poor, &settings.quality),
            ),
        ];
        for sign in VitalSign::ALL {
            if reading.vitals.value(sign).is_some() && pause(state, sign, poor.has(sign), now) {
                self.changes += 1;
            }
            if let Some(value) = good.value(sign) {
                for side in [Side::Low, Side::High] {
                    let through = state.in_band.get(&(sign, side)).copied().unwrap_or(false);
                    if let Some(e) = settings.limits.evaluate(sign, side, value, through) {
                        if !e.extreme {
                            // Not extreme: remember whether this sample sits in the alarm band.
                            state.in_band.insert((sign, side), e.violating);
                        }
                        evaluations.push((ConditionKey::Limit(sign, side), e));
                    }
                }
            }
        }
        let keep = settings.trends.longest_ms();
        for (sign, rule) in settings.trends.rules() {
            if let Some(value) = good.value(sign) {
                let series = state.series.entry(sign).or_default();
                series.push(measured, value, keep);
                if let Some(e) = trend::evaluate(sign, &rule, series) {
                    evaluations.push((ConditionKey::Trend(sign), e));
                }
            }
        }
        // A reading with nothing of good quality brings NEWS2 nothing new to judge.
        let fed = !Vitals { o2: None, ..good }.is_empty();
        if let Some(score) = news2.as_ref().filter(|_| fed) {
            evaluations.push((
                ConditionKey::News2,
                news2_evaluation(score, &settings.news2),
            ));
        }
        for (key, eval) in evaluations {
            if let Some(e) = self.apply(&reading.patient, key, eval, reading.vitals, now) {
                events.push(e);
            }
        }
        Observation { news2, events }
    }

    /// `now` on the engine's monotonic scale of measurement times (ms since the first instant
    /// the engine was given).
    fn on_scale(&mut self, now: Now) -> Millis {
        let origin = *self.origin.get_or_insert(now.mono);
        Millis::try_from(now.mono.saturating_duration_since(origin).as_millis())
            .unwrap_or(Millis::MAX)
    }

    /// Raises what became due by `now` without a new reading: pending conditions whose delay
    /// elapsed, and silent devices.
    pub fn tick(&mut self, now: Now) -> Vec<AlarmEvent> {
        let signal = self.settings.signal;
        let repeat = Millis::from(self.settings.episodes.repeat_acknowledged_s) * 1000;
        let max_high = Millis::from(self.settings.silence.max_high_s) * 1000;
        let mut due = Vec::new();
        let mut reminders = Vec::new();
        let mut unsilenced = Vec::new();
        for (patient, state) in &self.patients {
            for (key, cond) in &state.conditions {
                match cond {
                    Condition::Pending {
                        since,
                        eval,
                        values,
                        paused: None,
                    } if now.since(*since) >= eval.delay_ms => {
                        due.push((patient.clone(), *key, eval.clone(), *values));
                    }
                    Condition::Active(Open {
                        acknowledged: Some((_, at)),
                        ..
                    }) if repeat > 0 && now.since(*at) >= repeat => {
                        reminders.push((patient.clone(), *key));
                    }
                    Condition::Active(Open {
                        silenced: true,
                        priority,
                        ..
                    }) if !silenced_now(
                        state.silence.as_ref(),
                        *priority,
                        key.technical(),
                        now.mono,
                        max_high,
                    ) =>
                    {
                        unsilenced.push((patient.clone(), *key));
                    }
                    _ => {}
                }
            }
            if let Some(last) = state.last_seen
                && !state.conditions.contains_key(&ConditionKey::SignalLost)
            {
                let silent = now.since(last);
                if silent >= lost_after(&signal, state.interval_ms) {
                    due.push((
                        patient.clone(),
                        ConditionKey::SignalLost,
                        signal_lost(&signal, silent),
                        Vitals::default(),
                    ));
                }
            }
        }
        let mut events: Vec<AlarmEvent> = reminders
            .into_iter()
            .filter_map(|(patient, key)| self.remind(&patient, key, now))
            .collect();
        events.extend(
            unsilenced
                .into_iter()
                .filter_map(|(patient, key)| self.unsilence(&patient, key, now)),
        );
        for (patient, key, eval, values) in due {
            let eval = Evaluation {
                bypass_delay: true,
                ..eval
            };
            events.extend(self.apply(&patient, key, eval, values, now));
        }
        events
    }

    /// The earliest instant at which [`AlarmEngine::tick`] has something to do without a new
    /// reading: a pending condition's delay running out, a reminder of an acknowledged
    /// episode, a silence ending over a silenced episode, or a patient's device falling
    /// silent. `None`: nothing is due until the next reading or command. The driver sleeps
    /// until then instead of polling.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.patients
            .values()
            .filter_map(|state| self.deadline_of(state))
            .min()
    }

    /// [`AlarmEngine::next_deadline`] of one patient: what a reading of theirs may have
    /// brought forward. A driver keeps the earlier of this and what it had, and asks
    /// [`AlarmEngine::next_deadline`] again after each tick (a deadline that passed with
    /// nothing to do only costs an empty tick).
    pub fn next_deadline_of(&self, patient: &PatientId) -> Option<Instant> {
        self.patients
            .get(patient)
            .and_then(|state| self.deadline_of(state))
    }

    fn deadline_of(&self, state: &PatientState) -> Option<Instant> {
        let signal = self.settings.signal;
        let repeat = Millis::from(self.settings.episodes.repeat_acknowledged_s) * 1000;
        let max_high = Millis::from(self.settings.silence.max_high_s) * 1000;
        let mut next: Option<Instant> = None;
        let mut consider = |at: Instant| {
            next = Some(next.map_or(at, |n| n.min(at)));
        };
        for (key, cond) in &state.conditions {
            match cond {
                Condition::Pending {
                    since,
                    eval,
                    paused: None,
                    ..
                } => {
                    consider(*since + millis(eval.delay_ms));
                }
                // A wait paused by poor signal goes on with the next good reading.
                Condition::Pending { .. } => {}
                Condition::Active(Open {
                    acknowledged,
                    silenced,
                    priority,
                    ..
                }) => {
                    if let Some((_, at)) = acknowledged
                        && repeat > 0
                    {
                        consider(*at + millis(repeat));
                    }
                    if let (true, Some(s)) = (*silenced, &state.silence) {
                        // The silence stops covering it at its end, or (high priority,
                        // physiological) after its first `max_high`.
                        let mut end = s.until;
                        if *priority == Priority::High && !key.technical() {
                            end = end.min(s.from + millis(max_high));
                        }
                        consider(end);
                    }
                }
            }
        }
        if let Some(last) = state.last_seen
            && !state.conditions.contains_key(&ConditionKey::SignalLost)
        {
            consider(last + millis(lost_after(&signal, state.interval_ms)));
        }
        next
    }

    /// An acknowledged episode still present after the repeat interval: notify again, once.
    fn remind(&mut self, patient: &PatientId, key: ConditionKey, now: Now) -> Option<AlarmEvent> {
        let max_high = Millis::from(self.settings.silence.max_high_s) * 1000;
        let state = self.patients.get_mut(patient)?;
        let silence = state.silence.clone();
        let Condition::Active(open) = state.conditions.get_mut(&key)? else {
            return None;
        };
        let (_, at) = open.acknowledged.take()?;
        self.changes += 1;
        open.silenced = silenced_now(
            silence.as_ref(),
            open.priority,
            key.technical(),
            now.mono,
            max_high,
        );
        let message = format!(
            "{}; still present {} min after acknowledgement",
            open.message(key),
            now.since(at) / 60_000
        );
        Some(open.event(patient, AlertState::Raised, message, Vitals::default(), now))
    }

    /// An active episode whose silence no longer covers it: announce it again, unsilenced.
    fn unsilence(
        &mut self,
        patient: &PatientId,
        key: ConditionKey,
        now: Now,
    ) -> Option<AlarmEvent> {
        let Condition::Active(open) = self.patients.get_mut(patient)?.conditions.get_mut(&key)?
        else {
            return None;
        };
        open.silenced = false;
        self.changes += 1;
        let message = format!("{}; still present, no longer silenced", open.message(key));
        Some(open.event(patient, AlertState::Raised, message, Vitals::default(), now))
    }

    /// Records a clinician's acknowledgement of episode `alert` as of `version`, the version
    /// they saw (`None`: whatever is current, for clients that do not say). An older version
    /// than the current one acknowledges nothing: the episode worsened since, and stays news.
    pub fn acknowledge(
        &mut self,
        alert: &str,
        version: Option<u32>,
        by: &str,
        now: Now,
    ) -> AckResult {
        for state in self.patients.values_mut() {
            for cond in state.conditions.values_mut() {
                if let Condition::Active(open) = cond
                    && open.id == alert
                {
                    if version.is_some_and(|v| v < open.version) {
                        return AckResult::Stale {
                            current: open.version,
                        };
                    }
                    open.acknowledged = Some((by.to_owned(), now.mono));
                    self.changes += 1;
                    return AckResult::Acknowledged {
                        version: open.version,
                    };
                }
            }
        }
        AckResult::Unknown
    }

    /// Silences `patient`'s alarms from `from` until `until` (wall clock, ms since the epoch,
    /// as the hub sends them). The interval is placed on the monotonic clock as it stands at
    /// `now`, so a later step of the wall clock neither ends nor stretches it. A later silence
    /// replaces an earlier one; `until` in the past ends it.
    pub fn silence(&mut self, patient: &PatientId, from: Millis, until: Millis, now: Now) {
        self.changes += 1;
        let state = self.patients.entry(patient.clone()).or_default();
        // A silence takes effect when it arrives: a hub clock slightly ahead must not leave a
        // start in the future (an episode would wait for it to be announced unsilenced).
        let (from, until) = (now.mono_of(from).min(now.mono), now.mono_of(until));
        // An empty or ended silence is kept as one that ended now, so that the episodes it
        // covered are announced again at the next tick (see `next_deadline`).
        state.silence = Some(if until > from {
            Silence { from, until }
        } else {
            Silence {
                from: now.mono,
                until: now.mono,
            }
        });
    }

    /// A counter that moves whenever what [`AlarmEngine::snapshot`] keeps has changed (and
    /// only then, give or take a change that undoes another): a driver compares it with the
    /// value at its last persisted snapshot.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Every active episode, for operators and tests.
    pub fn active(&self) -> Vec<ActiveAlarm> {
        let mut out: Vec<ActiveAlarm> = self
            .patients
            .iter()
            .flat_map(|(patient, state)| {
                state
                    .conditions
                    .values()
                    .filter_map(move |cond| match cond {
                        Condition::Active(open) => Some(ActiveAlarm {
                            id: open.id.clone(),
                            patient: patient.clone(),
                            kind: open.kind.clone(),
                            priority: open.priority,
                            acknowledged_by: open.acknowledged.as_ref().map(|(by, _)| by.clone()),
                            version: open.version,
                        }),
                        Condition::Pending { .. } => None,
                    })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Moves one condition of one patient according to `eval`; returns the event, if any.
    fn apply(
        &mut self,
        patient: &PatientId,
        key: ConditionKey,
        eval: Evaluation,
        values: Vitals,
        now: Now,
    ) -> Option<AlarmEvent> {
        let max_high = Millis::from(self.settings.silence.max_high_s) * 1000;
        let state = self.patients.entry(patient.clone()).or_default();
        let silence = state.silence.clone();
        let technical = key.technical();
        let quiet =
            |priority| silenced_now(silence.as_ref(), priority, technical, now.mono, max_high);
        let pending = match state.conditions.get(&key) {
            Some(Condition::Active(_)) if eval.cleared => {
                self.changes += 1;
                let Some(Condition::Active(mut open)) = state.conditions.remove(&key) else {
                    return None;
                };
                if let (Some(m), Some(t)) = (eval.measure, open.track.as_mut()) {
                    t.current = m;
                }
                return Some(open.event(
                    patient,
                    AlertState::Resolved,
                    eval.clear_message.render(),
                    values,
                    now,
                ));
            }
            Some(Condition::Active(_)) => {
                return self.follow((patient, key), &eval, values, now, quiet);
            }
            Some(Condition::Pending { since, .. }) => Some(*since),
            None => None,
        };
        if !eval.violating {
            let ended = state.conditions.remove(&key).is_some();
            if state.carried.remove(&key).is_some() || ended {
                self.changes += 1;
            }
            return None;
        }
        let since = pending.unwrap_or_else(|| {
            // A wait starts (or a carried one is taken up): worth keeping.
            self.changes += 1;
            state.carried.remove(&key).unwrap_or(now.mono)
        });
        if eval.bypass_delay || now.since(since) >= eval.delay_ms {
            self.changes += 1;
            self.next_id += 1;
            let id = format!("{}-{:x}-{}", self.id_prefix, now.wall, self.next_id);
            let open = Open::raise(id, &eval, quiet(eval.priority), now);
            let event = open.event(patient, AlertState::Raised, open.message(key), values, now);
            state.conditions.insert(key, Condition::Active(open));
            Some(event)
        } else {
            state.conditions.insert(
                key,
                Condition::Pending {
                    since,
                    eval,
                    values,
                    paused: None,
                },
            );
            None
        }
    }
}

/// Whether a notification at `now` of an alarm of `priority` is covered by `silence`: all
/// alarms until it ends, high-priority physiological ones only for its first `max_high`.
fn silenced_now(
    silence: Option<&Silence>,
    priority: Priority,
    technical: bool,
    now: Instant,
    max_high: Millis,
) -> bool {
    silence.is_some_and(|s| {
        now >= s.from
            && now < s.until
            && (priority != Priority::High
                || technical
                || now.saturating_duration_since(s.from) < millis(max_high))
    })
}

/// A non-negative number of milliseconds as a duration.
fn millis(ms: Millis) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// NEWS2 triggers (RCP 2017, chart 2): aggregate 5–6 or a single parameter scoring 3 → medium;
/// 7 or more → high. Clears when the score is back to low risk.
fn news2_evaluation(score: &News2, settings: &News2Settings) -> Evaluation {
    let risk = score.risk();
    let priority = if risk == Risk::High {
        Priority::High
    } else {
        Priority::Medium
    };
    Evaluation {
        kind: "news2",
        violating: risk >= Risk::LowMedium,
        extreme: false,
        bypass_delay: false,
        cleared: risk == Risk::Low,
        priority,
        delay_ms: Millis::from(settings.delay_s) * 1000,
        raise_message: Text::News2 {
            total: score.total,
            single: risk == Risk::LowMedium,
        },
        clear_message: Text::News2Clear(score.total),
        measure: Some(f32::from(score.total)),
    }
}

/// How long a patient's device may be silent before `signal_lost`.
fn lost_after(settings: &SignalSettings, interval_ms: Option<f64>) -> Millis {
    let floor = Millis::from(settings.lost_min_s) * 1000;
    #[allow(clippy::cast_possible_truncation)]
    let by_interval = interval_ms.map_or(0, |i| {
        (i * f64::from(settings.lost_after_intervals)) as Millis
    });
    floor.max(by_interval)
}

fn signal_lost(settings: &SignalSettings, silent_ms: Millis) -> Evaluation {
    Evaluation {
        kind: "signal_lost",
        violating: true,
        extreme: false,
        bypass_delay: true,
        cleared: false,
        priority: settings.priority,
        delay_ms: 0,
        raise_message: Text::Owned(format!("No data for {} s", silent_ms / 1000)),
        clear_message: Text::Fixed(""),
        measure: None,
    }
}

/// A reading arrived: a lost signal is back.
fn signal_back() -> Evaluation {
    Evaluation {
        kind: "signal_lost",
        violating: false,
        extreme: false,
        bypass_delay: false,
        cleared: true,
        priority: Priority::Low,
        delay_ms: 0,
        raise_message: Text::Fixed(""),
        clear_message: Text::Fixed("Data received again"),
        measure: None,
    }
}

#[cfg(test)]
mod precision_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod time_tests;
