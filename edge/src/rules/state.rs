//! The alarm engine's lasting state on disk: an [`EngineSnapshot`] in postcard behind a
//! format byte, handed to the outbox whenever the engine says it changed, and taken up at
//! start.
//!
//! A state that cannot be read (a format from a newer edge after a downgrade, a damaged
//! record) is not fatal: the engine starts empty, as before this existed, and says so loudly.
//! Conditions still present are then raised again under new ids; the hub resolves the episodes
//! open before when the edge tells it, at start, which it holds (none). Format 1 existed only
//! in development builds of this change; it is refused like any unknown format.

use wardlink_shared::alarm::{AlarmEngine, EngineSnapshot};

use crate::clock::now;

/// The format of what follows the first byte: 3 since episodes have versions and measures.
/// 2 (before) is read and converted; another value (1: before patients said whether a device
/// was heard from) is a format this edge does not know.
const FORMAT: u8 = 3;

/// Encodes `engine`'s state if it changed since `saved` (its change count when last handed
/// over), and moves `saved` on.
pub(super) fn if_changed(engine: &AlarmEngine, saved: &mut u64) -> Option<Vec<u8>> {
    let changes = engine.changes();
    if changes == *saved {
        return None;
    }
    *saved = changes;
    let mut bytes = vec![FORMAT];
    match postcard::to_extend(&engine.snapshot(now()), bytes) {
        Ok(b) => {
            bytes = b;
            Some(bytes)
        }
        Err(e) => {
            tracing::error!(error = %e, "alarm state could not be encoded; not persisted");
            None
        }
    }
}

/// Takes up the state the last boot committed, if any; returns the engine's change count
/// afterwards (what is on disk).
pub(super) fn restore(engine: &mut AlarmEngine, bytes: Option<Vec<u8>>) -> u64 {
    let Some(bytes) = bytes else {
        return engine.changes();
    };
    match decode(&bytes) {
        Ok(snapshot) => {
            let episodes = snapshot.episodes();
            engine.restore(snapshot, now());
            tracing::info!(episodes, "alarm state restored");
            engine.changes()
        }
        Err(reason) => {
            tracing::error!(%reason, "alarm state unreadable; starting without open episodes");
            // Different from what is on disk: the next change overwrites it.
            engine.changes().wrapping_sub(1)
        }
    }
}

fn decode(bytes: &[u8]) -> Result<EngineSnapshot, String> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((2, rest)) => EngineSnapshot::decode_format_2(rest).map_err(|e| e.to_string()),
        Some((other, _)) => Err(format!("unknown format {other}")),
        None => Err("empty".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_state_is_refused_with_a_reason() {
        assert!(decode(&[]).unwrap_err().contains("empty"));
        assert!(decode(&[9, 1, 2]).unwrap_err().contains("unknown format 9"));
        assert!(decode(&[FORMAT, 0xff, 0xff]).is_err());
    }

    #[test]
    fn a_state_round_trips_and_is_handed_over_only_when_it_changed() {
        let mut engine = AlarmEngine::new(Default::default(), "edge-t");
        let mut saved = restore(&mut engine, None);
        assert_eq!(if_changed(&engine, &mut saved), None);
        let at = now();
        let patient = wardlink_shared::PatientId::new("p1").expect("id");
        engine.silence(&patient, at.wall, at.wall + 60_000, at);
        let bytes = if_changed(&engine, &mut saved).expect("changed");
        assert_eq!(if_changed(&engine, &mut saved), None);
        let mut fresh = AlarmEngine::new(Default::default(), "edge-t");
        let after = restore(&mut fresh, Some(bytes));
        assert_eq!(after, fresh.changes());
        // The silenced patient came back (with nothing else).
        let back = fresh.snapshot(now());
        assert_eq!((back.patients(), back.episodes()), (1, 0));
    }
}
