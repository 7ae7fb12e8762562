//! What the ward view shows, kept by the edge itself: every patient's latest reading, the open
//! alarm episodes, silences, and a recent history, each event numbered with the edge's own
//! `seq` and rendered once in the hub's dashboard format ([`ServerEvent`]).
//!
//! The rules task feeds it as it accepts readings and raises alarms; it never waits here (one
//! short lock, a broadcast that drops for sessions that fall behind). Memory is bounded: the
//! alarm history keeps [`ALERT_HISTORY`] events, the readings history `history_max` readings of
//! at most one per patient every [`SAMPLE_MS`] (live sessions get every reading).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;
use wardlink_shared::alarm::{ActiveAlarm, AlarmEvent, AlertState};
use wardlink_shared::dashboard::ServerEvent;
use wardlink_shared::news2::News2;
use wardlink_shared::time::{Millis, format_rfc3339};
use wardlink_shared::vitals::{Reading, Vitals};
use wardlink_shared::{PatientId, WardId};

/// Alarm events kept for replay and history (they are few; this is hours of a busy ward).
pub const ALERT_HISTORY: usize = 5_000;
/// The readings history keeps at most one reading per patient per this many ms.
pub const SAMPLE_MS: Millis = 5_000;
/// Live events waiting for a slow session before it is told it fell behind.
const LIVE_CAPACITY: usize = 1_024;

/// One event as sessions send it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The edge's seq.
    pub seq: u64,
    /// The patient it concerns.
    pub patient: PatientId,
    /// When it happened (ms since the epoch, edge clock).
    pub ts: Millis,
    /// The dashboard JSON.
    pub json: Arc<str>,
}

#[derive(Default)]
struct State {
    seq: u64,
    /// Open episodes: the last event, who acknowledged it, and its rendered message.
    open: BTreeMap<String, (AlarmEvent, Option<String>, Event)>,
    /// Silences by patient (from, until, message).
    silences: HashMap<PatientId, (Millis, Millis, Event)>,
    /// Alarm events, oldest first.
    alerts: VecDeque<Event>,
    /// Sampled readings, oldest first.
    readings: VecDeque<Event>,
    /// When each patient's reading last entered `readings`.
    sampled: HashMap<PatientId, Millis>,
}

/// A handle to the ward view's state. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    ward: WardId,
    history_max: usize,
    state: Arc<Mutex<State>>,
    live: broadcast::Sender<Event>,
}

/// What a session starts from: events after its `since` (or the current state), and the seq
/// they bring it to.
pub struct Replay {
    /// Events in seq order.
    pub events: Vec<Event>,
    /// The highest seq given out when taken.
    pub seq: u64,
}

impl Feed {
    /// An empty view of `ward` keeping `history_max` sampled readings, numbering its events
    /// after `first_seq`. The edge starts it at the wall clock in microseconds: a page open
    /// across an edge restart resumes with a `since` below the new seqs, not above them (the
    /// page also takes the `head` of the `link` message as its position when it is lower).
    pub fn new(ward: WardId, history_max: usize, first_seq: u64) -> Self {
        Self {
            ward,
            history_max,
            state: Arc::new(Mutex::new(State {
                seq: first_seq,
                ..State::default()
            })),
            live: broadcast::channel(LIVE_CAPACITY).0,
        }
    }

    /// The ward shown.
    pub fn ward(&self) -> &WardId {
        &self.ward
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Numbers and renders `event`, and sends it live.
    fn stamp(&self, s: &mut State, patient: &PatientId, ts: Millis, event: &ServerEvent) -> Event {
        s.seq += 1;
        let e = Event {
            seq: s.seq,
            patient: patient.clone(),
            ts,
            json: event.to_json(s.seq).into(),
        };
        // No session listening is fine.
        let _ = self.live.send(e.clone());
        e
    }

    /// A reading the rules accepted.
    pub fn vitals(&self, reading: &Reading, news2: Option<News2>) {
        let event = ServerEvent::vitals(&self.ward, reading, news2);
        let mut s = self.lock();
        let e = self.stamp(&mut s, &reading.patient, reading.ts, &event);
        let due = s
            .sampled
            .get(&reading.patient)
            .is_none_or(|last| reading.ts - last >= SAMPLE_MS || reading.ts < *last);
        if due {
            s.sampled.insert(reading.patient.clone(), reading.ts);
            s.readings.push_back(e);
            while s.readings.len() > self.history_max {
                s.readings.pop_front();
            }
        }
    }

    /// An alarm event the rules produced.
    pub fn alarm(&self, alarm: &AlarmEvent) {
        let mut s = self.lock();
        // A worsening clears an earlier acknowledgement, as at the hub.
        let by = match alarm.state {
            AlertState::Acknowledged => s.open.get(&alarm.id).and_then(|(_, by, _)| by.clone()),
            _ => None,
        };
        let event = ServerEvent::alert(&self.ward, alarm, by.clone());
        let e = self.stamp(&mut s, &alarm.patient, alarm.ts, &event);
        if alarm.state == AlertState::Resolved {
            s.open.remove(&alarm.id);
        } else {
            s.open
                .insert(alarm.id.clone(), (alarm.clone(), by, e.clone()));
        }
        push_alert(&mut s, e);
    }

    /// An episode the engine took up from its saved state at start (the view starts empty).
    pub fn restored(&self, alarm: &ActiveAlarm, ts: Millis) {
        let event = AlarmEvent {
            id: alarm.id.clone(),
            patient: alarm.patient.clone(),
            kind: alarm.kind.clone(),
            priority: alarm.priority,
            state: AlertState::Raised,
            message: "open before the edge restarted".into(),
            values: Vitals::default(),
            ts,
            silenced: false,
            version: alarm.version,
            current: None,
            worst: None,
            update: false,
        };
        self.alarm(&event);
        if let Some(by) = &alarm.acknowledged_by {
            self.acknowledged(&alarm.id, by, ts);
        }
    }

    /// Episode `alert` acknowledged by `by` at `ts` (here or at the hub). False if it is not
    /// open here.
    pub fn acknowledged(&self, alert: &str, by: &str, ts: Millis) -> bool {
        let mut s = self.lock();
        let Some((last, _, _)) = s.open.get(alert).cloned() else {
            return false;
        };
        let acked = AlarmEvent {
            state: AlertState::Acknowledged,
            ts,
            update: false,
            ..last
        };
        let event = ServerEvent::alert(&self.ward, &acked, Some(by.to_owned()));
        let e = self.stamp(&mut s, &acked.patient, ts, &event);
        s.open
            .insert(alert.to_owned(), (acked, Some(by.to_owned()), e.clone()));
        push_alert(&mut s, e);
        true
    }

    /// `patient`'s alarms silenced until `until` by `by`.
    pub fn silenced(&self, patient: &PatientId, until: Millis, by: &str, reason: &str, ts: Millis) {
        let event = ServerEvent::Silence {
            patient: patient.clone(),
            ward: self.ward.clone(),
            until: format_rfc3339(until),
            by: by.to_owned(),
            reason: reason.to_owned(),
        };
        let mut s = self.lock();
        let e = self.stamp(&mut s, patient, ts, &event);
        s.silences.insert(patient.clone(), (ts, until, e.clone()));
        push_alert(&mut s, e);
    }

    /// Whether `patient` has been seen here (a reading or an alarm).
    pub fn knows(&self, patient: &PatientId) -> bool {
        let s = self.lock();
        s.sampled.contains_key(patient) || s.open.values().any(|(a, ..)| &a.patient == patient)
    }

    /// The open episodes: each one's last event, who acknowledged it (if anyone has since
    /// its last raise), and its patient's latest silence (from, until).
    pub fn episodes(&self) -> Vec<Episode> {
        let s = self.lock();
        s.open
            .values()
            .map(|(a, by, _)| Episode {
                alarm: a.clone(),
                acknowledged_by: by.clone(),
                silence: s
                    .silences
                    .get(&a.patient)
                    .map(|(from, until, _)| (*from, *until)),
            })
            .collect()
    }

    /// The version of episode `alert` as last shown here, if it is open.
    pub fn version(&self, alert: &str) -> Option<u32> {
        self.lock().open.get(alert).map(|(last, _, _)| last.version)
    }

    /// Whether episode `alert` is open.
    pub fn is_open(&self, alert: &str) -> bool {
        self.lock().open.contains_key(alert)
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// What a session resuming after `since` must be sent: every alarm event and kept reading
    /// after it; when `since` is older than what is kept, the open episodes and silences as
    /// they stand too (re-sent under their last seqs, which the page may already have).
    pub fn replay(&self, since: u64, now: Millis) -> Replay {
        let s = self.lock();
        let mut events: Vec<Event> = s
            .alerts
            .iter()
            .chain(s.readings.iter())
            .filter(|e| e.seq > since)
            .cloned()
            .collect();
        let oldest = s.alerts.front().map_or(u64::MAX, |e| e.seq);
        if since < oldest {
            events.extend(current(&s, now).filter(|e| e.seq <= since).cloned());
        }
        events.sort_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        Replay { events, seq: s.seq }
    }

    /// The history between `from` and `to` (ms), of `patient` or of the whole ward: kept
    /// readings and alarm events in the range, plus (for the ward) every open episode and
    /// active silence whatever its age, in seq order.
    pub fn history(
        &self,
        patient: Option<&PatientId>,
        (from, to): (Millis, Millis),
        now: Millis,
    ) -> Replay {
        let s = self.lock();
        let mine = |e: &&Event| patient.is_none_or(|p| &e.patient == p);
        let mut events: Vec<Event> = s
            .alerts
            .iter()
            .chain(s.readings.iter())
            .filter(|e| (from..=to).contains(&e.ts))
            .filter(mine)
            .cloned()
            .collect();
        events.extend(current(&s, now).filter(mine).cloned());
        events.sort_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        Replay { events, seq: s.seq }
    }
}

/// An open episode as the ward view knows it.
#[derive(Debug, Clone)]
pub struct Episode {
    /// Its last event.
    pub alarm: AlarmEvent,
    /// Who acknowledged it since its last raise.
    pub acknowledged_by: Option<String>,
    /// Its patient's latest silence (from, until; ms, edge clock).
    pub silence: Option<(Millis, Millis)>,
}

/// The open episodes and the silences still running at `now`.
fn current(s: &State, now: Millis) -> impl Iterator<Item = &Event> {
    s.open.values().map(|(_, _, e)| e).chain(
        s.silences
            .values()
            .filter(move |(_, until, _)| *until > now)
            .map(|(_, _, e)| e),
    )
}

fn push_alert(s: &mut State, e: Event) {
    s.alerts.push_back(e);
    while s.alerts.len() > ALERT_HISTORY {
        s.alerts.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use wardlink_shared::alarm::Priority;

    use super::*;

    fn reading(patient: &str, ts: Millis) -> Reading {
        Reading {
            patient: PatientId::new(patient).unwrap_or_else(|e| panic!("{e}")),
            ts,
            vitals: Vitals {
                hr: Some(80.0),
                ..Vitals::default()
            },
        }
    }

    fn alarm(id: &str, state: AlertState, ts: Millis) -> AlarmEvent {
        AlarmEvent {
            id: id.into(),
            patient: PatientId::new("bed-1").unwrap_or_else(|e| panic!("{e}")),
            kind: "hr_high".into(),
            priority: Priority::High,
            state,
            message: "HR high".into(),
            values: Vitals::default(),
            ts,
            silenced: false,
            version: 1,
            current: None,
            worst: None,
            update: false,
        }
    }

    #[test]
    fn a_session_resumes_without_gap_and_a_late_one_gets_the_open_episodes() {
        let feed = Feed::new(
            WardId::new("ward-a").unwrap_or_else(|e| panic!("{e}")),
            2,
            0,
        );
        for ts in (0..60_000).step_by(1_000) {
            feed.vitals(&reading("bed-1", ts), None);
        }
        feed.alarm(&alarm("e-1", AlertState::Raised, 60_000));
        assert!(feed.acknowledged("e-1", "ann", 61_000));
        assert!(!feed.acknowledged("e-2", "ann", 61_000), "not open");
        // Readings: sampled every 5 s, and only the last two kept.
        let all = feed.replay(0, 62_000);
        let readings = all
            .events
            .iter()
            .filter(|e| e.json.contains("\"vitals\""))
            .count();
        assert_eq!(readings, 2);
        assert_eq!(all.seq, 62);
        // After seq 61 (the raise): only the acknowledgement, with who.
        let after = feed.replay(61, 62_000);
        assert_eq!(after.events.len(), 1);
        assert!(
            after.events[0].json.contains("\"by\":\"ann\""),
            "{}",
            after.events[0].json
        );
        // The ward's history carries the open episode whatever the range.
        let h = feed.history(None, (0, 10), 62_000);
        assert!(h.events.iter().any(|e| e.json.contains("acknowledged")));
        feed.alarm(&alarm("e-1", AlertState::Resolved, 63_000));
        assert!(!feed.is_open("e-1"));
        assert!(
            feed.history(None, (0, 10), 64_000)
                .events
                .iter()
                .all(|e| !e.json.contains("alert"))
        );
    }
}
