//! What the alarm engine must not forget across an edge restart: open episodes (with who
//! acknowledged them and whether they went out silenced), how long pending conditions have
//! been pending, silences, and the episode counter.
//!
//! Times are kept as ages and remainders relative to the snapshot, never as instants: the
//! monotonic clock starts again at a reboot. At restore, the time the edge was down is taken
//! from the wall clock (the only clock that survives a restart), and counts as zero if the
//! wall clock went back meanwhile. What is rebuilt from the next readings is not kept (latest
//! values for NEWS2, trend series, reading intervals).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::episode::{Open, Track};
use super::{AlarmEngine, Condition, ConditionKey, Priority, Silence, millis};
use crate::ids::PatientId;
use crate::time::{Millis, Now};

/// The engine's lasting state at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    /// Wall clock when taken (ms since the epoch).
    taken: Millis,
    next_id: u64,
    patients: Vec<PatientSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PatientSnapshot {
    patient: PatientId,
    episodes: Vec<EpisodeSnapshot>,
    /// Conditions pending, with how long they had been (ms).
    pending: Vec<(ConditionKey, Millis)>,
    /// Silence: how long ago it began and how long it still had to run (ms).
    silence: Option<(Millis, Millis)>,
    /// A device of the patient's was heard from (so silence from it after the restart is
    /// `signal_lost`); false for a patient known only from a silence set at the hub.
    heard: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EpisodeSnapshot {
    key: ConditionKey,
    id: String,
    kind: String,
    priority: Priority,
    /// Who acknowledged it, and how long before the snapshot (ms).
    acknowledged: Option<(String, Millis)>,
    silenced: bool,
    /// Its version (see `AlarmEvent::version`).
    version: u32,
    /// Its current text, as last announced.
    text: String,
    /// Its measure: as announced, and the worst (the current one comes with the next
    /// reading).
    track: Option<(f32, f32)>,
}

impl EngineSnapshot {
    /// How many open episodes it holds.
    pub fn episodes(&self) -> usize {
        self.patients.iter().map(|p| p.episodes.len()).sum()
    }

    /// How many patients it holds anything for.
    pub fn patients(&self) -> usize {
        self.patients.len()
    }
}

impl AlarmEngine {
    /// The state to persist at `now` (see the module comment).
    pub fn snapshot(&self, now: Now) -> EngineSnapshot {
        let mut patients: Vec<PatientSnapshot> = self
            .patients
            .iter()
            .map(|(patient, state)| {
                let mut episodes = Vec::new();
                let mut pending = Vec::new();
                for (key, cond) in &state.conditions {
                    match cond {
                        Condition::Pending { since, paused, .. } => {
                            // A paused wait keeps the age it had when the signal went poor.
                            let at = paused.map_or(now.mono, |p| p);
                            let age = at.saturating_duration_since(*since).as_millis();
                            pending.push((*key, Millis::try_from(age).unwrap_or(Millis::MAX)));
                        }
                        Condition::Active(open) => episodes.push(EpisodeSnapshot {
                            key: *key,
                            id: open.id.clone(),
                            kind: open.kind.clone(),
                            priority: open.priority,
                            acknowledged: open
                                .acknowledged
                                .as_ref()
                                .map(|(by, at)| (by.clone(), now.since(*at))),
                            silenced: open.silenced,
                            version: open.version,
                            text: open.text.clone(),
                            track: open.track.map(|t| (t.announced, t.worst)),
                        }),
                    }
                }
                for (key, since) in &state.carried {
                    pending.push((*key, now.since(*since)));
                }
                // An ended silence is kept (with nothing left to run) only while it may still
                // have an episode to announce unsilenced.
                let announcing = episodes.iter().any(|e| e.silenced);
                let silence = state
                    .silence
                    .as_ref()
                    .map(|s| (now.since(s.from), remaining(now.mono, s.until)))
                    .filter(|(_, left)| *left > 0 || announcing);
                PatientSnapshot {
                    patient: patient.clone(),
                    episodes,
                    pending,
                    silence,
                    heard: state.last_seen.is_some(),
                }
            })
            .filter(|p| !p.episodes.is_empty() || !p.pending.is_empty() || p.silence.is_some())
            .collect();
        patients.sort_by(|a, b| a.patient.as_str().cmp(b.patient.as_str()));
        EngineSnapshot {
            taken: now.wall,
            next_id: self.next_id,
            patients,
        }
    }

    /// Takes up `snapshot` at `now`, in a fresh engine: its episodes are open again under
    /// their ids (the next reading resolves them or keeps them; nothing is raised twice), a
    /// condition pending before keeps the time it had already waited, silences run to their
    /// end. Every restored patient counts as heard from `now`: their devices get a full
    /// `signal_lost` period to come back after the edge's restart.
    pub fn restore(&mut self, snapshot: EngineSnapshot, now: Now) {
        let down = millis((now.wall - snapshot.taken).max(0));
        let back = |age: Millis| before(now.mono, millis(age) + down);
        self.next_id = self.next_id.max(snapshot.next_id);
        self.changes += 1;
        for p in snapshot.patients {
            let state = self.patients.entry(p.patient).or_default();
            if p.heard {
                state.last_seen = Some(now.mono);
            }
            for e in p.episodes {
                state.conditions.insert(
                    e.key,
                    Condition::Active(Open {
                        id: e.id,
                        kind: e.kind,
                        priority: e.priority,
                        acknowledged: e.acknowledged.map(|(by, age)| (by, back(age))),
                        silenced: e.silenced,
                        version: e.version,
                        text: e.text,
                        track: e.track.map(|(announced, worst)| Track {
                            announced,
                            worst,
                            current: worst,
                            shown: worst,
                            shown_at: now.mono,
                            worse_since: None,
                        }),
                    }),
                );
            }
            state.carried = p
                .pending
                .into_iter()
                .map(|(key, age)| (key, back(age)))
                .collect::<BTreeMap<_, _>>();
            // A silence that ended while the edge was down is kept as one that ended now, so
            // that the episodes it covered are announced again at once.
            state.silence = p
                .silence
                .map(|(age, left)| match millis(left).checked_sub(down) {
                    Some(left) if !left.is_zero() => Silence {
                        from: back(age),
                        until: now.mono + left,
                    },
                    _ => Silence {
                        from: now.mono,
                        until: now.mono,
                    },
                });
        }
    }
}

/// `at` minus `d`, or as far back as the monotonic clock goes.
fn before(at: Instant, d: Duration) -> Instant {
    at.checked_sub(d).unwrap_or(at)
}

fn remaining(now: Instant, until: Instant) -> Millis {
    Millis::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(Millis::MAX)
}

/// Snapshots of the previous format (2: edges before episodes had versions), read once after
/// an upgrade: every open episode is taken up at version 1 with a neutral text.
mod format2 {
    use serde::Deserialize;

    use super::{ConditionKey, EngineSnapshot, EpisodeSnapshot, PatientSnapshot, Priority};
    use crate::ids::PatientId;
    use crate::time::Millis;

    #[derive(Deserialize)]
    struct Engine {
        taken: Millis,
        next_id: u64,
        patients: Vec<Patient>,
    }

    #[derive(Deserialize)]
    struct Patient {
        patient: PatientId,
        episodes: Vec<Episode>,
        pending: Vec<(ConditionKey, Millis)>,
        silence: Option<(Millis, Millis)>,
        heard: bool,
    }

    #[derive(Deserialize)]
    struct Episode {
        key: ConditionKey,
        id: String,
        kind: String,
        priority: Priority,
        acknowledged: Option<(String, Millis)>,
        silenced: bool,
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<EngineSnapshot, postcard::Error> {
        let old: Engine = postcard::from_bytes(bytes)?;
        Ok(EngineSnapshot {
            taken: old.taken,
            next_id: old.next_id,
            patients: old
                .patients
                .into_iter()
                .map(|p| PatientSnapshot {
                    patient: p.patient,
                    episodes: p
                        .episodes
                        .into_iter()
                        .map(|e| EpisodeSnapshot {
                            key: e.key,
                            id: e.id,
                            kind: e.kind,
                            priority: e.priority,
                            acknowledged: e.acknowledged,
                            silenced: e.silenced,
                            version: 1,
                            text: "open before the edge was upgraded".into(),
                            track: None,
                        })
                        .collect(),
                    pending: p.pending,
                    silence: p.silence,
                    heard: p.heard,
                })
                .collect(),
        })
    }
}

impl EngineSnapshot {
    /// Reads a snapshot of the previous format (2), written by an edge before episodes had
    /// versions.
    pub fn decode_format_2(bytes: &[u8]) -> Result<Self, postcard::Error> {
        format2::decode(bytes)
    }
}
