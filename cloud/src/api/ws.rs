//! `GET /ws`: the dashboard WebSocket.
//!
//! Authorisation happens before the upgrade: no or bad token → 401, a token whose role or
//! wards do not allow the request → 403. A session then subscribes to the bus first and, with
//! `?since=`, replays the store after that seq; it remembers the last seq it passed, so replay
//! and live overlap without a gap and without a duplicate. A session that falls behind the bus
//! catches up from the store the same way.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{
    CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade,
    rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use futures_util::stream::{SplitSink, StreamExt};
use serde_json::json;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use wardlink_shared::WardId;
use wardlink_shared::dashboard::{ClientMessage, MessageBucket, check_silence, stale_version_json};

use super::AppState;
use super::auth::{authenticate, refuse};
use crate::store::{AckOutcome, PatientOutcome};
use crate::token::{Claims, Role};

/// Largest client message accepted.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Bytes read from a dashboard's socket at a time (larger messages still arrive whole).
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Events read from the store per replay step.
const REPLAY_PAGE: usize = 1000;
/// WebSocket close code for a policy violation (RFC 6455 §7.4.1): used when the token expires.
const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code "going away": the hub is stopping.
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: the server met an unexpected condition.
const CLOSE_INTERNAL: u16 = 1011;
/// The hub pings an idle client this often...
const PING_EVERY: Duration = Duration::from_secs(20);
/// ... and closes a session from which nothing (not even a pong) came for this long.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// Whether a browser page may open a session (see [`wardlink_shared::dashboard::origin_allowed`]);
/// an `Origin` that is not text is refused.
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let text = |name| headers.get(name).map(|v: &header::HeaderValue| v.to_str());
    match text(header::ORIGIN) {
        None => true,
        Some(Err(_)) => false,
        Some(Ok(origin)) => {
            let host = text(header::HOST).and_then(Result::ok);
            wardlink_shared::dashboard::origin_allowed(Some(origin), host, allowed)
        }
    }
}

type Sink = SplitSink<WebSocket, Message>;

/// What a session may see.
struct Scope {
    claims: Claims,
    ward: Option<WardId>,
}

impl Scope {
    fn allows(&self, ward: &WardId) -> bool {
        self.claims.may_see(ward) && self.ward.as_ref().is_none_or(|w| w == ward)
    }
}

pub(super) async fn upgrade(
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !origin_allowed(&headers, &app.allowed_origins) {
        return refuse(
            &app,
            StatusCode::FORBIDDEN,
            "pages from this origin may not open a session",
        );
    }
    let claims = match authenticate(&app, &headers, query.get("token").map(String::as_str)) {
        Ok(c) => c,
        Err(refusal) => return refusal.respond(&app),
    };
    if !claims.role.sees_live_data() {
        return refuse(
            &app,
            StatusCode::FORBIDDEN,
            "this role has no access to live data",
        );
    }
    if !claims.role.all_wards() && claims.wards.is_empty() {
        return refuse(&app, StatusCode::FORBIDDEN, "token names no ward");
    }
    let ward = match query.get("ward").map(|w| WardId::new(w.as_str())) {
        None => None,
        Some(Ok(w)) if claims.may_see(&w) => Some(w),
        Some(Ok(_)) => {
            return refuse(
                &app,
                StatusCode::FORBIDDEN,
                "token does not cover this ward",
            );
        }
        Some(Err(_)) => {
            return (StatusCode::BAD_REQUEST, "ward is not a valid id\n").into_response();
        }
    };
    let since = match query.get("since").map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => {
            return (StatusCode::BAD_REQUEST, "since must be a sequence number\n").into_response();
        }
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let scope = Scope { claims, ward };
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        // Dashboards send little (acknowledgements, silences): a small read buffer per
        // session instead of the default 128 KiB, which held 1.3 GiB at 10,000 dashboards.
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| session(socket, app, scope, since))
}

/// The session ends when the client goes, the token expires, or sending fails.
async fn session(socket: WebSocket, app: AppState, scope: Scope, since: Option<u64>) {
    // Subscribe before anything else: whatever is committed after the upgrade is live, and
    // whatever was before is read from the store.
    let mut live = app.bus.subscribe();
    let mut last = since.unwrap_or_else(|| app.bus.latest());
    // No access without its audit entry.
    if !audit_session(&app, &scope, "ws_open").await {
        let (mut sink, _) = socket.split();
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CLOSE_INTERNAL,
                reason: "the hub cannot audit this session".into(),
            })))
            .await;
        return;
    }
    app.metrics.ws_sessions.add(1);
    // Present for the notifier as long as the session lives.
    // Only clinicians of the ward count as watching it (an admin's screen is not a ward's).
    let _watching = matches!(scope.claims.role, Role::Nurse | Role::Doctor).then(|| {
        app.watchers.watch(match &scope.ward {
            Some(w) => vec![w.clone()],
            None => scope.claims.wards.clone(),
        })
    });
    tracing::info!(user = %scope.claims.sub, role = ?scope.claims.role, "dashboard session started");
    let (mut sink, mut stream) = socket.split();
    let expiry = tokio::time::sleep(until_expiry(scope.claims.exp));
    tokio::pin!(expiry);
    let mut ok = since.is_none() || catch_up(&app, &scope, &mut sink, &mut last).await;
    let mut bucket = MessageBucket::new(std::time::Instant::now());
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let idle = tokio::time::sleep(IDLE_LIMIT);
    tokio::pin!(idle);
    let mut revoked = app.revoked_tokens.clone();
    let jti = scope.claims.jti.clone();
    let mut watching = true;
    while ok {
        tokio::select! {
            is_revoked = async { revoked.wait_for(|r| r.contains_key(&jti)).await.is_ok() }, if watching => {
                if is_revoked {
                    tracing::info!(user = %scope.claims.sub, "token revoked; session closed");
                    close(&mut sink, CLOSE_POLICY, "token revoked").await;
                    ok = false;
                } else {
                    // The hub is stopping; shutdown closes the session.
                    watching = false;
                }
            }
            r = live.recv() => match r {
                Ok(event) => match forward(&app, &scope, &mut sink, &mut live, &mut last, event).await {
                    Forwarded::Sent => {}
                    Forwarded::Lagged => {
                        app.metrics.ws_catchups.inc();
                        ok = catch_up(&app, &scope, &mut sink, &mut last).await;
                    }
                    Forwarded::Failed => ok = false,
                },
                Err(RecvError::Lagged(_)) => {
                    app.metrics.ws_catchups.inc();
                    ok = catch_up(&app, &scope, &mut sink, &mut last).await;
                }
                Err(RecvError::Closed) => ok = false,
            },
            m = stream.next() => {
                idle.as_mut().reset(tokio::time::Instant::now() + IDLE_LIMIT);
                let counted = matches!(m, Some(Ok(Message::Text(_) | Message::Binary(_))));
                if counted && !bucket.take(std::time::Instant::now()) {
                    app.metrics.ws_client_errors.with("rate_limit").inc();
                    tracing::warn!(user = %scope.claims.sub, "dashboard over its message rate; closed");
                    close(&mut sink, CLOSE_POLICY, "message rate limit").await;
                    break;
                }
                match m {
                Some(Ok(Message::Text(text))) => {
                    if let Some(reply) = client_message(&app, &scope, text.as_str()).await {
                        ok = send(&app, &mut sink, reply).await;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    app.metrics.ws_client_errors.with("binary").inc();
                    ok = send(&app, &mut sink, error_json("binary", "messages are JSON text")).await;
                }
                Some(Ok(Message::Close(_))) | None => ok = false,
                Some(Err(e)) => {
                    // An oversized or malformed frame: the connection is done.
                    tracing::info!(user = %scope.claims.sub, error = %e, "dashboard connection failed");
                    ok = false;
                }
                Some(Ok(_)) => {}
                }
            },
            _ = ping.tick() => {
                ok = sink.send(Message::Ping(Default::default())).await.is_ok();
            }
            () = &mut idle => {
                app.metrics.ws_client_errors.with("idle").inc();
                close(&mut sink, CLOSE_POLICY, "idle: no pong").await;
                ok = false;
            }
            () = app.shutdown.cancelled() => {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: CLOSE_GOING_AWAY,
                        reason: "hub shutting down".into(),
                    })))
                    .await;
                ok = false;
            }
            () = &mut expiry => {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: CLOSE_POLICY,
                        reason: "token expired".into(),
                    })))
                    .await;
                ok = false;
            }
        }
    }
    // The closing handshake: read (and discard) what the dashboard still sends until it
    // answers the close, it goes, or CLOSE_DRAIN passes. Closing the socket with unread data
    // in it makes the kernel send a reset, and the dashboard would lose the close frame (and
    // its code) that was already on its way.
    let _ = tokio::time::timeout(CLOSE_DRAIN, async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    app.metrics.ws_sessions.add(-1);
    audit_session(&app, &scope, "ws_close").await;
    tracing::info!(user = %scope.claims.sub, "dashboard session ended");
}

/// Sends a close frame (the peer may already be gone).
async fn close(sink: &mut Sink, code: u16, reason: &str) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_owned().into(),
        })))
        .await;
}

/// Records a session's start or end in the audit log; false if it could not be stored.
async fn audit_session(app: &AppState, scope: &Scope, action: &str) -> bool {
    let claims = &scope.claims;
    let role = serde_json::to_value(claims.role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned));
    let wards: Vec<&str> = claims.wards.iter().map(|w| w.as_str()).collect();
    let entry = crate::audit::Entry {
        seq: 0,
        ts: String::new(),
        actor: claims.sub.clone(),
        action: action.into(),
        ward: None,
        patient: None,
        subject: role,
        detail: Some(format!("wards: {}", wards.join(","))),
        prev: String::new(),
        hash: String::new(),
    };
    match app.store.audit(entry).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "audit entry not stored");
            false
        }
        Err(_) => false,
    }
}

fn until_expiry(exp: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Duration::from_secs(exp.saturating_sub(now))
}

/// A dashboard that does not take a message within this is gone (or hostile): the session
/// ends rather than holding the hub's memory and its shutdown hostage.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing session waits for the dashboard to answer its close.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);

async fn send(app: &AppState, sink: &mut Sink, text: impl Into<Utf8Bytes>) -> bool {
    let ok = matches!(
        tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    );
    if ok {
        app.metrics.ws_messages_sent.inc();
    }
    ok
}

/// Most live events written to one dashboard before a flush.
const FORWARD_BATCH: usize = 256;

/// What [`forward`] did.
enum Forwarded {
    /// Everything waiting was sent.
    Sent,
    /// The session fell behind the bus while forwarding: it must catch up from the store.
    Lagged,
    /// The dashboard did not take the events.
    Failed,
}

/// Sends `first` and the events already waiting behind it (up to [`FORWARD_BATCH`]) that the
/// scope allows, then flushes once: a dashboard under load gets many events per write instead
/// of one write (a syscall) each, and an idle one gets each event at once. Advances `last`.
async fn forward(
    app: &AppState,
    scope: &Scope,
    sink: &mut Sink,
    live: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<crate::bus::Event>>,
    last: &mut u64,
    first: std::sync::Arc<crate::bus::Event>,
) -> Forwarded {
    let mut queued = 0u64;
    let mut lagged = false;
    let mut next = Some(first);
    while let Some(event) = next.take() {
        if event.seq > *last {
            *last = event.seq;
            if scope.allows(&event.ward) {
                let message = Message::Text(event.json.clone());
                if !matches!(
                    tokio::time::timeout(SEND_TIMEOUT, sink.feed(message)).await,
                    Ok(Ok(()))
                ) {
                    return Forwarded::Failed;
                }
                queued += 1;
            }
        }
        if queued as usize >= FORWARD_BATCH {
            break;
        }
        match live.try_recv() {
            Ok(event) => next = Some(event),
            Err(TryRecvError::Lagged(_)) => lagged = true,
            Err(TryRecvError::Empty | TryRecvError::Closed) => {}
        }
    }
    if queued > 0 {
        if !matches!(
            tokio::time::timeout(SEND_TIMEOUT, sink.flush()).await,
            Ok(Ok(()))
        ) {
            return Forwarded::Failed;
        }
        app.metrics.ws_messages_sent.add(queued);
    }
    if lagged {
        Forwarded::Lagged
    } else {
        Forwarded::Sent
    }
}

/// Sends every stored event after `last` that the scope allows; advances `last`.
async fn catch_up(app: &AppState, scope: &Scope, sink: &mut Sink, last: &mut u64) -> bool {
    loop {
        let page = match app.store.events_after(*last, REPLAY_PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "replay failed; closing session");
                return false;
            }
        };
        let full = page.len() == REPLAY_PAGE;
        for event in page {
            *last = event.seq;
            if scope.allows(&event.ward) && !send(app, sink, event.json.clone()).await {
                return false;
            }
        }
        if !full {
            return true;
        }
    }
}

fn error_json(error: &str, message: &str) -> String {
    json!({"type": "error", "error": error, "message": message}).to_string()
}

/// Handles a client message; returns the reply, if any.
async fn client_message(app: &AppState, scope: &Scope, text: &str) -> Option<String> {
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(ClientMessage::Ack { alert, version }) => acknowledge(app, scope, alert, version).await,
        Ok(ClientMessage::Silence {
            patient,
            minutes,
            reason,
        }) => silence(app, scope, patient, minutes, reason).await,
        Err(e) => {
            app.metrics.ws_client_errors.with("malformed").inc();
            Some(error_json("malformed", &e.to_string()))
        }
    }
}

/// `{"type":"silence","patient":…,"minutes":N,"reason":…}`: only for a patient of a ward the
/// token covers, with a reason, for 1–60 minutes. Announced to dashboards as a `silence`
/// message and sent to the patient's edge, which marks that patient's alarm events
/// `silenced` (high-priority ones only for the edge's `silence.max_high_s`).
async fn silence(
    app: &AppState,
    scope: &Scope,
    patient: wardlink_shared::PatientId,
    minutes: u32,
    reason: String,
) -> Option<String> {
    let refuse = |label: &str, message: &str| {
        app.metrics.ws_client_errors.with(label).inc();
        Some(error_json(label, message))
    };
    let reason = match check_silence(minutes, &reason) {
        Ok(r) => r,
        Err(why) => return refuse("invalid", why),
    };
    let ward = match app.store.patient_ward(patient.clone()).await {
        Ok(Some(w)) if scope.allows(&w) => w,
        Ok(_) => return refuse("unknown_patient", "no such patient"),
        Err(e) => {
            tracing::error!(error = %e, "patient lookup failed");
            return refuse("internal", "the hub could not read the patient; try again");
        }
    };
    let from = now_ms();
    let until = from + i64::from(minutes) * 60_000;
    match app
        .store
        .silence(
            (patient, ward.clone()),
            (from, until),
            scope.claims.sub.clone(),
            reason.to_owned(),
        )
        .await
    {
        Ok(Ok(PatientOutcome::Applied)) => {
            tracing::info!(user = %scope.claims.sub, ward = %ward, minutes, "patient alarms silenced");
            None
        }
        Ok(Ok(PatientOutcome::UnknownPatient)) => refuse("unknown_patient", "no such patient"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "silence not stored");
            refuse("internal", "the hub could not store the silence; try again")
        }
        Err(_) => refuse("internal", "the hub is stopping"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `{"type":"ack","alert":…,"version":N}`: only for an episode of a ward the token covers.
/// The acknowledgement reaches every dashboard (this one included) as an `alert` event with
/// state `acknowledged` and `by`, and goes down to the edge as a command. One naming an older
/// version than the current one acknowledges nothing (it is audited): the alarm worsened
/// since the clinician looked, and stays news.
async fn acknowledge(
    app: &AppState,
    scope: &Scope,
    alert: String,
    version: Option<u32>,
) -> Option<String> {
    let refuse = |label: &str, message: &str| {
        app.metrics.ws_client_errors.with(label).inc();
        Some(error_json(label, message))
    };
    let row = match app.store.alert(alert.clone()).await {
        Ok(Some(row)) => row,
        Ok(None) => return refuse("unknown_alert", "no such alert"),
        Err(e) => {
            tracing::error!(error = %e, "alert lookup failed");
            return refuse("internal", "the hub could not read the alert; try again");
        }
    };
    if !scope.allows(&row.ward) {
        // Same answer as an unknown id: a token must not learn which ids exist elsewhere.
        return refuse("unknown_alert", "no such alert");
    }
    match app
        .store
        .acknowledge((alert.clone(), version), scope.claims.sub.clone(), now_ms())
        .await
    {
        Ok(Ok(AckOutcome::Acknowledged)) => {
            tracing::info!(user = %scope.claims.sub, alert = %alert, ward = %row.ward, "alert acknowledged");
            None
        }
        Ok(Ok(AckOutcome::AlreadyAcknowledged)) => None,
        Ok(Ok(AckOutcome::Stale { current })) => {
            tracing::info!(user = %scope.claims.sub, alert = %alert, seen = version.unwrap_or(0), current, "acknowledgement of an older version: the alarm stays unacknowledged");
            app.metrics.ws_client_errors.with("stale_version").inc();
            Some(stale_version_json(&alert, current))
        }
        Ok(Ok(AckOutcome::Resolved)) => refuse("resolved", "the alarm is already over"),
        Ok(Ok(AckOutcome::Unknown)) => refuse("unknown_alert", "no such alert"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "acknowledgement not stored");
            refuse(
                "internal",
                "the hub could not store the acknowledgement; try again",
            )
        }
        Err(_) => refuse("internal", "the hub is stopping"),
    }
}
