//! The readings already accepted, per patient, so that a reading a device sends again (after a
//! reconnect, or after an edge crash that came before its acknowledgement) is stored once.
//!
//! A reading is identified by its patient and its device timestamp. Each patient keeps the
//! last [`WINDOW`] timestamps accepted. A device re-sends only what it has not seen
//! acknowledged, and the gate lets a session hold at most
//! [`crate::broker::MAX_UNACKED`] readings unacknowledged, so the window covers several
//! devices per patient re-sending their whole in-flight window. The window is persisted with
//! the records (`store::SEEN`), in the commit that makes them durable.

use std::collections::{HashMap, VecDeque};

use wardlink_shared::PatientId;
use wardlink_shared::time::Millis;

/// Timestamps remembered per patient.
pub const WINDOW: usize = 256;

/// The per-patient windows.
#[derive(Debug, Default)]
pub struct Seen {
    patients: HashMap<PatientId, VecDeque<Millis>>,
}

impl Seen {
    /// Whether `ts` of `patient` was accepted (and is still in the window).
    pub fn contains(&self, patient: &PatientId, ts: Millis) -> bool {
        // Re-sends are recent: search from the newest.
        self.patients
            .get(patient)
            .is_some_and(|w| w.iter().rev().any(|&t| t == ts))
    }

    /// Remembers `ts`; returns the timestamp that left the window to make room, if any.
    pub fn insert(&mut self, patient: &PatientId, ts: Millis) -> Option<Millis> {
        let window = match self.patients.get_mut(patient) {
            Some(w) => w,
            None => self
                .patients
                .entry(patient.clone())
                .or_insert_with(|| VecDeque::with_capacity(8)),
        };
        window.push_back(ts);
        (window.len() > WINDOW)
            .then(|| window.pop_front())
            .flatten()
    }

    /// Forgets `ts` (its reading was evicted before it became durable: a re-send must be
    /// accepted).
    pub fn remove(&mut self, patient: &PatientId, ts: Millis) {
        if let Some(w) = self.patients.get_mut(patient)
            && let Some(i) = w.iter().rposition(|&t| t == ts)
        {
            w.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_last_timestamps_per_patient() {
        let a = PatientId::new("a").unwrap_or_else(|e| panic!("{e}"));
        let b = PatientId::new("b").unwrap_or_else(|e| panic!("{e}"));
        let mut seen = Seen::default();
        for ts in 0..WINDOW as Millis {
            assert_eq!(seen.insert(&a, ts), None);
        }
        assert!(seen.contains(&a, 0) && !seen.contains(&b, 0));
        assert_eq!(seen.insert(&a, 1_000), Some(0), "the oldest leaves first");
        assert!(!seen.contains(&a, 0) && seen.contains(&a, 1_000));
        seen.remove(&a, 1_000);
        assert!(!seen.contains(&a, 1_000));
    }
}
