//! The notification decisions, in virtual time: which alarm escalates to whom and when,
//! grouped, rate-limited and merged. Pure: the caller feeds alarm and edge events with the
//! time they happened, asks for the next deadline, and calls [`Engine::due`] when it comes.
//! Nothing here sends or stores anything.
//!
//! Rules (Vocera/Spok-style escalation paths, Alertmanager-style grouping):
//! - An alarm matched by a route starts its chain when raised. Step *k* is due `after_s` after
//!   the raise, unless the alarm was acknowledged or resolved before (the chain stops).
//! - Nobody watching: if no connected dashboard can see the alarm's ward when it is raised,
//!   the first step is due at once.
//! - After the last step, its recipients are reminded every `repeat_interval_s` while the
//!   alarm stays unacknowledged.
//! - One recipient hears about one patient at most once per `repeat_interval_s`: alarms of
//!   the same patient due together are merged into one message, and a storm of new episodes
//!   for one patient does not become a storm of SMS.
//! - Each recipient gets at most `rate_limit` SMS per `rate_window_s`; the rest are
//!   suppressed (and reported).
//! - A silenced alarm starts no chain; an alarm silenced later stops its chain.
//! - An edge that stays offline `edge_offline_after_s` notifies the ward's technical contacts
//!   once per outage.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wardlink_shared::alarm::{AlertState, Priority};

use super::plan::Plan;

/// An alarm as the engine sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// Episode id.
    pub id: String,
    /// Patient id (never put into a text; see `patient_label`).
    pub patient: String,
    /// What the SMS calls the patient: a pseudonym.
    pub patient_label: String,
    /// Ward.
    pub ward: String,
    /// Priority.
    pub priority: Priority,
    /// Kind, e.g. `hr_high`.
    pub kind: String,
    /// State.
    pub state: AlertState,
    /// Summary without identity (e.g. `HR 152 above 130`).
    pub message: String,
    /// Silenced by a clinician.
    pub silenced: bool,
}

/// Where an episode's chain stands; persisted by the caller so a restart resumes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The route (index into the plan's routes).
    pub route: usize,
    /// Its name: a chain resumed under a changed configuration continues only on the same
    /// route.
    pub route_name: String,
    /// When the chain started (ms).
    pub raised_at: i64,
    /// Steps already done.
    pub next_step: usize,
    /// The first step is due at once (nobody was watching).
    pub unwatched: bool,
    /// The last reminder after the final step (ms).
    pub last_repeat: Option<i64>,
    /// `escalated` was announced.
    pub escalated: bool,
}

#[derive(Debug, Clone)]
struct Episode {
    alarm: Alarm,
    progress: Progress,
}

/// One SMS to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sms {
    /// Person id.
    pub person: String,
    /// Phone number.
    pub phone: String,
    /// Text, under 160 characters.
    pub body: String,
    /// The alarms it is about (empty for an edge notice).
    pub alerts: Vec<String>,
    /// Why: `step 1 of route X`, `reminder`, `edge offline`.
    pub reason: String,
}

/// A notification not sent, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    /// Person id.
    pub person: String,
    /// The alarms.
    pub alerts: Vec<String>,
    /// `repeat_interval` or `rate_limit`.
    pub why: &'static str,
}

/// What [`Engine::due`] decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decisions {
    /// Messages to queue.
    pub sms: Vec<Sms>,
    /// Alarms that escalated now (announce `escalated` once).
    pub escalated: Vec<String>,
    /// Notifications held back.
    pub suppressed: Vec<Suppressed>,
    /// Chains whose progress changed (alarm id → progress; `None`: chain over).
    pub progress: Vec<(String, Option<Progress>)>,
}

/// The engine.
#[derive(Debug)]
pub struct Engine {
    plan: Arc<Plan>,
    episodes: BTreeMap<String, Episode>,
    /// Edges offline: edge → (ward, since, notified).
    offline: BTreeMap<String, (String, i64, bool)>,
    /// (person, patient) → last notified.
    last_told: HashMap<(String, String), i64>,
    /// person → recent send times.
    sent: HashMap<String, VecDeque<i64>>,
    /// Progress changes not yet reported by `due`.
    changed: Vec<(String, Option<Progress>)>,
}

impl Engine {
    /// An engine with no open chains.
    pub fn new(plan: Arc<Plan>) -> Self {
        Self {
            plan,
            episodes: BTreeMap::new(),
            offline: BTreeMap::new(),
            last_told: HashMap::new(),
            sent: HashMap::new(),
            changed: Vec::new(),
        }
    }

    /// Resumes a chain after a restart (one whose alarm ended meanwhile is closed).
    pub fn resume(&mut self, alarm: Alarm, progress: Progress) {
        let over = matches!(alarm.state, AlertState::Acknowledged | AlertState::Resolved)
            || alarm.silenced;
        let same_route = self
            .plan
            .routes
            .iter()
            .position(|r| r.name == progress.route_name);
        let Some(route) = same_route.filter(|_| !over) else {
            self.changed.push((alarm.id, None));
            return;
        };
        let progress = Progress { route, ..progress };
        if progress.next_step > self.plan.routes[route].steps.len() {
            self.changed.push((alarm.id, None));
        } else {
            self.episodes
                .insert(alarm.id.clone(), Episode { alarm, progress });
        }
    }

    /// Whether chain progress changed since the last [`Engine::due`] (to be stored).
    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Open chains.
    pub fn open_chains(&self) -> usize {
        self.episodes.len()
    }

    /// An alarm event at `now`; `watched`: a connected dashboard can see its ward.
    pub fn alarm(&mut self, alarm: Alarm, now: i64, watched: bool) {
        let over = matches!(alarm.state, AlertState::Acknowledged | AlertState::Resolved)
            || alarm.silenced;
        if over {
            if self.episodes.remove(&alarm.id).is_some() {
                self.changed.push((alarm.id, None));
                self.forget_if_quiet(&alarm.patient);
            }
            return;
        }
        if let Some(ep) = self.episodes.get_mut(&alarm.id) {
            // A worsening or our own `escalated`: keep the chain, refresh what it says.
            ep.alarm = Alarm {
                state: ep.alarm.state,
                ..alarm
            };
            return;
        }
        if alarm.state != AlertState::Raised {
            return;
        }
        let Some(route) = self.plan.route(&alarm.ward, alarm.priority, &alarm.kind) else {
            return;
        };
        if self.plan.routes[route].steps.is_empty() {
            return;
        }
        let progress = Progress {
            route,
            route_name: self.plan.routes[route].name.clone(),
            raised_at: now,
            next_step: 0,
            unwatched: !watched,
            last_repeat: None,
            escalated: false,
        };
        self.changed
            .push((alarm.id.clone(), Some(progress.clone())));
        self.episodes
            .insert(alarm.id.clone(), Episode { alarm, progress });
    }

    /// New values and text of an alarm (an update from its edge): a running chain's next
    /// texts say what is true now. Starts nothing, stops nothing.
    pub fn update(&mut self, alarm: Alarm) {
        if let Some(ep) = self.episodes.get_mut(&alarm.id) {
            ep.alarm.message = alarm.message;
        }
    }

    /// Once none of a patient's alarms is open, a new alarm is news again: the repeat interval
    /// holds back repeats about alarms people were told of, not the next episode.
    fn forget_if_quiet(&mut self, patient: &str) {
        if !self.episodes.values().any(|e| e.alarm.patient == patient) {
            self.last_told.retain(|(_, p), _| p != patient);
        }
    }

    /// A clinician silenced `patient`: their chains stop (the alarms stay on dashboards).
    pub fn silence(&mut self, patient: &str) {
        let ids: Vec<String> = self
            .episodes
            .iter()
            .filter(|(_, e)| e.alarm.patient == patient)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.episodes.remove(&id);
            self.changed.push((id, None));
        }
    }

    /// An edge went offline (as announced to dashboards) at `now`.
    pub fn edge_offline(&mut self, edge: &str, ward: &str, now: i64) {
        self.offline
            .entry(edge.to_owned())
            .or_insert((ward.to_owned(), now, false));
    }

    /// An edge is back.
    pub fn edge_online(&mut self, edge: &str) {
        self.offline.remove(edge);
    }

    fn step_due_at(&self, ep: &Episode) -> Option<i64> {
        let route = &self.plan.routes[ep.progress.route];
        match route.steps.get(ep.progress.next_step) {
            Some(step) if ep.progress.next_step == 0 && ep.progress.unwatched => Some(
                ep.progress
                    .raised_at
                    .min(ep.progress.raised_at + step.after_ms),
            ),
            Some(step) => Some(ep.progress.raised_at.saturating_add(step.after_ms)),
            None => {
                let last = ep
                    .progress
                    .last_repeat
                    .or_else(|| {
                        route
                            .steps
                            .last()
                            .map(|s| ep.progress.raised_at.saturating_add(s.after_ms))
                    })
                    .unwrap_or(ep.progress.raised_at);
                Some(last.saturating_add(self.plan.repeat_ms))
            }
        }
    }

    /// When [`Engine::due`] should next be called, if ever.
    pub fn next_deadline(&self) -> Option<i64> {
        let chains = self.episodes.values().filter_map(|ep| self.step_due_at(ep));
        let edges = self.offline.iter().filter_map(|(_, (ward, since, told))| {
            let route = self.plan.technical_route(ward)?;
            (!told).then(|| since.saturating_add(route.edge_offline_after_ms))
        });
        chains.chain(edges).min()
    }

    /// Everything due at `now`.
    pub fn due(&mut self, now: i64) -> Decisions {
        let mut out = Decisions {
            progress: std::mem::take(&mut self.changed),
            ..Decisions::default()
        };
        // (person, patient) → alarms due for them, highest priority first later.
        let mut wanted: BTreeMap<(String, String), (Vec<String>, String)> = BTreeMap::new();
        let ids: Vec<String> = self.episodes.keys().cloned().collect();
        for id in ids {
            let Some(ep) = self.episodes.get(&id) else {
                continue;
            };
            let Some(at) = self.step_due_at(ep) else {
                continue;
            };
            if at > now {
                continue;
            }
            let route = &self.plan.routes[ep.progress.route];
            let (recipients, reason) = match route.steps.get(ep.progress.next_step) {
                Some(step) => (
                    self.plan.recipients(step, now),
                    format!("step {} of route {}", ep.progress.next_step + 1, route.name),
                ),
                None => (
                    route
                        .steps
                        .last()
                        .map(|s| self.plan.recipients(s, now))
                        .unwrap_or_default(),
                    format!("reminder, route {}", route.name),
                ),
            };
            let patient = ep.alarm.patient.clone();
            if recipients.is_empty() {
                out.suppressed.push(Suppressed {
                    person: String::new(),
                    alerts: vec![id.clone()],
                    why: "no_recipient",
                });
            }
            for person in recipients {
                let entry = wanted
                    .entry((person, patient.clone()))
                    .or_insert_with(|| (Vec::new(), reason.clone()));
                entry.0.push(id.clone());
            }
            let Some(ep) = self.episodes.get_mut(&id) else {
                continue;
            };
            if ep.progress.next_step < route.steps.len() {
                ep.progress.next_step += 1;
            } else {
                ep.progress.last_repeat = Some(now);
            }
            if !ep.progress.escalated {
                ep.progress.escalated = true;
                out.escalated.push(id.clone());
            }
            out.progress.push((id.clone(), Some(ep.progress.clone())));
        }
        let repeat = self.plan.repeat_ms;
        self.last_told.retain(|_, t| now - *t < repeat);
        for ((person, patient), (alerts, reason)) in wanted {
            let key = (person.clone(), patient);
            if let Some(last) = self.last_told.get(&key)
                && now - last < self.plan.repeat_ms
            {
                out.suppressed.push(Suppressed {
                    person,
                    alerts,
                    why: "repeat_interval",
                });
                continue;
            }
            if !self.within_rate(&person, now) {
                out.suppressed.push(Suppressed {
                    person,
                    alerts,
                    why: "rate_limit",
                });
                continue;
            }
            let Some(who) = self.plan.person(&person) else {
                continue;
            };
            // Merged: every open alarm of the patient, the due ones and the others, the
            // highest priority first.
            let mut alarms: Vec<&Alarm> = self
                .episodes
                .values()
                .map(|e| &e.alarm)
                .filter(|a| a.patient == key.1)
                .collect();
            alarms.sort_by_key(|a| std::cmp::Reverse(a.priority));
            let alerts: Vec<String> = alarms.iter().map(|a| a.id.clone()).collect();
            let body = alarm_text(&alarms, &self.plan.dashboard_url);
            self.last_told.insert(key, now);
            self.sent.entry(person.clone()).or_default().push_back(now);
            out.sms.push(Sms {
                person,
                phone: who.phone.clone(),
                body,
                alerts,
                reason,
            });
        }
        // Edges offline long enough.
        let edges: Vec<String> = self.offline.keys().cloned().collect();
        for edge in edges {
            let Some((ward, since, told)) = self.offline.get(&edge).cloned() else {
                continue;
            };
            let Some(route) = self.plan.technical_route(&ward) else {
                continue;
            };
            if told || since.saturating_add(route.edge_offline_after_ms) > now {
                continue;
            }
            let technical = route.technical.clone();
            let minutes = (now - since) / 60_000;
            for person in technical {
                let Some(who) = self.plan.person(&person) else {
                    continue;
                };
                let phone = who.phone.clone();
                if !self.within_rate(&person, now) {
                    out.suppressed.push(Suppressed {
                        person,
                        alerts: Vec::new(),
                        why: "rate_limit",
                    });
                    continue;
                }
                self.sent.entry(person.clone()).or_default().push_back(now);
                out.sms.push(Sms {
                    person,
                    phone,
                    body: fit(
                        &format!("Wardlink: {ward} edge {edge} offline for {minutes} min."),
                        &self.plan.dashboard_url,
                    ),
                    alerts: Vec::new(),
                    reason: "edge offline".into(),
                });
            }
            if let Some(e) = self.offline.get_mut(&edge) {
                e.2 = true;
            }
        }
        out
    }

    fn within_rate(&mut self, person: &str, now: i64) -> bool {
        let window = self.plan.rate_window_ms;
        let sent = self.sent.entry(person.to_owned()).or_default();
        while sent.front().is_some_and(|t| now - t >= window) {
            sent.pop_front();
        }
        sent.len() < usize::try_from(self.plan.rate_limit).unwrap_or(usize::MAX)
    }
}

/// SMS text budget: under one GSM-7 segment (160).
pub const SMS_MAX: usize = 159;

fn priority_word(p: Priority) -> &'static str {
    match p {
        Priority::High => "HIGH",
        Priority::Medium => "MEDIUM",
        Priority::Low => "LOW",
    }
}

/// `Wardlink HIGH ward-7 pt v1:…: HR 152 above 130; +1 more. https://…` — ward, pseudonym,
/// priority, kind and value; never a name or a raw id; under 160 characters.
pub fn alarm_text(alarms: &[&Alarm], url: &str) -> String {
    let Some(first) = alarms.first() else {
        return fit("Wardlink alarm.", url);
    };
    let mut text = format!(
        "Wardlink {} {} pt {}: {} {}",
        priority_word(first.priority),
        first.ward,
        first.patient_label,
        first.kind,
        first.message
    );
    if alarms.len() > 1 {
        let mut kinds: Vec<&str> = Vec::new();
        for a in &alarms[1..] {
            if !kinds.contains(&a.kind.as_str()) {
                kinds.push(&a.kind);
            }
        }
        text.push_str(&format!(
            "; also {} more: {}",
            alarms.len() - 1,
            kinds.join(", ")
        ));
    }
    fit(&text, url)
}

/// `text` and `url` within [`SMS_MAX`] characters: the text is shortened (with `...`, which
/// GSM-7 encodes, unlike `…`), the link kept.
fn fit(text: &str, url: &str) -> String {
    let room = SMS_MAX.saturating_sub(if url.is_empty() { 0 } else { url.len() + 1 });
    let mut body: String = if text.chars().count() > room {
        let mut t: String = text.chars().take(room.saturating_sub(3)).collect();
        t.push_str("...");
        t
    } else {
        text.to_owned()
    };
    if !url.is_empty() {
        body.push(' ');
        body.push_str(url);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::plan::NotifySection;

    fn engine() -> Engine {
        #[derive(Deserialize)]
        struct Wrap {
            notify: NotifySection,
        }
        let plan = toml::from_str::<Wrap>(crate::notify::plan::tests::BASE)
            .unwrap()
            .notify
            .plan()
            .unwrap();
        Engine::new(Arc::new(plan))
    }

    /// 2026-11-26 06:58:00 London (= UTC in November), two minutes before the day shift.
    const T0: i64 = 1_795_676_280_000;
    /// Two hours later, well inside the day shift.
    const T1: i64 = T0 + 2 * 3_600_000;

    fn alarm(id: &str, patient: &str, state: AlertState) -> Alarm {
        Alarm {
            id: id.into(),
            patient: patient.into(),
            patient_label: format!("v1:{patient}-pseudo"),
            ward: "ward-7".into(),
            priority: Priority::High,
            kind: "hr_high".into(),
            state,
            message: "HR 152 above 130".into(),
            silenced: false,
        }
    }

    /// Runs the engine second by second from `from` to `to` (virtual time); returns every
    /// SMS with its time.
    fn run(e: &mut Engine, from: i64, to: i64) -> Vec<(i64, Sms)> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= to {
            if e.next_deadline().is_some_and(|d| d <= t) {
                out.extend(e.due(t).sms.into_iter().map(|s| (t, s)));
            }
            t += 1000;
        }
        out
    }

    fn who(sent: &[(i64, Sms)]) -> Vec<(i64, &str)> {
        sent.iter()
            .map(|(t, s)| ((t - T0) / 1000, s.person.as_str()))
            .collect()
    }

    #[test]
    fn texts_fit_one_sms_and_keep_the_link() {
        let mut a = alarm("a1", "p1", AlertState::Raised);
        a.message = "x".repeat(300);
        let b = alarm("a2", "p1", AlertState::Raised);
        let text = alarm_text(&[&a, &b], "https://wl.example/ward");
        assert_eq!(text.chars().count(), SMS_MAX);
        assert!(text.ends_with("... https://wl.example/ward"), "{text}");
        assert!(text.is_ascii());
    }

    #[test]
    fn acknowledged_within_30_s_sends_nothing() {
        let mut e = engine();
        e.alarm(alarm("a1", "p1", AlertState::Raised), T0, true);
        assert!(run(&mut e, T0, T0 + 29_000).is_empty());
        e.alarm(
            alarm("a1", "p1", AlertState::Acknowledged),
            T0 + 29_000,
            true,
        );
        assert!(run(&mut e, T0 + 29_000, T0 + 3_600_000).is_empty());
        assert_eq!(e.next_deadline(), None);
    }

    #[test]
    fn charge_nurse_at_30_s_doctor_at_90_s_then_nothing_after_the_ack() {
        let mut e = engine();
        e.alarm(alarm("a1", "p1", AlertState::Raised), T0, true);
        let sent = run(&mut e, T0, T0 + 100_000);
        // 06:59:30 → the night doctor is still on call at 06:59:30 (T0 + 90 s).
        assert_eq!(who(&sent), vec![(30, "cn"), (90, "dr-night")]);
        let text = &sent[0].1.body;
        assert!(
            text.starts_with("Wardlink HIGH ward-7 pt v1:p1-pseudo: hr_high HR 152"),
            "{text}"
        );
        assert!(text.ends_with("https://wl.example/"), "{text}");
        assert!(text.chars().count() <= SMS_MAX);
        assert!(
            !text.contains(" p1 ") && !text.contains(":p1:"),
            "raw id in {text}"
        );
        e.alarm(
            alarm("a1", "p1", AlertState::Acknowledged),
            T0 + 100_000,
            true,
        );
        assert!(run(&mut e, T0 + 100_000, T0 + 3_600_000).is_empty());
    }

    #[test]
    fn escalated_is_announced_once() {
        let mut e = engine();
        e.alarm(alarm("a1", "p1", AlertState::Raised), T0, true);
        let d = e.due(T0 + 30_000);
        assert_eq!(d.escalated, vec!["a1".to_owned()]);
        // Our own `escalated` event coming back through the bus changes nothing.
        e.alarm(alarm("a1", "p1", AlertState::Escalated), T0 + 30_001, true);
        let d = e.due(T0 + 90_000);
        assert!(d.escalated.is_empty());
        assert_eq!(d.sms.len(), 1);
    }

    #[test]
    fn nobody_watching_sends_the_first_step_at_once() {
        let mut e = engine();
        e.alarm(alarm("a1", "p1", AlertState::Raised), T0, false);
        assert_eq!(e.next_deadline(), Some(T0));
        let sent = run(&mut e, T0, T0 + 95_000);
        assert_eq!(who(&sent), vec![(0, "cn"), (90, "dr-night")]);
    }

    #[test]
    fn the_roster_decides_at_the_moment_of_the_step() {
        let mut e = engine();
        // Raised 06:59:00: the doctor step at 07:00:30 goes to the day doctor.
        e.alarm(alarm("a1", "p1", AlertState::Raised), T0 + 60_000, true);
        let sent = run(&mut e, T0 + 60_000, T0 + 160_000);
        assert_eq!(who(&sent), vec![(90, "cn"), (150, "dr-day")]);
    }

    #[test]
    fn a_storm_for_one_patient_is_one_sms_per_recipient_per_repeat_interval() {
        let mut e = engine();
        let mut sent = Vec::new();
        // 50 alarms for one patient in one minute, each a new episode, none acknowledged.
        for i in 0..50 {
            let t = T1 + i * 1200;
            e.alarm(alarm(&format!("s{i}"), "p1", AlertState::Raised), t, true);
            sent.extend(run(&mut e, t, t + 1199));
        }
        sent.extend(run(&mut e, T1 + 60_000, T1 + 299_000));
        let to_cn = sent.iter().filter(|(_, s)| s.person == "cn").count();
        let to_dr = sent
            .iter()
            .filter(|(_, s)| s.person.starts_with("dr"))
            .count();
        assert_eq!((to_cn, to_dr), (1, 1), "{:?}", who(&sent));
        // One merged message names more than one alarm.
        assert!(
            sent.iter()
                .any(|(_, s)| s.alerts.len() > 1 && s.body.contains("also"))
        );
        // A second patient is not held back by the first's interval.
        e.alarm(alarm("q1", "p2", AlertState::Raised), T1 + 300_000, true);
        let more = run(&mut e, T1 + 300_000, T1 + 330_000);
        assert!(
            more.iter()
                .any(|(_, s)| s.person == "cn" && s.alerts == ["q1"])
        );
    }

    #[test]
    fn reminders_repeat_while_unacknowledged_and_the_rate_limit_caps_them() {
        let mut e = engine();
        e.alarm(alarm("a1", "p1", AlertState::Raised), T1, true);
        let sent = run(&mut e, T1, T1 + 3 * 3_600_000);
        let to_dr: Vec<i64> = sent
            .iter()
            .filter(|(_, s)| s.person == "dr-day")
            .map(|(t, _)| (t - T1) / 1000)
            .collect();
        // 90 s, then every 300 s, at most 5 in any hour.
        assert_eq!(&to_dr[..3], &[90, 390, 690]);
        for w in to_dr.windows(6) {
            assert!(w[5] - w[0] >= 3600, "{to_dr:?}");
        }
    }

    #[test]
    fn silenced_alarms_start_no_chain_and_silencing_stops_one() {
        let mut e = engine();
        let mut quiet = alarm("a1", "p1", AlertState::Raised);
        quiet.silenced = true;
        e.alarm(quiet.clone(), T0, true);
        assert_eq!(e.next_deadline(), None);
        e.alarm(alarm("a2", "p2", AlertState::Raised), T0, true);
        let mut silenced = alarm("a2", "p2", AlertState::Raised);
        silenced.silenced = true;
        e.alarm(silenced, T0 + 10_000, true);
        assert!(run(&mut e, T0, T0 + 600_000).is_empty());
    }

    #[test]
    fn a_new_alarm_after_the_last_was_acknowledged_is_news() {
        let mut e = engine();
        e.alarm(alarm("a1", "p1", AlertState::Raised), T1, true);
        let mut sent = run(&mut e, T1, T1 + 40_000);
        e.alarm(
            alarm("a1", "p1", AlertState::Acknowledged),
            T1 + 40_000,
            true,
        );
        e.alarm(alarm("a2", "p1", AlertState::Raised), T1 + 60_000, true);
        sent.extend(run(&mut e, T1 + 40_000, T1 + 95_000));
        let to_cn: Vec<i64> = sent
            .iter()
            .filter(|(_, s)| s.person == "cn")
            .map(|(t, _)| (t - T1) / 1000)
            .collect();
        assert_eq!(to_cn, vec![30, 90]);
    }

    #[test]
    fn a_silence_stops_the_patients_running_chains() {
        let mut e = engine();
        e.alarm(alarm("a1", "p1", AlertState::Raised), T1, true);
        e.alarm(alarm("b1", "p2", AlertState::Raised), T1, true);
        let sent = run(&mut e, T1, T1 + 31_000);
        assert_eq!(sent.len(), 2);
        e.silence("p1");
        let later = run(&mut e, T1 + 31_000, T1 + 600_000);
        assert!(later.iter().all(|(_, s)| s.alerts == ["b1"]), "{later:?}");
        assert_eq!(e.open_chains(), 1);
    }

    #[test]
    fn a_step_whose_roster_is_empty_is_reported() {
        let text = crate::notify::plan::tests::BASE.replace(
            r#"days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "19:00""#,
            r#"days = ["sat"]
start = "19:00""#,
        );
        #[derive(Deserialize)]
        struct Wrap {
            notify: NotifySection,
        }
        let plan = toml::from_str::<Wrap>(&text)
            .unwrap()
            .notify
            .plan()
            .unwrap();
        let mut e = Engine::new(Arc::new(plan));
        // Thursday 20:00: nobody on the doctors' roster.
        let night = T0 + 13 * 3_600_000;
        e.alarm(alarm("a1", "p1", AlertState::Raised), night, true);
        e.due(night + 30_000);
        let d = e.due(night + 90_000);
        assert!(d.sms.is_empty());
        assert_eq!(d.suppressed.len(), 1);
        assert_eq!(d.suppressed[0].why, "no_recipient");
    }

    #[test]
    fn other_wards_and_priorities_are_not_routed() {
        let mut e = engine();
        let mut medium = alarm("a1", "p1", AlertState::Raised);
        medium.priority = Priority::Medium;
        e.alarm(medium, T0, false);
        let mut elsewhere = alarm("a2", "p2", AlertState::Raised);
        elsewhere.ward = "ward-8".into();
        e.alarm(elsewhere, T0, false);
        assert_eq!(e.next_deadline(), None);
    }

    #[test]
    fn an_edge_offline_long_enough_tells_the_technical_contact_once() {
        let mut e = engine();
        e.edge_offline("edge-7", "ward-7", T0);
        e.edge_online("edge-7");
        e.edge_offline("edge-7", "ward-7", T0 + 10_000);
        let sent = run(&mut e, T0, T0 + 600_000);
        assert_eq!(who(&sent), vec![(130, "it")]);
        assert!(sent[0].1.body.contains("ward-7 edge edge-7 offline"));
    }

    #[test]
    fn a_resumed_chain_continues_where_it_stopped() {
        let mut e = engine();
        e.alarm(alarm("a1", "p1", AlertState::Raised), T0, true);
        let d = e.due(T0 + 30_000);
        let progress = d
            .progress
            .iter()
            .rev()
            .find_map(|(id, p)| (id == "a1").then(|| p.clone()))
            .flatten()
            .unwrap();
        let mut after_restart = engine();
        after_restart.resume(alarm("a1", "p1", AlertState::Escalated), progress);
        let sent = run(&mut after_restart, T0 + 31_000, T0 + 100_000);
        assert_eq!(who(&sent), vec![(90, "dr-night")]);
    }
}
