//! Episode versions, current values, and signal quality (issue 16), in virtual time.

use super::tests::{at, engine, reading};
use super::*;
use crate::vitals::Acvpu;

/// One SpO2 reading at `ts` (ms) with a perfusion index.
fn spo2(v: f32, pi: f32, ts: Millis) -> (Reading, Quality) {
    let r = reading(
        ts,
        Vitals {
            spo2: Some(v),
            ..Vitals::default()
        },
    );
    let q = Quality {
        pi: Some(pi),
        ..Quality::default()
    };
    (r, q)
}

/// Feeds `(value, pi)` once a second from `from` (ms), ticking between; returns the events
/// with the second they happened at.
fn run(e: &mut AlarmEngine, from: Millis, samples: &[(f32, f32)]) -> Vec<(Millis, AlarmEvent)> {
    let mut out = Vec::new();
    for (i, (v, pi)) in samples.iter().enumerate() {
        let t = from + i64::try_from(i).unwrap() * 1000;
        let (r, q) = spo2(*v, *pi, t);
        let events = e.observe_with(&r, &q, true, at(t)).events;
        out.extend(events.into_iter().map(|ev| (t, ev)));
        out.extend(e.tick(at(t + 500)).into_iter().map(|ev| (t + 500, ev)));
    }
    out
}

fn of_kind<'a>(events: &'a [(Millis, AlarmEvent)], kind: &str) -> Vec<&'a (Millis, AlarmEvent)> {
    events.iter().filter(|(_, e)| e.kind == kind).collect()
}

const GOOD: f32 = 2.0;
const POOR: f32 = 0.1;

#[test]
fn a_worsening_is_a_new_version_and_an_older_acknowledgement_covers_nothing() {
    let mut e = engine();
    let raised = run(&mut e, 0, &[(90.0, GOOD); 16]);
    let first = &of_kind(&raised, "spo2_low")[0].1;
    assert_eq!((first.version, first.state), (1, AlertState::Raised));
    assert_eq!((first.current, first.worst), (Some(90.0), Some(90.0)));
    let id = first.id.clone();

    // A dip of a step that does not last the alarm delay (15 s) is not a worsening.
    let dip = run(&mut e, 16_000, &[(86.0, GOOD); 5]);
    assert!(
        of_kind(&dip, "spo2_low").iter().all(|(_, e)| e.update),
        "{dip:?}"
    );
    let _ = run(&mut e, 21_000, &[(90.0, GOOD)]);
    // Nurse A sees version 1; before she clicks, SpO2 falls a step further (90 → 86, step 3)
    // and stays there for the delay.
    let worse = run(&mut e, 22_000, &[(86.0, GOOD); 16]);
    let w = &of_kind(&worse, "spo2_low")
        .into_iter()
        .find(|(_, e)| !e.update)
        .expect("a worsening")
        .1;
    assert_eq!(
        (w.version, w.state, w.priority),
        (2, AlertState::Raised, Priority::Medium),
        "a worsening at the same priority is news: {w:?}"
    );
    assert_eq!(w.message, "SpO2 low: 86 % < 92");
    assert_eq!(
        e.acknowledge(&id, Some(1), "nurse-a", at(38_000)),
        AckResult::Stale { current: 2 }
    );
    assert_eq!(e.active()[0].acknowledged_by, None, "still unacknowledged");
    // Nurse B saw version 2.
    assert_eq!(
        e.acknowledge(&id, Some(2), "nurse-b", at(38_500)),
        AckResult::Acknowledged { version: 2 }
    );
    assert_eq!(e.active()[0].acknowledged_by.as_deref(), Some("nurse-b"));
    // A further worsening voids it again; a client that names no version acknowledges the
    // current one (the old meaning).
    let again = run(&mut e, 39_000, &[(82.0, GOOD); 16]);
    let versions: Vec<u32> = of_kind(&again, "spo2_low")
        .iter()
        .filter(|(_, e)| !e.update)
        .map(|(_, e)| e.version)
        .collect();
    assert_eq!(versions, [3]);
    assert_eq!(e.active()[0].acknowledged_by, None);
    assert!(
        e.acknowledge(&id, None, "nurse-c", at(56_000))
            .acknowledged()
    );
    assert_eq!(
        e.acknowledge("nope", Some(1), "x", at(56_000)),
        AckResult::Unknown
    );
}

#[test]
fn news2_eight_to_fifteen_is_a_worsening_at_high_priority() {
    let settings = RuleSettings {
        news2: News2Settings {
            delay_s: 0,
            ..News2Settings::default()
        },
        ..RuleSettings::default()
    };
    let mut e = AlarmEngine::new(settings, "edge");
    let vitals = |hr, rr, spo2, sbp| Vitals {
        hr: Some(hr),
        spo2: Some(spo2),
        rr: Some(rr),
        temp: Some(37.0),
        sbp: Some(sbp),
        dbp: Some(60.0),
        o2: Some(false),
        acvpu: Some(Acvpu::C),
    };
    let news = |o: Observation| o.events.into_iter().find(|e| e.kind == "news2");
    // HR 115 (2) + RR 26 (3) + C (3) = 8: high.
    let eight = news(e.observe(&reading(0, vitals(115.0, 26.0, 97.0, 120.0)), at(0))).unwrap();
    assert_eq!((eight.priority, eight.version), (Priority::High, 1));
    // + HR 135 (3), SpO2 90 (3), SBP 88 (3) = 15: same priority, a new version.
    let fifteen =
        news(e.observe(&reading(1_000, vitals(135.0, 26.0, 90.0, 88.0)), at(1_000))).unwrap();
    assert_eq!(
        (fifteen.id, fifteen.version, fifteen.update, fifteen.message),
        (eight.id, 2, false, "NEWS2 15".to_owned())
    );
    // 15 → 14: better, shown at once only when the worst moves; the text says both.
    assert!(news(e.observe(&reading(2_000, vitals(125.0, 26.0, 90.0, 88.0)), at(2_000))).is_none());
    let later =
        news(e.observe(&reading(7_000, vitals(125.0, 26.0, 90.0, 88.0)), at(7_000))).unwrap();
    assert!(later.update);
    assert_eq!(later.message, "NEWS2 14 (worst 15)");
    assert_eq!((later.current, later.worst), (Some(14.0), Some(15.0)));
}

#[test]
fn updates_keep_the_text_current_without_notifying() {
    let mut e = engine();
    let _ = run(&mut e, 0, &[(90.0, GOOD); 16]);
    // A new worst that is not a step: shown at once, as an update.
    let a = run(&mut e, 16_000, &[(89.0, GOOD)]);
    let u = &of_kind(&a, "spo2_low")[0].1;
    assert!(u.update && u.version == 1, "{u:?}");
    assert_eq!(u.message, "SpO2 low: 89 % < 92");
    // Better again: shown no more than every 5 s.
    let b = run(&mut e, 17_000, &[(91.0, GOOD); 6]);
    let shown: Vec<_> = of_kind(&b, "spo2_low");
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0].0, 21_000);
    assert_eq!(shown[0].1.message, "SpO2 low: 91 % < 92 (worst 89 %)");
    // Inside the limit but within the hysteresis: not cleared, and said so.
    let c = run(&mut e, 23_000, &[(93.0, GOOD); 6]);
    let last = &of_kind(&c, "spo2_low").last().unwrap().1;
    assert_eq!(
        last.message,
        "SpO2 93 % inside the limit, not yet clear (worst 89 %)"
    );
    assert_eq!(last.state, AlertState::Raised);
}

#[test]
fn an_artefact_of_poor_quality_raises_no_alarm_and_a_long_one_raises_signal_poor() {
    let mut e = engine();
    let _ = run(&mut e, 0, &[(97.0, GOOD); 5]);
    // A probe slipping: SpO2 70 % with a perfusion index of 0.1 for 25 s.
    let slip = run(&mut e, 5_000, &[(70.0, POOR); 25]);
    assert!(slip.is_empty(), "{slip:?}");
    // 40 s: poor quality persists, a technical alarm (low), never a desaturation.
    let long = run(&mut e, 30_000, &[(70.0, POOR); 15]);
    let poor = of_kind(&long, "signal_poor");
    assert_eq!(poor.len(), 1, "{long:?}");
    let (t, ev) = poor[0];
    assert_eq!((ev.priority, ev.state), (Priority::Low, AlertState::Raised));
    assert_eq!(ev.message, "Poor signal quality: SpO2");
    assert_eq!(*t, 35_000, "30 s after the first poor reading");
    assert!(of_kind(&long, "spo2_low").is_empty());
    // Good readings: the technical alarm clears.
    let back = run(&mut e, 45_000, &[(97.0, GOOD)]);
    assert_eq!(
        of_kind(&back, "signal_poor")[0].1.state,
        AlertState::Resolved
    );
}

#[test]
fn a_true_desaturation_of_good_quality_alarms_within_its_delay() {
    let mut e = engine();
    let events = run(&mut e, 0, &[(86.0, GOOD); 20]);
    let raised = of_kind(&events, "spo2_low");
    assert_eq!(raised.len(), 1);
    assert!(raised[0].0 <= 15_000 + 1_000, "{}", raised[0].0);
}

#[test]
fn a_desaturation_that_begins_in_poor_signal_alarms_once_quality_returns() {
    let mut e = engine();
    let mut samples = vec![(86.0, POOR); 20];
    samples.extend([(86.0, GOOD); 20]);
    let events = run(&mut e, 0, &samples);
    let raised = of_kind(&events, "spo2_low");
    assert_eq!(raised.len(), 1, "{events:?}");
    // Quality returned at 20 s: the 15 s delay runs from there, +2 s at most.
    let at_s = raised[0].0;
    assert!((35_000..=37_000).contains(&at_s), "{at_s}");
}

#[test]
fn a_wait_stands_still_while_the_signal_is_poor() {
    let mut e = engine();
    // 8 s of a good low value, 20 s poor, then good again: 7 s more to the 15 s delay.
    let mut samples = vec![(86.0, GOOD); 8];
    samples.extend([(86.0, POOR); 20]);
    samples.extend([(86.0, GOOD); 15]);
    let events = run(&mut e, 0, &samples);
    let raised = of_kind(&events, "spo2_low");
    assert_eq!(raised.len(), 1, "{events:?}");
    let at_s = raised[0].0;
    assert!((35_000..=36_500).contains(&at_s), "{at_s}");
}

#[test]
fn a_reading_of_poor_quality_never_resolves_an_alarm() {
    let mut e = engine();
    let _ = run(&mut e, 0, &[(86.0, GOOD); 16]);
    let poor_normal = run(&mut e, 16_000, &[(98.0, POOR); 10]);
    assert!(
        of_kind(&poor_normal, "spo2_low").is_empty(),
        "{poor_normal:?}"
    );
    assert_eq!(e.active().len(), 1);
    let good_normal = run(&mut e, 26_000, &[(98.0, GOOD)]);
    assert_eq!(
        of_kind(&good_normal, "spo2_low")[0].1.state,
        AlertState::Resolved
    );
}

#[test]
fn values_of_poor_quality_do_not_count_towards_news2() {
    let mut e = engine();
    let full = Vitals {
        hr: Some(70.0),
        spo2: Some(97.0),
        rr: Some(16.0),
        temp: Some(37.0),
        sbp: Some(120.0),
        dbp: Some(80.0),
        o2: Some(false),
        acvpu: Some(Acvpu::A),
    };
    let sq = |v: f32| Quality {
        sq: Some(v),
        ..Quality::default()
    };
    let poor = e.observe_with(&reading(0, full), &sq(10.0), true, at(0));
    assert_eq!(poor.news2, None, "nothing fresh of good quality");
    let good = e.observe_with(&reading(1_000, full), &sq(90.0), true, at(1_000));
    assert_eq!(good.news2.map(|n| n.total), Some(0));
}

#[test]
fn a_poor_sign_stays_poor_whatever_other_devices_send_meanwhile() {
    let mut e = engine();
    let hr = |t: Millis| {
        reading(
            t,
            Vitals {
                hr: Some(80.0),
                ..Vitals::default()
            },
        )
    };
    let mut poor_raised = None;
    for s in 0..40 {
        let t = s * 1000;
        // The oximeter: SpO2 84 % in poor perfusion; an ECG monitor: a good heart rate, in
        // readings of its own.
        let (r, q) = spo2(84.0, POOR, t);
        let mut events = e.observe_with(&r, &q, true, at(t)).events;
        events.extend(e.observe(&hr(t + 500), at(t + 500)).events);
        events.extend(e.tick(at(t + 900)));
        assert!(events.iter().all(|ev| ev.kind != "spo2_low"), "{events:?}");
        if poor_raised.is_none() {
            poor_raised = events.iter().find(|ev| ev.kind == "signal_poor").map(|_| t);
        }
    }
    assert_eq!(poor_raised, Some(30_000), "raised after 30 s of poor SpO2");
}

#[test]
fn a_worsening_must_be_seen_in_good_readings_for_its_delay() {
    let mut e = engine();
    let _ = run(&mut e, 0, &[(90.0, GOOD); 16]);
    // One good value a step further, 30 s of poor signal, then one more good value: not a
    // worsening yet (the poor stretch does not count).
    let mut samples = vec![(85.0, GOOD)];
    samples.extend([(85.0, POOR); 30]);
    samples.push((85.0, GOOD));
    let events = run(&mut e, 16_000, &samples);
    assert!(
        of_kind(&events, "spo2_low").iter().all(|(_, e)| e.update),
        "{events:?}"
    );
    // Good readings for the delay: now it is.
    let later = run(&mut e, 48_000, &[(85.0, GOOD); 16]);
    assert!(
        of_kind(&later, "spo2_low")
            .iter()
            .any(|(_, e)| !e.update && e.version == 2),
        "{later:?}"
    );
}
