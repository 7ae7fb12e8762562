//! `PUT /api/patients/{patient}/settings`: a doctor (or admin) sets one patient's own alarm
//! limits and SpO2 scale. The hub validates them, queues them for the patient's edge, which
//! applies them at once and keeps them across restarts. Logged with who set them.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wardlink_shared::PatientId;
use wardlink_shared::alarm::PatientSettings;

use super::AppState;
use super::auth::{authenticate, refuse};
use crate::store::PatientOutcome;
use crate::token::Role;

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        json!({ "error": message }).to_string(),
    )
        .into_response()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        json!({ "error": "no such patient" }).to_string(),
    )
        .into_response()
}

pub(super) async fn put(
    State(app): State<AppState>,
    Path(patient): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let claims = match authenticate(&app, &headers, None) {
        Ok(c) => c,
        Err(refusal) => return refusal.respond(&app),
    };
    if !matches!(claims.role, Role::Doctor | Role::Admin) {
        return refuse(
            &app,
            StatusCode::FORBIDDEN,
            "only doctors and admins change alarm settings",
        );
    }
    let Ok(patient) = PatientId::new(patient) else {
        return not_found();
    };
    let settings: PatientSettings = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return bad_request(&format!("settings: {e}")),
    };
    if let Err((key, reason)) = settings.validate() {
        return bad_request(&format!("limits.{key}: {reason}"));
    }
    let ward = match app.store.patient_ward(patient.clone()).await {
        Ok(Some(ward)) if claims.may_see(&ward) => ward,
        // A patient of another ward is not found, so ids do not leak across wards.
        Ok(_) => return not_found(),
        Err(e) => {
            tracing::error!(error = %e, "patient lookup failed");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    match app
        .store
        .patient_settings((patient.clone(), ward), settings, claims.sub.clone())
        .await
    {
        Ok(Ok(PatientOutcome::Applied)) => {
            tracing::info!(user = %claims.sub, "patient alarm settings changed");
            (
                StatusCode::ACCEPTED,
                json!({ "patient": patient, "status": "queued for the edge" }).to_string(),
            )
                .into_response()
        }
        Ok(Ok(PatientOutcome::UnknownPatient)) => not_found(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "patient settings not stored");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
