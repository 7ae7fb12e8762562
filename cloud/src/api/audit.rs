//! `GET /api/audit?from=…&to=…`: the audit log for the `auditor` role, as NDJSON (one sealed
//! entry per line, in order), for entries whose time lies in `[from, to]` (RFC 3339; both
//! optional). The export verifies with `wardlink-cloud audit verify FILE`.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use wardlink_shared::time::parse_rfc3339;

use super::AppState;
use super::auth::{authenticate, refuse};
use crate::token::{Claims, Role};

#[derive(Debug, Deserialize)]
pub(super) struct Range {
    from: Option<String>,
    to: Option<String>,
}

/// The caller's claims if its token is valid and its role is `auditor`; otherwise the answer
/// (401 or 403).
fn auditor(app: &AppState, headers: &HeaderMap) -> Result<Claims, Box<Response>> {
    let claims =
        authenticate(app, headers, None).map_err(|refusal| Box::new(refusal.respond(app)))?;
    if claims.role != Role::Auditor {
        return Err(Box::new(refuse(
            app,
            StatusCode::FORBIDDEN,
            "only auditors read the audit log",
        )));
    }
    Ok(claims)
}

/// `GET /api/audit/head` (auditor): the chain head `{"seq":…,"hash":…}`, to be recorded outside
/// the hub as an anchor for `audit verify --anchor SEQ:HASH`.
pub(super) async fn head(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(response) = auditor(&app, &headers) {
        return *response;
    }
    match app.store.audit_head().await {
        Ok(head) => {
            let (seq, hash) = head.unwrap_or((0, crate::audit::GENESIS.to_owned()));
            axum::Json(serde_json::json!({ "seq": seq, "hash": hash })).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "audit log unreadable");
            (StatusCode::INTERNAL_SERVER_ERROR, "audit log unreadable\n").into_response()
        }
    }
}

pub(super) async fn get(
    State(app): State<AppState>,
    Query(range): Query<Range>,
    headers: HeaderMap,
) -> Response {
    let claims = match auditor(&app, &headers) {
        Ok(c) => c,
        Err(response) => return *response,
    };
    let bound = |v: &Option<String>, default: i64| match v {
        None => Some(default),
        Some(s) => parse_rfc3339(s),
    };
    let (Some(from), Some(to)) = (bound(&range.from, i64::MIN), bound(&range.to, i64::MAX)) else {
        return (
            StatusCode::BAD_REQUEST,
            "from and to must be RFC 3339 times\n",
        )
            .into_response();
    };
    match app.store.audit_between(from, to).await {
        Ok(lines) => {
            tracing::info!(user = %claims.sub, entries = lines.len(), "audit log read");
            // Reading the log is itself audited (after the read, so it is not in this export).
            let entry = crate::audit::Entry {
                seq: 0,
                ts: String::new(),
                actor: claims.sub.clone(),
                action: "audit_read".into(),
                ward: None,
                patient: None,
                subject: None,
                detail: Some(format!(
                    "from {} to {}",
                    range.from.as_deref().unwrap_or("start"),
                    range.to.as_deref().unwrap_or("end")
                )),
                prev: String::new(),
                hash: String::new(),
            };
            if !matches!(app.store.audit(entry).await, Ok(Ok(()))) {
                tracing::error!("audit entry for an audit read not stored");
            }
            let mut body = lines.join("\n");
            if !body.is_empty() {
                body.push('\n');
            }
            ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "audit log unreadable");
            (StatusCode::INTERNAL_SERVER_ERROR, "audit log unreadable\n").into_response()
        }
    }
}
