//! Who may use the ward view: a valid, unrevoked hub token whose role sees live data and whose
//! wards cover this edge's (the same rules as the hub's, with the same answers: 401 for no or
//! a bad token, 403 for a good one that does not allow the request).

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wardlink_shared::token::Claims;
use wardlink_shared::wire::RecordBody;

use super::WardState;
use super::keys::Refused;

/// A refusal: its status, the metric label and the message.
pub(super) struct Refusal(pub StatusCode, pub &'static str, pub String);

impl Refusal {
    pub(super) fn respond(self, s: &WardState) -> Response {
        s.metrics.refused.with(self.1).inc();
        let mut r = (self.0, json!({ "error": self.2 }).to_string()).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

/// The token from `Authorization: Bearer …` or, for browsers' WebSockets, `?token=`.
pub(super) fn authenticate(
    s: &WardState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Claims, Refusal> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = bearer.or(query) else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "no_token",
            "a token is required".into(),
        ));
    };
    let claims = s.keys.checker().verify(token).map_err(|e| match e {
        Refused::NoKeys => Refusal(StatusCode::UNAUTHORIZED, "no_keys", e.to_string()),
        Refused::Revoked => Refusal(StatusCode::UNAUTHORIZED, "revoked", e.to_string()),
        Refused::Invalid(_) => Refusal(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string()),
    })?;
    if !claims.role.sees_live_data() {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "role",
            "this role has no access to live data".into(),
        ));
    }
    if !claims.may_see(s.feed.ward()) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "other_ward",
            "token does not cover this ward".into(),
        ));
    }
    Ok(claims)
}

/// Sends an access record to the hub's audit log (through the outbox: it arrives whenever the
/// link is up). False if the outbox is closed (the edge is stopping).
pub(super) async fn audit(
    s: &WardState,
    claims: &Claims,
    action: &str,
    patient: Option<wardlink_shared::PatientId>,
    detail: String,
) -> bool {
    let record = RecordBody::Access {
        actor: claims.sub.clone(),
        action: action.to_owned(),
        patient,
        detail: format!("ward view of {}: {detail}", s.edge),
        ts: crate::clock::now_ms(),
    };
    s.outbox.append(vec![record]).await.is_ok()
}
