//! Stored readings and alarm events by patient or by ward and time range, for the dashboard's
//! patient view and for a ward view's first paint:
//!
//! - `GET /api/patients/{patient}/history?from=&to=`
//! - `GET /api/wards/{ward}/history?from=&to=`
//!
//! `from` and `to` are RFC 3339 (default: the last 30 minutes, open-ended). The same
//! authorisation as the WebSocket: a token whose role sees live data and whose wards cover the
//! patient's ward (401, 403; a patient unknown or of another ward is 404, and only events of
//! the token's wards are returned). A ward's answer also carries its edges' latest presence
//! and every alarm episode still open, whatever its age. The answer is `{"from","to","seq","truncated","events"}`
//! where `events` are the WebSocket's own `vitals` and `alert` messages, in time order, and
//! `seq` is the hub's last event seq at the read: a session opened with `?since={seq}` then
//! misses nothing and repeats nothing. Every read is audited (patient by pseudonym).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use wardlink_shared::dashboard::{history_json, history_range};
use wardlink_shared::time::format_rfc3339;
use wardlink_shared::{PatientId, WardId};

use super::AppState;
use super::auth::{authenticate, refuse};
use crate::audit::Entry;
use crate::store::History;
use crate::token::Claims;

/// Events returned at most (the newest are kept; `truncated` says so).
const LIMIT: usize = 20_000;

#[derive(Debug, Deserialize)]
pub(super) struct Range {
    from: Option<String>,
    to: Option<String>,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, json!({ "error": message }).to_string()).into_response()
}

/// The requested range, or why it is not one.
fn range(r: &Range) -> Result<(i64, i64), &'static str> {
    history_range(r.from.as_deref(), r.to.as_deref(), crate::notify::now_ms())
}

fn viewer(app: &AppState, headers: &HeaderMap) -> Result<Claims, Box<Response>> {
    let claims = authenticate(app, headers, None).map_err(|r| Box::new(r.respond(app)))?;
    if !claims.role.sees_live_data() {
        return Err(Box::new(refuse(
            app,
            StatusCode::FORBIDDEN,
            "this role has no access to patient data",
        )));
    }
    Ok(claims)
}

fn answer(history: &History, range: (i64, i64)) -> Response {
    let events = history.events.iter().map(|e| e.as_ref());
    let body = history_json(events, range, history.seq, history.truncated);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The caller's claims and the range, or the refusal.
fn request(
    app: &AppState,
    headers: &HeaderMap,
    q: &Range,
) -> Result<(Claims, (i64, i64)), Box<Response>> {
    let claims = viewer(app, headers)?;
    let range = range(q).map_err(|why| Box::new(error(StatusCode::BAD_REQUEST, why)))?;
    Ok((claims, range))
}

async fn audited(app: &AppState, claims: &Claims, entry: Entry) -> bool {
    let ok = matches!(app.store.audit(entry).await, Ok(Ok(())));
    if !ok {
        tracing::error!(user = %claims.sub, "history read not audited; refused");
    }
    ok
}

fn entry(claims: &Claims, ward: &WardId, patient: Option<String>, range: (i64, i64)) -> Entry {
    Entry {
        seq: 0,
        ts: String::new(),
        actor: claims.sub.clone(),
        action: "history_read".into(),
        ward: Some(ward.to_string()),
        patient,
        subject: None,
        detail: Some(format!(
            "from {} to {}",
            format_rfc3339(range.0),
            format_rfc3339(range.1)
        )),
        prev: String::new(),
        hash: String::new(),
    }
}

pub(super) async fn patient(
    State(app): State<AppState>,
    Path(patient): Path<String>,
    Query(q): Query<Range>,
    headers: HeaderMap,
) -> Response {
    let (claims, range) = match request(&app, &headers, &q) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let not_found = || error(StatusCode::NOT_FOUND, "no such patient");
    let Ok(patient) = PatientId::new(patient) else {
        return not_found();
    };
    let ward = match app.store.patient_ward(patient.clone()).await {
        Ok(Some(w)) => w,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::error!(error = %e, "patient lookup failed");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "store unreadable");
        }
    };
    // A patient of another ward is as unknown as one that never existed (no probing).
    if !claims.may_see(&ward) {
        return not_found();
    }
    let pseudonym = app.pseudonyms.pseudonym(patient.as_str());
    if !audited(&app, &claims, entry(&claims, &ward, Some(pseudonym), range)).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot audit this read");
    }
    // Only the wards the token covers: the patient may have been elsewhere before.
    let seer = claims.clone();
    let visible = Box::new(move |w: &str| WardId::new(w).is_ok_and(|w| seer.may_see(&w)));
    match app
        .store
        .patient_history(&patient, range, LIMIT, visible)
        .await
    {
        Ok(h) => answer(&h, range),
        Err(e) => {
            tracing::error!(error = %e, "history unreadable");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store unreadable")
        }
    }
}

pub(super) async fn ward(
    State(app): State<AppState>,
    Path(ward): Path<String>,
    Query(q): Query<Range>,
    headers: HeaderMap,
) -> Response {
    let (claims, range) = match request(&app, &headers, &q) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let Ok(ward) = WardId::new(ward) else {
        return error(StatusCode::BAD_REQUEST, "ward is not a valid id");
    };
    if !claims.may_see(&ward) {
        return refuse(
            &app,
            StatusCode::FORBIDDEN,
            "token does not cover this ward",
        );
    }
    if !audited(&app, &claims, entry(&claims, &ward, None, range)).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot audit this read");
    }
    match app.store.ward_history(&ward, range, LIMIT).await {
        Ok(h) => answer(&h, range),
        Err(e) => {
            tracing::error!(error = %e, "history unreadable");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store unreadable")
        }
    }
}
