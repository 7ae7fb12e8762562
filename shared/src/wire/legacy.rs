//! Record shapes of older protocol versions that a hub still reads (and an edge may still hold
//! in its outbox after an upgrade).

use serde::{Deserialize, Serialize};

use crate::alarm::{AlarmEvent, AlertState, Priority};
use crate::ids::PatientId;
use crate::time::Millis;
use crate::vitals::Vitals;

/// An alarm event as edges of protocol 1 and 2 send it ([`super::RecordBody::Alarm`]): the
/// fields of [`AlarmEvent`] before episodes had versions and measures. Its layout never
/// changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmV2 {
    /// Episode id.
    pub id: String,
    /// Whose alarm.
    pub patient: PatientId,
    /// Condition.
    pub kind: String,
    /// Priority.
    pub priority: Priority,
    /// State.
    pub state: AlertState,
    /// Text.
    pub message: String,
    /// Values.
    pub values: Vitals,
    /// When.
    pub ts: Millis,
    /// Silenced.
    pub silenced: bool,
}

impl From<AlarmV2> for AlarmEvent {
    /// Version 0: the edge does not number its episodes' worsenings.
    fn from(a: AlarmV2) -> Self {
        AlarmEvent {
            id: a.id,
            patient: a.patient,
            kind: a.kind,
            priority: a.priority,
            state: a.state,
            message: a.message,
            values: a.values,
            ts: a.ts,
            silenced: a.silenced,
            version: 0,
            current: None,
            worst: None,
            update: false,
        }
    }
}

impl From<&AlarmEvent> for AlarmV2 {
    fn from(a: &AlarmEvent) -> Self {
        AlarmV2 {
            id: a.id.clone(),
            patient: a.patient.clone(),
            kind: a.kind.clone(),
            priority: a.priority,
            state: a.state,
            message: a.message.clone(),
            values: a.values,
            ts: a.ts,
            silenced: a.silenced,
        }
    }
}
