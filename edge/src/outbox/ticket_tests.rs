//! Durability tickets and the dedupe window: a reading's ticket fires only once its record and
//! the alarm events appended with it are durable (committed here, or stored by the hub);
//! a repeat waits for what came before it; the window survives a restart.

use std::time::Duration;

use wardlink_shared::ids::PatientId;
use wardlink_shared::wire::Lane;

use super::OutboxMetrics;
use super::tests::{alarm, vitals};
use super::{Outbox, Settings};
use crate::durable::Tickets;

fn settings(commit_window: Duration) -> Settings {
    Settings {
        max_batch: 1024,
        commit_window,
        max_bytes: 0,
        max_memory_records: 10_000,
    }
}

/// Waits (bounded) until `tickets` has fired through `n`.
async fn fired(tickets: &Tickets, n: u64) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while tickets.durable() < n {
            tickets.changed().await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "ticket {n} never fired ({})",
        tickets.durable()
    );
}

#[tokio::test]
async fn a_ticket_fires_after_the_commit_and_a_repeat_after_its_original() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("outbox.redb");
    let metrics = OutboxMetrics::detached();
    let (outbox, thread) = Outbox::open(&path, settings(Duration::from_millis(5)), metrics.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tickets = Tickets::new();
    let patient = PatientId::new("bed-1").unwrap_or_else(|e| panic!("{e}"));
    let ts = match vitals(7) {
        wardlink_shared::wire::RecordBody::Vitals { reading, .. } => reading.ts,
        _ => unreachable!(),
    };
    assert!(outbox.repeat(&patient, ts, None).is_err(), "not seen yet");
    outbox
        .append_reading(vec![vitals(7)], Some(tickets.issue()), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    fired(&tickets, 1).await;
    // The same reading again: recognised, and acknowledged (it is durable already).
    assert!(outbox.repeat(&patient, ts, Some(tickets.issue())).is_ok());
    fired(&tickets, 2).await;
    assert_eq!(outbox.unique_ts(&patient, ts), ts + 1);
    assert!(!tickets.lost());

    drop(outbox);
    thread.join().unwrap_or_else(|_| panic!("outbox thread"));
    let (outbox, thread) = Outbox::open(&path, settings(Duration::from_millis(5)), metrics)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        outbox.repeat(&patient, ts, None).is_ok(),
        "the window survives a restart"
    );
    drop(outbox);
    thread.join().unwrap_or_else(|_| panic!("outbox thread"));
}

#[tokio::test]
async fn the_hubs_acknowledgement_makes_a_reading_durable_with_its_alarms() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // A commit window long enough that nothing is committed during the test.
    let (outbox, thread) = Outbox::open(
        &dir.path().join("outbox.redb"),
        settings(Duration::from_secs(1)),
        OutboxMetrics::detached(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut tickets = Tickets::new();
    outbox
        .append_reading(vec![alarm(1), vitals(1)], Some(tickets.issue()), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let heads = *outbox.heads().borrow();
    outbox.ack(Lane::Telemetry, heads.of(Lane::Telemetry));
    assert_eq!(tickets.durable(), 0, "its alarm event is not yet safe");
    outbox.ack(Lane::Alarms, heads.of(Lane::Alarms));
    assert_eq!(tickets.durable(), 1, "both lanes stored by the hub");
    drop(outbox);
    thread.join().unwrap_or_else(|_| panic!("outbox thread"));
}

#[tokio::test]
async fn the_alarm_state_is_committed_with_its_records_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("outbox.redb");
    let metrics = OutboxMetrics::detached();
    let open = |window| {
        Outbox::open(&path, settings(window), metrics.clone()).unwrap_or_else(|e| panic!("{e}"))
    };
    let (outbox, thread) = open(Duration::from_millis(5));
    assert_eq!(outbox.take_restored_state(), None, "a new outbox has none");
    let mut tickets = Tickets::new();
    outbox
        .append_reading(
            vec![alarm(1), vitals(1)],
            Some(tickets.issue()),
            Some(b"raised".to_vec()),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    fired(&tickets, 1).await;
    // A change without records (an acknowledgement), then the edge stops.
    outbox
        .append_with_state(Vec::new(), Some(b"acknowledged".to_vec()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop(outbox);
    thread.join().unwrap_or_else(|_| panic!("outbox thread"));

    // The hub acknowledges the alarm before the commit: the record is not written here, the
    // state is (the hub has what it describes).
    let (outbox, thread) = open(Duration::from_secs(3600));
    assert_eq!(
        outbox.take_restored_state().as_deref(),
        Some(&b"acknowledged"[..])
    );
    assert_eq!(outbox.take_restored_state(), None, "taken once");
    outbox
        .append_with_state(vec![alarm(2)], Some(b"resolved".to_vec()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = *outbox.heads().borrow();
    outbox.ack(Lane::Alarms, head.of(Lane::Alarms));
    drop(outbox);
    thread.join().unwrap_or_else(|_| panic!("outbox thread"));

    let (outbox, thread) = open(Duration::from_millis(5));
    assert_eq!(
        outbox.take_restored_state().as_deref(),
        Some(&b"resolved"[..])
    );
    drop(outbox);
    thread.join().unwrap_or_else(|_| panic!("outbox thread"));
}
