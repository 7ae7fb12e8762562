//! What an edge tells the hub besides readings and alarm events (protocol 2): decisions taken
//! on its ward view, who used it, whom it texted while the hub was unreachable, and which
//! episodes it holds open at start. Applied in the ingest transaction, in seq order with the
//! alarm events around them. Each may only concern the sending edge's own episodes and
//! patients.

use redb::Table;
use wardlink_shared::dashboard::ServerEvent;
use wardlink_shared::wire::RecordBody;
use wardlink_shared::{EdgeId, WardId};

use super::StoreError;
use super::alerts::{self, Origin};
use crate::audit::{self, Pseudonymiser};

/// The tables an edge's records touch.
pub(super) struct Tables<'a, 't> {
    pub(super) alerts: &'a mut Table<'t, &'static str, &'static [u8]>,
    pub(super) patients: &'a Table<'t, &'static str, (&'static str, &'static str)>,
    pub(super) edge_paged: &'a mut Table<'t, (&'static str, &'static str), i64>,
}

/// Applies `record` from `edge` of `ward`: returns the dashboard events to publish, each with
/// the actor its audit entry names; audit entries of its own go to `audits`.
pub(super) fn apply(
    t: &mut Tables<'_, '_>,
    (edge, ward): (&EdgeId, &WardId),
    record: &RecordBody,
    (audits, pseudonyms): (&mut Vec<audit::Entry>, &Pseudonymiser),
) -> Result<Vec<(WardId, ServerEvent, String)>, StoreError> {
    let entry =
        |actor: String, action: &str, patient: Option<String>, subject, detail| audit::Entry {
            seq: 0,
            ts: String::new(),
            actor,
            action: action.into(),
            ward: Some(ward.to_string()),
            patient,
            subject,
            detail: Some(detail),
            prev: String::new(),
            hash: String::new(),
        };
    let with = |by: &str, event: Option<(WardId, ServerEvent)>| {
        event
            .map(|(w, e)| vec![(w, e, by.to_owned())])
            .unwrap_or_default()
    };
    Ok(match record {
        RecordBody::Acknowledged { alert, by, ts } => {
            let (_, event) =
                alerts::acknowledge(t.alerts, Origin::Edge(edge), (alert, None), by, *ts)?;
            with(by, event)
        }
        RecordBody::Silenced {
            patient,
            from,
            until,
            by,
            reason,
        } => {
            // Checked at the edge; an older edge's text is cleaned, never stored as it came.
            let reason = wardlink_shared::plain::cleaned(reason);
            let (_, event) = alerts::silence(
                t.patients,
                Origin::Edge(edge),
                (patient, ward),
                (*from, *until),
                by,
                &reason,
            )?;
            with(by, event)
        }
        RecordBody::Access {
            actor,
            action,
            patient,
            detail,
            ..
        } => {
            let patient = patient.as_ref().map(|p| pseudonyms.pseudonym(p.as_str()));
            let subject = Some(format!("edge:{edge}"));
            audits.push(entry(
                actor.clone(),
                action,
                patient,
                subject,
                wardlink_shared::plain::cleaned(detail),
            ));
            Vec::new()
        }
        RecordBody::Paged {
            key,
            alerts: ids,
            person,
            phone,
            step,
            ts,
        } => {
            // Only this edge's episodes: another's texts must not be suppressed by it.
            let mut own = Vec::new();
            for id in ids {
                if alerts::edge_of(t.alerts, id)?.as_ref() == Some(edge) {
                    t.edge_paged.insert((id.as_str(), phone.as_str()), *ts)?;
                    own.push(id.as_str());
                }
            }
            let detail = format!(
                "alerts {} step {step} (hub unreachable) key {key}",
                own.join(",")
            );
            audits.push(entry(
                format!("edge:{edge}"),
                "sms_sent_by_edge",
                None,
                Some(person.clone()),
                detail,
            ));
            Vec::new()
        }
        RecordBody::EpisodesOpen { alerts: open, ts } => {
            let closed = alerts::close_others(t.alerts, edge, open, *ts)?;
            if !closed.is_empty() {
                tracing::warn!(edge = %edge, episodes = closed.len(), "episodes the edge no longer holds open after its restart: resolved");
            }
            let actor = format!("edge:{edge}");
            closed
                .into_iter()
                .map(|(w, e)| (w, e, actor.clone()))
                .collect()
        }
        RecordBody::Vitals { .. }
        | RecordBody::Alarm(_)
        | RecordBody::Episode(_)
        | RecordBody::Unreadable { .. }
        | RecordBody::Gap { .. } => Vec::new(),
    })
}
