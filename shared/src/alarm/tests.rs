//! State-machine tests of the alarm engine with virtual time.

use super::*;
use crate::vitals::Acvpu;

pub(super) fn patient() -> PatientId {
    PatientId::new("bed-1").unwrap()
}

pub(super) fn reading(ts: Millis, vitals: Vitals) -> Reading {
    Reading {
        patient: patient(),
        ts,
        vitals,
    }
}

pub(super) fn hr(v: f32, ts: Millis) -> Reading {
    reading(
        ts,
        Vitals {
            hr: Some(v),
            ..Vitals::default()
        },
    )
}

/// Virtual time `ms` on both clocks: the monotonic one counts from a fixed instant, the wall
/// clock reads `ms`.
pub(super) fn at(ms: Millis) -> Now {
    static BASE: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    Now {
        mono: *BASE + Duration::from_millis(u64::try_from(ms).unwrap()),
        wall: ms,
    }
}

pub(super) fn engine() -> AlarmEngine {
    AlarmEngine::new(RuleSettings::default(), "edge")
}

/// Feeds a reading every second from `from` (ms) for each value; returns all events.
pub(super) fn trace(e: &mut AlarmEngine, from: Millis, values: &[f32]) -> Vec<AlarmEvent> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let t = from + i64::try_from(i).unwrap() * 1000;
        out.extend(e.observe(&hr(*v, t), at(t)).events);
        out.extend(e.tick(at(t + 500)));
    }
    out
}

#[test]
fn normal_values_raise_nothing() {
    let mut e = engine();
    assert!(trace(&mut e, 0, &[60.0, 72.0, 99.0, 130.0, 41.0]).is_empty());
}

#[test]
fn an_eight_second_spike_under_a_ten_second_delay_raises_nothing() {
    let mut e = engine();
    let mut values = vec![150.0; 8];
    values.extend([80.0; 20]);
    assert!(trace(&mut e, 0, &values).is_empty());
}

#[test]
fn a_sustained_condition_raises_once() {
    let mut e = engine();
    let events = trace(&mut e, 0, &[150.0; 60]);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, "hr_high");
    assert_eq!(events[0].state, AlertState::Raised);
    assert_eq!(events[0].priority, Priority::Medium);
    // Raised once the 10 s delay had passed, not before.
    assert!(
        events[0].ts >= 10_000 && events[0].ts <= 10_500,
        "{}",
        events[0].ts
    );
}

#[test]
fn tick_raises_when_the_delay_elapses_between_samples() {
    let mut e = engine();
    assert!(e.observe(&hr(150.0, 0), at(0)).events.is_empty());
    assert!(e.tick(at(9_999)).is_empty());
    let ev = e.tick(at(10_000));
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].values.hr, Some(150.0));
    assert!(e.tick(at(20_000)).is_empty());
}

#[test]
fn hysteresis_keeps_an_oscillating_trace_to_one_episode() {
    let mut e = engine();
    // Raise, then oscillate across the 130 limit (but not below 125) for two minutes.
    let mut values = vec![140.0; 12];
    for i in 0..120 {
        values.push(if i % 2 == 0 { 127.0 } else { 133.0 });
    }
    let events = trace(&mut e, 0, &values);
    let (updates, raised): (Vec<_>, Vec<_>) = events.iter().partition(|e| e.update);
    assert_eq!(raised.len(), 1, "one episode, not dozens: {raised:?}");
    // What the list shows follows the value, at most every 5 s, never as news.
    assert!(
        updates
            .iter()
            .all(|u| u.id == raised[0].id && u.version == 1),
        "{updates:?}"
    );
    assert!(updates.len() <= 120 / 5 + 1, "{}", updates.len());
    // Past the hysteresis it resolves, with the same id.
    let resolved = trace(&mut e, 200_000, &[120.0]);
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].state, AlertState::Resolved);
    assert_eq!(resolved[0].id, events[0].id);
    // A new episode gets a new id.
    let again = trace(&mut e, 300_000, &[200.0; 5]);
    assert_ne!(again[0].id, events[0].id);
}

#[test]
fn extreme_bypasses_the_delay_and_worsening_keeps_the_episode() {
    let mut e = engine();
    let first = trace(&mut e, 0, &[150.0; 11]);
    assert_eq!(first.len(), 1);
    let worse = e.observe(&hr(190.0, 20_000), at(20_000)).events;
    assert_eq!(worse.len(), 1);
    assert_eq!(worse[0].id, first[0].id);
    assert_eq!(worse[0].priority, Priority::High);
    assert_eq!(worse[0].state, AlertState::Raised);

    // Falling through the alarm band into the extreme: at once.
    let mut falling = engine();
    assert!(falling.observe(&hr(38.0, 0), at(0)).events.is_empty());
    let ev = falling.observe(&hr(25.0, 1_000), at(1_000)).events;
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].kind.as_str(), ev[0].priority),
        ("hr_low", Priority::High)
    );
}

#[test]
fn a_jump_straight_to_extreme_must_persist_briefly() {
    // A loose lead: 70 → 25 for two seconds → 70. Nothing.
    let mut e = engine();
    let mut values = vec![70.0; 5];
    values.extend([25.0, 25.0]);
    values.extend([70.0; 10]);
    assert!(trace(&mut e, 0, &values).is_empty());
    // A real asystole-like fall that stays: raised after the 3 s confirmation.
    let mut values = vec![70.0; 5];
    values.extend([25.0; 10]);
    let ev = trace(&mut e, 100_000, &values);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].priority, Priority::High);
    assert!(
        ev[0].ts - 105_000 >= 3_000 && ev[0].ts - 105_000 <= 3_500,
        "{}",
        ev[0].ts
    );
}

#[test]
fn patients_are_independent() {
    let mut e = engine();
    e.observe(&hr(150.0, 0), at(0));
    let other = Reading {
        patient: PatientId::new("bed-2").unwrap(),
        ..hr(70.0, 5_000)
    };
    assert!(e.observe(&other, at(5_000)).events.is_empty());
    let ev = e.tick(at(10_000));
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].patient, patient());
}

#[test]
fn signal_lost_is_raised_and_cleared() {
    let mut e = engine();
    // A device reporting every 2 s: 3 intervals is 6 s, below the 30 s floor.
    for i in 0..10 {
        assert!(
            e.observe(&hr(70.0, i * 2000), at(i * 2000))
                .events
                .is_empty()
        );
    }
    let last = 18_000;
    assert!(e.tick(at(last + 29_999)).is_empty());
    let lost = e.tick(at(last + 30_000));
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].kind, "signal_lost");
    assert_eq!(lost[0].priority, Priority::Medium);
    assert!(e.tick(at(last + 90_000)).is_empty(), "raised once");
    let back = e
        .observe(&hr(70.0, last + 95_000), at(last + 95_000))
        .events;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].state, AlertState::Resolved);
    assert_eq!(back[0].id, lost[0].id);
}

#[test]
fn signal_lost_follows_a_slow_device_interval() {
    let mut e = engine();
    // One reading a minute: lost after three minutes, not after 30 s.
    for i in 0..5 {
        e.observe(&hr(70.0, i * 60_000), at(i * 60_000));
    }
    let last = 240_000;
    assert!(e.tick(at(last + 179_000)).is_empty());
    assert_eq!(e.tick(at(last + 180_000)).len(), 1);
}

pub(super) fn full(ts: Millis, hr: f32, rr: f32, acvpu: Acvpu) -> Reading {
    reading(
        ts,
        Vitals {
            hr: Some(hr),
            spo2: Some(97.0),
            rr: Some(rr),
            temp: Some(37.0),
            sbp: Some(120.0),
            dbp: Some(80.0),
            o2: Some(false),
            acvpu: Some(acvpu),
        },
    )
}

#[test]
fn news2_is_scored_and_triggers() {
    let settings = RuleSettings {
        news2: News2Settings {
            delay_s: 0,
            ..News2Settings::default()
        },
        ..RuleSettings::default()
    };
    let mut e = AlarmEngine::new(settings, "edge");
    let calm = e.observe(&full(0, 70.0, 16.0, Acvpu::A), at(0));
    assert_eq!(calm.news2.map(|n| n.total), Some(0));
    assert!(calm.events.is_empty());

    // New confusion alone scores 3: medium.
    let confused = e.observe(&full(1_000, 70.0, 16.0, Acvpu::C), at(1_000));
    let n = confused
        .events
        .iter()
        .find(|e| e.kind == "news2")
        .expect("news2 alarm");
    assert_eq!(
        (n.priority, n.state),
        (Priority::Medium, AlertState::Raised)
    );
    assert!(n.message.starts_with("NEWS2 3"), "{}", n.message);

    // Worse: HR 111–130 (2) + RR ≥25 (3) + C (3) = 8: high, same episode.
    let worse = e.observe(&full(2_000, 115.0, 26.0, Acvpu::C), at(2_000));
    let w = worse
        .events
        .iter()
        .find(|e| e.kind == "news2")
        .expect("update");
    assert_eq!((w.priority, &w.id), (Priority::High, &n.id));

    // Back to calm: resolved.
    let back = e.observe(&full(3_000, 70.0, 16.0, Acvpu::A), at(3_000));
    let r = back
        .events
        .iter()
        .find(|e| e.kind == "news2")
        .expect("resolved");
    assert_eq!((r.state, &r.id), (AlertState::Resolved, &n.id));
}

#[test]
fn news2_needs_every_parameter_fresh() {
    let mut e = engine();
    assert!(e.observe(&hr(70.0, 0), at(0)).news2.is_none());
    assert!(
        e.observe(&full(1_000, 70.0, 16.0, Acvpu::A), at(1_000))
            .news2
            .is_some()
    );
    // Eleven minutes later only HR is new: the rest is stale.
    assert!(e.observe(&hr(70.0, 661_000), at(661_000)).news2.is_none());
}

#[test]
fn acknowledgement_is_kept_until_the_alarm_worsens() {
    let mut e = engine();
    let raised = trace(&mut e, 0, &[150.0; 11]);
    let id = raised[0].id.clone();
    assert!(e.acknowledge(&id, None, "ann", at(12_000)).acknowledged());
    assert!(
        !e.acknowledge("no-such-episode", None, "ann", at(12_000))
            .acknowledged()
    );
    assert_eq!(e.active()[0].acknowledged_by.as_deref(), Some("ann"));
    assert_eq!(e.active()[0].kind, "hr_high");
    // Still true: no new event.
    assert!(trace(&mut e, 20_000, &[150.0; 5]).is_empty());
    // Worse: notified again, acknowledgement cleared.
    let worse = e.observe(&hr(190.0, 30_000), at(30_000)).events;
    assert_eq!(worse[0].id, id);
    assert_eq!(e.active()[0].acknowledged_by, None);
}

#[test]
fn settings_validation_names_the_key() {
    let mut s = RuleSettings::default();
    assert_eq!(s.validate(), Ok(()));
    s.signal.priority = Priority::High;
    assert_eq!(s.validate().unwrap_err().0, "signal.priority");
    let mut s = RuleSettings::default();
    s.limits.hr.low = Some(200.0);
    assert_eq!(s.validate().unwrap_err().0, "alarms.hr.low");
}

#[test]
fn a_rising_heart_rate_pre_alerts_before_the_limit() {
    let mut e = engine();
    let mut events = Vec::new();
    // 75 → 125 over 20 minutes, one reading every 2 s, with ±3 bpm noise.
    for i in 0..600 {
        let t = i * 2000;
        #[allow(clippy::cast_precision_loss)]
        let v = 75.0 + 50.0 * (i as f32 / 600.0) + if i % 2 == 0 { 3.0 } else { -3.0 };
        events.extend(e.observe(&hr(v, t), at(t)).events);
    }
    let trend: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "trend_hr_rising")
        .collect();
    assert_eq!(trend.len(), 1, "{events:?}");
    assert_eq!(trend[0].priority, Priority::Low);
    assert!(
        events.iter().all(|e| e.kind != "hr_high"),
        "no limit crossed"
    );
    assert!(e.active().iter().any(|a| a.kind == "trend_hr_rising"));
}

#[test]
fn a_silence_marks_events_but_not_high_ones_beyond_the_maximum() {
    let mut e = engine();
    e.silence(&patient(), 0, 600_000, at(0));
    let medium = trace(&mut e, 0, &[150.0; 11]);
    assert_eq!(medium.len(), 1);
    assert!(medium[0].silenced);
    // High priority within max_high_s (120 s) of the silence's start: still silenced.
    let early = e.observe(&hr(190.0, 60_000), at(60_000)).events;
    assert!(early[0].silenced && early[0].priority == Priority::High);
    // A new high episode after that: notified.
    trace(&mut e, 130_000, &[80.0]);
    let mut values = vec![150.0];
    values.extend([190.0; 5]);
    let late = trace(&mut e, 200_000, &values);
    let high = late
        .iter()
        .find(|ev| ev.priority == Priority::High)
        .unwrap();
    assert!(!high.silenced);
    // After the silence ends, nothing is silenced.
    trace(&mut e, 700_000, &[80.0]);
    let after = trace(&mut e, 800_000, &[150.0; 11]);
    assert!(!after[0].silenced);
}

#[test]
fn patient_settings_replace_the_ward_limits_for_that_patient() {
    let mut e = AlarmEngine::new(
        RuleSettings {
            limits: AlarmLimits {
                hr: VitalLimits {
                    delay_s: 0,
                    ..AlarmLimits::default().hr
                },
                ..AlarmLimits::default()
            },
            ..RuleSettings::default()
        },
        "edge",
    );
    // An athlete: resting HR 38 is normal for them.
    let mut own = PatientSettings::default();
    own.limits.insert(
        VitalSign::Hr,
        VitalLimits {
            low: Some(32.0),
            delay_s: 0,
            ..AlarmLimits::default().hr
        },
    );
    own.validate().unwrap();
    assert!(
        e.set_patient_settings(patient(), own.clone(), at(0))
            .is_empty()
    );
    assert!(e.observe(&hr(38.0, 0), at(0)).events.is_empty());
    let other = Reading {
        patient: PatientId::new("bed-2").unwrap(),
        ..hr(38.0, 0)
    };
    assert_eq!(
        e.observe(&other, at(0)).events.len(),
        1,
        "the ward's limits still apply to others"
    );

    let mut bad = PatientSettings::default();
    bad.limits.insert(
        VitalSign::Hr,
        VitalLimits {
            low: Some(150.0),
            ..AlarmLimits::default().hr
        },
    );
    assert_eq!(bad.validate().unwrap_err().0, "hr.low");
}

#[test]
fn an_acknowledged_alarm_still_present_reminds_after_the_repeat_interval() {
    let mut e = engine();
    let raised = trace(&mut e, 0, &[150.0; 11]);
    assert!(
        e.acknowledge(&raised[0].id, None, "ann", at(20_000))
            .acknowledged()
    );
    // (The device is silent in this test, so `signal_lost` events come too; ignore them.)
    let hr_events = |events: Vec<AlarmEvent>| -> Vec<AlarmEvent> {
        events
            .into_iter()
            .filter(|ev| ev.kind == "hr_high")
            .collect()
    };
    assert!(hr_events(e.tick(at(20_000 + 1_799_999))).is_empty());
    let reminder = hr_events(e.tick(at(20_000 + 1_800_000)));
    assert_eq!(reminder.len(), 1);
    assert_eq!(reminder[0].id, raised[0].id);
    assert_eq!(reminder[0].state, AlertState::Raised);
    assert!(
        reminder[0].message.contains("30 min"),
        "{}",
        reminder[0].message
    );
    assert!(
        e.tick(at(20_000 + 3_000_000)).is_empty(),
        "once per acknowledgement"
    );
}

#[test]
fn changing_limits_resolves_episodes_judged_by_the_old_ones() {
    let mut e = engine();
    let raised = trace(&mut e, 0, &[150.0; 11]);
    let mut own = PatientSettings::default();
    own.limits.insert(
        VitalSign::Hr,
        VitalLimits {
            high: None,
            high_extreme: None,
            ..AlarmLimits::default().hr
        },
    );
    let resolved = e.set_patient_settings(patient(), own, at(20_000));
    assert_eq!(resolved.len(), 1);
    assert_eq!(
        (resolved[0].state, &resolved[0].id),
        (AlertState::Resolved, &raised[0].id)
    );
    // HR high alarms are off for this patient now.
    assert!(trace(&mut e, 30_000, &[150.0; 20]).is_empty());
}

#[test]
fn a_silenced_alarm_is_announced_again_when_the_silence_no_longer_covers_it() {
    let mut e = engine();
    e.silence(&patient(), 0, 300_000, at(0));
    let medium = trace(&mut e, 0, &[150.0; 11]);
    assert!(medium[0].silenced);
    // Through the band to extreme at 60 s: high, still silenced (within max_high_s = 120 s).
    let high = e.observe(&hr(190.0, 60_000), at(60_000)).events;
    assert!(high[0].silenced);
    // Keep the device talking so signal_lost does not interfere.
    let mut again = Vec::new();
    for t in (61..=130).map(|s| s * 1000) {
        again.extend(e.observe(&hr(190.0, t), at(t)).events);
        again.extend(e.tick(at(t + 500)));
    }
    let announced: Vec<_> = again.iter().filter(|ev| ev.id == medium[0].id).collect();
    assert_eq!(announced.len(), 1, "{again:?}");
    assert!(!announced[0].silenced);
    assert_eq!(announced[0].state, AlertState::Raised);
    assert!(
        announced[0].ts >= 120_000 && announced[0].ts <= 121_500,
        "{}",
        announced[0].ts
    );
}

#[test]
fn messages_read_as_before_they_became_lazy() {
    use super::Text;
    use super::limits::Side;
    let cases = [
        (
            Text::Limit {
                sign: VitalSign::Hr,
                side: Side::High,
                value: 150.0,
                limit: 130.0,
            },
            "HR high: 150 /min > 130",
        ),
        (
            Text::Limit {
                sign: VitalSign::Temp,
                side: Side::Low,
                value: 34.5,
                limit: 35.0,
            },
            "Temp low: 34.5 °C < 35",
        ),
        (
            Text::LimitClear {
                sign: VitalSign::Spo2,
                value: 95.0,
            },
            "SpO2 95 % back within limits",
        ),
        (
            Text::Trend {
                sign: VitalSign::Rr,
                rising: true,
                change: 8.2,
                minutes: 30,
            },
            "RR rising: +8 /min over 30 min",
        ),
        (Text::TrendClear(VitalSign::Rr), "RR steady again"),
        (
            Text::News2 {
                total: 5,
                single: true,
            },
            "NEWS2 5 (a single parameter scores 3)",
        ),
        (
            Text::News2 {
                total: 7,
                single: false,
            },
            "NEWS2 7",
        ),
        (Text::News2Clear(2), "NEWS2 2: low risk again"),
        (Text::Fixed("Data received again"), "Data received again"),
    ];
    for (text, want) in cases {
        assert_eq!(text.render(), want);
    }
}
