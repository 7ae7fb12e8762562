//! `GET /api/notifications` (admin): the SMS outbox, newest first — what was sent to whom,
//! what is still being retried, and what failed for good — so a failure is visible to the
//! people who run the hub, not only in its metrics and log.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::{authenticate, refuse};
use crate::store::SmsState;
use crate::token::Role;

/// Most messages listed.
const LIMIT: usize = 500;

pub(super) async fn get(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let claims = match authenticate(&app, &headers, None) {
        Ok(c) => c,
        Err(refusal) => return refusal.respond(&app),
    };
    if claims.role != Role::Admin {
        return refuse(
            &app,
            StatusCode::FORBIDDEN,
            "only admins read the notification outbox",
        );
    }
    match app.store.sms_recent(LIMIT).await {
        Ok(rows) => {
            let list: Vec<serde_json::Value> = rows
                .into_iter()
                .map(|(id, row)| {
                    let (state, detail) = match &row.state {
                        SmsState::Pending => ("pending", None),
                        SmsState::Sent { sid } => ("sent", Some(sid.clone())),
                        SmsState::Failed { error } => ("failed", Some(error.clone())),
                        SmsState::Cancelled => ("cancelled", None),
                        SmsState::PagedByEdge => ("paged_by_edge", None),
                    };
                    serde_json::json!({
                        "id": id,
                        "to": row.person,
                        "reason": row.reason,
                        "alerts": row.alerts,
                        "body": row.body,
                        "queued": wardlink_shared::time::format_rfc3339(row.queued_at),
                        "attempts": row.attempts,
                        "state": state,
                        "detail": detail,
                    })
                })
                .collect();
            axum::Json(list).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "notification outbox unreadable");
            (StatusCode::INTERNAL_SERVER_ERROR, "outbox unreadable\n").into_response()
        }
    }
}
