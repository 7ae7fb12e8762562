//! Commands for the rules task: decisions taken at the hub (acknowledgements, silences,
//! patients' own settings) and, from the ward view, acknowledgements and silences taken at the
//! edge, which also go up to the hub as alarm-lane records.

use std::collections::BTreeMap;
use std::path::Path;

use tokio::sync::oneshot;
use wardlink_shared::PatientId;
use wardlink_shared::alarm::{AckResult, AlarmEngine, PatientSettings};
use wardlink_shared::wire::{EdgeCommand, RecordBody};

use crate::clock::now;
use crate::ward::Feed;

/// A decision for the rules task and where to say whether it was applied (and, for settings,
/// saved). The uplink confirms a hub's command to the hub only then; the ward view answers its
/// client.
pub struct CommandRequest {
    /// The decision.
    pub command: EdgeCommand,
    /// `true` once applied.
    pub applied: oneshot::Sender<bool>,
    /// Taken on the ward view (the hub learns of it from the record it makes), not at the hub.
    pub from_ward: bool,
}

/// Patients' own settings, kept across restarts in the data directory.
pub(super) type OwnSettings = BTreeMap<PatientId, PatientSettings>;

pub(super) fn load_patient_settings(path: &Path) -> OwnSettings {
    // Losing them silently would apply ward limits to a patient a clinician set up
    // differently: the loader makes it loud.
    crate::state_file::load_or_default(path, "patient settings unreadable; using ward limits")
}

/// Saves patients' own settings; false (logged) when they could not be written.
async fn save_patient_settings(path: &Path, own: &OwnSettings) -> bool {
    let Ok(bytes) = serde_json::to_vec_pretty(own) else {
        return false;
    };
    let path = path.to_path_buf();
    let saved =
        tokio::task::spawn_blocking(move || wardlink_io::fs::write_atomic(&path, &bytes)).await;
    let ok = matches!(saved, Ok(Ok(())));
    if !ok {
        tracing::error!("patient settings could not be saved; not applied, the hub will resend");
    }
    ok
}

/// Applies a decision; returns the records it makes (alarm events; for the ward view's
/// decisions, the record that tells the hub) and whether it took effect. Settings that could
/// not be saved are not applied, so the hub sends them again. A hub's acknowledgement of an
/// episode no longer active here is done (nothing to do); the ward view's is refused.
pub(super) async fn handle(
    engine: &mut AlarmEngine,
    (own, path): (&mut OwnSettings, &Path),
    view: &Feed,
    command: EdgeCommand,
    from_ward: bool,
) -> (Vec<RecordBody>, bool) {
    let at = now();
    match command {
        EdgeCommand::PatientSettings {
            patient,
            settings,
            by,
        } => {
            let previous = own.insert(patient.clone(), settings.clone());
            if !save_patient_settings(path, own).await {
                match previous {
                    Some(p) => own.insert(patient, p),
                    None => own.remove(&patient),
                };
                return (Vec::new(), false);
            }
            tracing::info!(by = %by, "patient settings applied");
            let events = engine.set_patient_settings(patient, settings, at);
            (events.into_iter().map(RecordBody::Episode).collect(), true)
        }
        EdgeCommand::Silence {
            patient,
            from,
            until,
            by,
            reason,
        } => {
            engine.silence(&patient, from, until, at);
            view.silenced(&patient, until, &by, &reason, at.wall);
            let record = if from_ward {
                tracing::info!(by = %by, until, "patient alarms silenced on the ward view");
                vec![RecordBody::Silenced {
                    patient,
                    from,
                    until,
                    by,
                    reason,
                }]
            } else {
                tracing::info!(by = %by, until, "patient alarms silenced by the hub");
                Vec::new()
            };
            (record, true)
        }
        EdgeCommand::Acknowledge { alert, by, ts } => {
            acknowledge(engine, view, (alert, None), (by, ts), from_ward)
        }
        EdgeCommand::AcknowledgeVersion {
            alert,
            version,
            by,
            ts,
        } => acknowledge(engine, view, (alert, Some(version)), (by, ts), from_ward),
    }
}

/// An acknowledgement of `alert` as of `version` (`None`: the current one). One of an older
/// version than the engine's acknowledges nothing: from the hub it is done (the worsening is
/// on its way up and makes the episode news there too); from the ward view it is refused, and
/// audited at the hub as what the clinician saw.
fn acknowledge(
    engine: &mut AlarmEngine,
    view: &Feed,
    (alert, version): (String, Option<u32>),
    (by, ts): (String, i64),
    from_ward: bool,
) -> (Vec<RecordBody>, bool) {
    let at = now();
    match engine.acknowledge(&alert, version, &by, at) {
        AckResult::Acknowledged { version } => {
            view.acknowledged(&alert, &by, if from_ward { ts } else { at.wall });
            if from_ward {
                tracing::info!(alert = %alert, by = %by, version, "alarm acknowledged on the ward view");
                (vec![RecordBody::Acknowledged { alert, by, ts }], true)
            } else {
                tracing::info!(alert = %alert, by = %by, version, "alarm acknowledged at the hub");
                (Vec::new(), true)
            }
        }
        AckResult::Stale { current } => {
            let seen = version.unwrap_or(0);
            tracing::info!(alert = %alert, by = %by, seen, current, "acknowledgement of an older version: the alarm stays unacknowledged");
            if from_ward {
                let record = RecordBody::Access {
                    actor: by,
                    action: "ack_stale".into(),
                    patient: None,
                    detail: format!(
                        "alarm {alert}: acknowledged version {seen}, current {current}; not acknowledged"
                    ),
                    ts,
                };
                (vec![record], false)
            } else {
                (Vec::new(), true)
            }
        }
        AckResult::Unknown => {
            tracing::debug!(alert = %alert, "acknowledged alarm is no longer active here");
            (Vec::new(), !from_ward)
        }
    }
}
