//! The ward view's history: what the edge keeps of the last hour, in the hub's format
//! (`{"from","to","seq","truncated","events"}`), so the page's first paint and its patient view
//! work the same on the ward view. The range defaults to the last 30 minutes, as at the hub.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use wardlink_shared::dashboard::{history_json, history_range};
use wardlink_shared::time::{Millis, format_rfc3339};
use wardlink_shared::{PatientId, WardId};

use super::WardState;
use super::auth::{Refusal, audit, authenticate};
use super::feed::Replay;

#[derive(Debug, Deserialize)]
pub(super) struct Range {
    from: Option<String>,
    to: Option<String>,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, json!({ "error": message }).to_string()).into_response()
}

fn range(r: &Range, now: Millis) -> Result<(Millis, Millis), &'static str> {
    history_range(r.from.as_deref(), r.to.as_deref(), now)
}

fn answer(h: &Replay, range: (Millis, Millis)) -> Response {
    let body = history_json(
        h.events.iter().map(|e| e.json.as_ref()),
        range,
        h.seq,
        false,
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(super) async fn ward(
    State(s): State<WardState>,
    Path(ward): Path<String>,
    Query(q): Query<Range>,
    headers: HeaderMap,
) -> Response {
    let claims = match authenticate(&s, &headers, None) {
        Ok(c) => c,
        Err(r) => return r.respond(&s),
    };
    if WardId::new(ward).ok().as_ref() != Some(s.feed.ward()) {
        return Refusal(
            StatusCode::FORBIDDEN,
            "other_ward",
            "this ward view shows another ward".into(),
        )
        .respond(&s);
    }
    let now = crate::clock::now_ms();
    let r = match range(&q, now) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    if !audit(&s, &claims, "history_read", None, "ward history".into()).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the edge is stopping");
    }
    answer(&s.feed.history(None, r, now), r)
}

pub(super) async fn patient(
    State(s): State<WardState>,
    Path(patient): Path<String>,
    Query(q): Query<Range>,
    headers: HeaderMap,
) -> Response {
    let claims = match authenticate(&s, &headers, None) {
        Ok(c) => c,
        Err(r) => return r.respond(&s),
    };
    let Some(patient) = PatientId::new(patient).ok().filter(|p| s.feed.knows(p)) else {
        return error(StatusCode::NOT_FOUND, "no such patient");
    };
    let now = crate::clock::now_ms();
    let r = match range(&q, now) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let detail = format!(
        "from {} to {}",
        format_rfc3339(r.0),
        format_rfc3339(r.1.min(now))
    );
    if !audit(&s, &claims, "history_read", Some(patient.clone()), detail).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the edge is stopping");
    }
    answer(&s.feed.history(Some(&patient), r, now), r)
}
