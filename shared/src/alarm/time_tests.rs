//! Time and restarts, with virtual time: wall-clock steps, deadlines instead of polling, and
//! the state kept across a restart.

use super::tests::{at, engine, full, hr, patient, trace};
use super::*;
use crate::vitals::Acvpu;

/// Monotonic time `mono_ms` with the wall clock `offset` ms away from it.
fn stepped(mono_ms: Millis, offset: Millis) -> Now {
    let mut now = at(mono_ms);
    now.wall = mono_ms + offset;
    now
}

/// Runs `tick` at every deadline the engine names up to `until`, as the edge's driver does.
fn run_deadlines(e: &mut AlarmEngine, until: Now, offset: Millis) -> Vec<AlarmEvent> {
    let mut out = Vec::new();
    while let Some(due) = e.next_deadline() {
        if due > until.mono {
            break;
        }
        let mono_ms = Millis::try_from(due.duration_since(at(0).mono).as_millis()).unwrap();
        out.extend(e.tick(stepped(mono_ms, offset)));
    }
    out
}

#[test]
fn wall_clock_steps_change_nothing_clinical() {
    const DAY: Millis = 24 * 3_600_000;
    for step in [1_000, -1_000, 7_200_000, -7_200_000, 3 * DAY, -3 * DAY] {
        let mut e = engine();
        let mut events = Vec::new();
        // A monitor every 0.5 s; the wall clock steps by `step` at 30 s (NTP after boot).
        let mut offset = 0;
        for k in 0..240 {
            let m = k * 500;
            if m == 30_000 {
                offset = step;
            }
            let now = stepped(m, offset);
            events.extend(run_deadlines(&mut e, now, offset));
            let value = if m < 60_000 { 70.0 } else { 150.0 };
            // The device stamps with its own clock, which did not step.
            events.extend(e.observe(&hr(value, m), now).events);
            // The old driver's 250 ms poll, too: polling must not find anything either.
            events.extend(e.tick(stepped(m + 250, offset)));
        }
        assert!(
            events.iter().all(|ev| ev.kind != "signal_lost"),
            "step {step}: {events:?}"
        );
        // HR 150 from 60 s, delay 10 s: raised at 70 s of monotonic time, not earlier, not
        // later, whatever the wall clock did; stamped with the (stepped) wall clock.
        let raised: Vec<_> = events
            .iter()
            .filter(|ev| ev.kind == "hr_high" && ev.state == AlertState::Raised)
            .collect();
        assert_eq!(raised.len(), 1, "step {step}: {events:?}");
        assert!(
            (70_000 + step..=70_500 + step).contains(&raised[0].ts),
            "step {step}: raised at wall {} ms",
            raised[0].ts
        );
    }
}

#[test]
fn a_silence_keeps_its_length_when_the_wall_clock_steps() {
    let mut e = engine();
    let mut events = e.observe(&hr(150.0, 0), at(0)).events;
    events.extend(run_deadlines(&mut e, at(10_000), 0));
    assert_eq!(events.len(), 1, "{events:?}");
    // Silenced for 5 minutes (hub time) at 20 s; then the wall clock jumps 2 h ahead.
    e.silence(&patient(), 20_000, 320_000, at(20_000));
    let step = 7_200_000;
    let mut later = Vec::new();
    for k in 0..30 {
        let m = 21_000 + k * 10_000;
        later.extend(e.observe(&hr(190.0, m), stepped(m, step)).events);
        later.extend(run_deadlines(&mut e, stepped(m, step), step));
    }
    // The worsening to HR 190 is announced silenced (high priority, within `max_high_s`);
    // the silence ended by the wall clock's jump would have announced it unsilenced at once.
    let first = later.iter().find(|ev| ev.kind == "hr_high").unwrap();
    assert!(first.silenced, "{later:?}");
}

#[test]
fn next_deadline_names_when_tick_has_work() {
    let mut e = engine();
    assert_eq!(e.next_deadline(), None, "no patient, nothing due");
    assert!(e.observe(&hr(150.0, 0), at(0)).events.is_empty());
    // Pending HR high (delay 10 s) before the device's silence (30 s).
    assert_eq!(e.next_deadline(), Some(at(10_000).mono));
    assert!(e.tick(at(9_999)).is_empty());
    let raised = e.tick(at(10_000));
    assert_eq!(raised.len(), 1);
    // Next: the device falling silent, 30 s after its last reading.
    assert_eq!(e.next_deadline(), Some(at(30_000).mono));
    let id = raised[0].id.clone();
    assert!(e.acknowledge(&id, None, "ann", at(12_000)).acknowledged());
    assert_eq!(e.next_deadline(), Some(at(30_000).mono));
    assert_eq!(e.tick(at(30_000)).len(), 1, "signal lost");
    // Then the reminder of the acknowledged episode, 30 min after the acknowledgement.
    assert_eq!(e.next_deadline(), Some(at(12_000 + 1_800_000).mono));
}

#[test]
fn ticking_at_deadlines_raises_what_polling_raises() {
    // A noisy trace: spikes, a sustained run, gaps that lose the signal.
    let mut values: Vec<Option<f32>> = Vec::new();
    for i in 0..2_000u32 {
        values.push(match i % 400 {
            0..=5 => Some(160.0),
            50..=90 => Some(170.0),
            150..=199 => None,
            250..=260 => Some(35.0),
            _ => Some(72.0),
        });
    }
    let summary = |events: Vec<AlarmEvent>| -> Vec<(String, AlertState, Priority)> {
        events
            .into_iter()
            .map(|e| (e.kind, e.state, e.priority))
            .collect()
    };
    let mut polled = engine();
    let mut by_poll = Vec::new();
    let mut driven = engine();
    let mut by_deadline = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let m = Millis::try_from(i).unwrap() * 1000;
        by_deadline.extend(run_deadlines(&mut driven, at(m), 0));
        if let Some(v) = v {
            by_poll.extend(polled.observe(&hr(*v, m), at(m)).events);
            by_deadline.extend(driven.observe(&hr(*v, m), at(m)).events);
        }
        for q in 1..4 {
            by_poll.extend(polled.tick(at(m + q * 250)));
        }
    }
    let by_poll = summary(by_poll);
    assert!(by_poll.iter().any(|(k, _, _)| k == "signal_lost"));
    assert!(by_poll.iter().any(|(k, _, _)| k == "hr_high"));
    assert_eq!(summary(by_deadline), by_poll);
}

/// The snapshot as the edge stores it (postcard), read back.
fn stored(snapshot: &EngineSnapshot) -> EngineSnapshot {
    postcard::from_bytes(&postcard::to_allocvec(snapshot).unwrap()).unwrap()
}

/// A fresh engine restored from `snapshot` after a restart: wall clock `wall_ms`, on a
/// monotonic clock that started again (`mono_ms` into it).
fn restarted(snapshot: &EngineSnapshot, mono_ms: Millis, wall_ms: Millis) -> (AlarmEngine, Now) {
    let mut e = engine();
    let mut now = at(mono_ms);
    now.wall = wall_ms;
    e.restore(stored(snapshot), now);
    (e, now)
}

#[test]
fn an_episode_keeps_its_id_across_a_restart() {
    let mut e = engine();
    let raised = trace(&mut e, 0, &[150.0; 12]);
    assert_eq!(raised.len(), 1);
    let id = raised[0].id.clone();
    let snapshot = e.snapshot(at(12_000));

    // Down for 5 s; the monotonic clock starts again.
    let (mut e, _) = restarted(&snapshot, 1_000, 17_000);
    assert_eq!(e.active().len(), 1);
    let still = e.observe(&hr(150.0, 18_000), stepped(2_000, 16_000)).events;
    assert!(still.is_empty(), "raised twice: {still:?}");
    let resolved = e.observe(&hr(80.0, 19_000), stepped(3_000, 16_000)).events;
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0].id, id);
    assert_eq!(resolved[0].state, AlertState::Resolved);
    // A new episode after the restart gets an id of its own.
    let again = trace(&mut e, 30_000, &[150.0; 12]);
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].id, id);
}

#[test]
fn a_pending_condition_keeps_its_wait_across_a_restart() {
    let mut e = engine();
    assert!(trace(&mut e, 0, &[150.0; 6]).is_empty());
    // Pending since 0; snapshot at 6 s; down 1 s.
    let (mut e, _) = restarted(&e.snapshot(at(6_000)), 10_000, 7_000);
    assert!(
        e.observe(&hr(150.0, 8_000), stepped(11_000, -3_000))
            .events
            .is_empty()
    );
    assert!(e.tick(stepped(12_999, -3_000)).is_empty());
    let raised = e.tick(stepped(13_000, -3_000));
    assert_eq!(
        raised.len(),
        1,
        "raised 10 s after the condition began: {raised:?}"
    );
    // A condition that cleared after the restart starts its wait afresh.
    let mut e2 = engine();
    trace(&mut e2, 0, &[150.0; 6]);
    let (mut e2, _) = restarted(&e2.snapshot(at(6_000)), 10_000, 7_000);
    assert!(
        e2.observe(&hr(80.0, 8_000), stepped(11_000, -3_000))
            .events
            .is_empty()
    );
    assert!(
        e2.observe(&hr(150.0, 9_000), stepped(12_000, -3_000))
            .events
            .is_empty()
    );
    assert!(e2.tick(stepped(21_999, -3_000)).is_empty());
    assert_eq!(e2.tick(stepped(22_000, -3_000)).len(), 1);
}

#[test]
fn acknowledgements_and_silences_survive_a_restart() {
    let mut e = engine();
    let raised = trace(&mut e, 0, &[150.0; 12]);
    assert!(
        e.acknowledge(&raised[0].id, None, "ann", at(12_000))
            .acknowledged()
    );
    e.silence(&patient(), 12_000, 312_000, at(12_000));
    let snapshot = e.snapshot(at(52_000));
    // Down 20 s; back at wall 72 s, 5 s into a new monotonic clock.
    let (mut e, now) = restarted(&snapshot, 5_000, 72_000);
    let active = e.active();
    assert_eq!(active[0].acknowledged_by.as_deref(), Some("ann"));
    // First due: the device's silence, a full 30 s after the restart (not 30 s after its last
    // reading before the edge went down, which would alarm every bed at each restart).
    assert_eq!(
        e.next_deadline(),
        Some(now.mono + Duration::from_millis(30_000))
    );
    // The silence still covers a worsening to high priority within its first 120 s
    // (`max_high_s`: wall 132 s)...
    let worse = e.observe(&hr(190.0, 73_000), stepped(6_000, 67_000)).events;
    assert_eq!(worse.len(), 1, "{worse:?}");
    assert!(worse[0].silenced, "{worse:?}");
    // ...and stops covering it then: 60 s after the restart (the device keeps sending).
    assert!(
        e.observe(&hr(190.0, 107_000), stepped(40_000, 67_000))
            .events
            .is_empty()
    );
    assert_eq!(e.next_deadline(), Some(at(65_000).mono));
    let unsilenced = e.tick(stepped(65_000, 67_000));
    assert_eq!(unsilenced.len(), 1, "{unsilenced:?}");
    assert!(!unsilenced[0].silenced);
}

#[test]
fn a_silence_that_ended_during_a_restart_is_announced_at_once() {
    let mut e = engine();
    e.silence(&patient(), 0, 60_000, at(0));
    let raised = trace(&mut e, 1_000, &[150.0; 12]);
    assert!(raised[0].silenced, "{raised:?}");
    let snapshot = e.snapshot(at(13_000));
    // Down for 2 minutes: the silence ended meanwhile.
    let (mut e, now) = restarted(&snapshot, 1_000, 133_000);
    assert_eq!(e.next_deadline(), Some(now.mono));
    let again = e.tick(now);
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(!again[0].silenced);
    assert_eq!(again[0].id, raised[0].id);
}

#[test]
fn a_silence_from_a_hub_clock_ahead_covers_from_its_arrival() {
    let mut e = engine();
    // The hub's clock is 30 s ahead: its silence "starts" 30 s after it arrives, after the
    // episode is raised.
    e.silence(&patient(), 30_000, 330_000, at(0));
    let raised = trace(&mut e, 0, &[150.0; 12]);
    assert_eq!(raised.len(), 1);
    assert!(raised[0].silenced, "{raised:?}");
}

#[test]
fn a_readings_patient_deadline_is_all_a_driver_needs_after_it() {
    let mut e = engine();
    let other = PatientId::new("bed-2").unwrap();
    e.observe(
        &Reading {
            patient: other.clone(),
            ts: 0,
            vitals: Vitals {
                hr: Some(70.0),
                ..Vitals::default()
            },
        },
        at(0),
    );
    assert!(e.observe(&hr(150.0, 1_000), at(1_000)).events.is_empty());
    assert_eq!(e.next_deadline_of(&patient()), Some(at(11_000).mono));
    assert_eq!(e.next_deadline_of(&other), Some(at(30_000).mono));
    assert_eq!(e.next_deadline(), Some(at(11_000).mono));
}

/// The change counter moves whenever what a snapshot keeps changed: a driver that persists
/// only when it moved never misses a change. Checked over a random trace of readings, ticks,
/// acknowledgements and silences: a step that leaves the counter alone leaves the snapshot
/// (taken at the same instant before and after) alone too.
#[test]
fn the_change_counter_moves_with_every_change_a_snapshot_keeps() {
    let mut e = engine();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut moved = 0;
    for step in 0..4_000i64 {
        let t = step * 700;
        let now = at(t);
        let before = (e.changes(), e.snapshot(now));
        match next(20) {
            0 => {
                let _ = e.tick(now);
            }
            1 => {
                if let Some(a) = e.active().first() {
                    e.acknowledge(&a.id, None, "ann", now).acknowledged();
                }
            }
            2 => e.silence(&patient(), t, t + 30_000, now),
            _ => {
                let v = [70.0, 125.0, 135.0, 150.0, 35.0, 25.0][usize::try_from(next(6)).unwrap()];
                let _ = e.observe(&hr(v, t), now);
            }
        }
        let after = (e.changes(), e.snapshot(now));
        if after.0 == before.0 {
            assert_eq!(after.1, before.1, "step {step} changed the state unseen");
        } else {
            moved += 1;
        }
    }
    // The trace did exercise the states (and the counter does not move at every step).
    assert!(moved > 100 && moved < 3_000, "{moved}");
}

/// NEWS2 and trends follow readings in the order they were measured, whatever the edge's wall
/// clock does: readings the edge stamps itself (with its stepped clock) and readings devices
/// stamp (with clocks that did not step). Before, a backward step left every new edge-stamped
/// reading "older" than the last one before the step, and a forward step every device-stamped
/// one: NEWS2 kept scoring the values of before the step, and trends ignored everything.
#[test]
fn news2_and_trends_follow_readings_across_wall_clock_steps() {
    const DAY: Millis = 24 * 3_600_000;
    for device_stamps in [false, true] {
        for step in [1_000, -1_000, 7_200_000, -7_200_000, 3 * DAY, -3 * DAY] {
            let case = format!("step {step}, device stamps {device_stamps}");
            let mut e = engine();
            let mut events = Vec::new();
            let mut last = None;
            let mut offset = 0;
            // Every 2 s for 8 min; the wall clock steps at 30 s. From 60 s the patient becomes
            // confused and desaturates steadily, 98 % to 92 % over 5 min.
            for k in 0..240 {
                let m = k * 2_000;
                if m == 30_000 {
                    offset = step;
                }
                let now = stepped(m, offset);
                events.extend(run_deadlines(&mut e, now, offset));
                #[allow(clippy::cast_precision_loss)]
                let fall = ((m - 60_000).clamp(0, 300_000) as f32) / 50_000.0;
                let acvpu = if m < 60_000 { Acvpu::A } else { Acvpu::C };
                let ts = if device_stamps { m } else { now.wall };
                let mut r = full(ts, 70.0, 16.0, acvpu);
                r.vitals.spo2 = Some(98.0 - fall);
                let o = if device_stamps {
                    e.observe(&r, now)
                } else {
                    e.observe_unstamped(&r, now)
                };
                events.extend(o.events);
                last = o.news2;
            }
            // SpO2 92 (2 points on scale 1) and new confusion (3): NEWS2 5, scored from now.
            assert_eq!(last.map(|n| n.total), Some(5), "{case}");
            for kind in ["news2", "trend_spo2_falling"] {
                assert!(
                    events
                        .iter()
                        .any(|ev| ev.kind == kind && ev.state == AlertState::Raised),
                    "{case}: no {kind}: {events:?}"
                );
            }
            assert!(events.iter().all(|ev| ev.kind != "signal_lost"), "{case}");
        }
    }
}

/// A device whose clock runs minutes ahead of the edge's: a reading it delivers late still
/// counts as older than the one it sent before, so it does not overwrite a newer value.
#[test]
fn a_late_reading_from_a_device_clock_ahead_does_not_overwrite_a_newer_value() {
    let mut e = engine();
    let ahead = 4 * 60_000;
    let device = |m: Millis| m + ahead;
    // Live readings, then a new confusion (ACVPU C), then a reading from 3 min before arrives.
    for k in 0..5 {
        let m = k * 1_000;
        e.observe(&full(device(m), 70.0, 16.0, Acvpu::A), at(m));
    }
    let live = e.observe(&full(device(5_000), 70.0, 16.0, Acvpu::C), at(5_000));
    assert_eq!(live.news2.map(|n| n.total), Some(3));
    let late = full(device(5_000 - 180_000), 70.0, 16.0, Acvpu::A);
    e.observe(&late, at(6_000));
    let next = Reading {
        patient: patient(),
        ts: device(7_000),
        vitals: Vitals {
            hr: Some(70.0),
            ..Vitals::default()
        },
    };
    assert_eq!(e.observe(&next, at(7_000)).news2.map(|n| n.total), Some(3));
}

/// A patient known only from a silence set at the hub (no device heard from) is not reported
/// `signal_lost` after a restart; a patient whose device was heard is, if it stays silent.
#[test]
fn a_restart_reports_silent_devices_but_invents_none() {
    let mut e = engine();
    let quiet = PatientId::new("bed-9").unwrap();
    e.silence(&quiet, 1_000, 600_000, at(1_000));
    // bed-1's device is heard, and a condition is pending for it.
    e.observe(&hr(150.0, 2_000), at(2_000));
    let snapshot = e.snapshot(at(3_000));
    let (mut e, now) = restarted(&snapshot, 1_000, 4_000);
    let mut events = Vec::new();
    for s in 1..=120 {
        let mut later = now;
        later.mono += Duration::from_secs(s);
        later.wall += Millis::try_from(s).unwrap() * 1000;
        events.extend(e.tick(later));
    }
    let lost: Vec<_> = events
        .iter()
        .filter(|ev| ev.kind == "signal_lost")
        .map(|ev| ev.patient.as_str())
        .collect();
    assert_eq!(lost, ["bed-1"], "{events:?}");
}
