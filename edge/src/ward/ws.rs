//! `GET /ws` on the ward view: the hub's dashboard contract, served from the edge's state.
//!
//! A session starts with what it asked for (`?since=` replays the edge's events after that
//! seq), then goes live, and is told whether the hub is reachable (`{"type":"link",…}`, at
//! once and at every change). `ack` and `silence` apply at the edge at once (the rules task
//! answers) and reach the hub with their `by`. It ends when the client goes, the token expires
//! or is revoked, the client floods, stays silent, or falls behind (it then reconnects with
//! `?since=`), or the edge stops.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{broadcast::error::RecvError, oneshot};
use wardlink_shared::dashboard::{
    ClientMessage, MessageBucket, check_silence, origin_allowed, stale_version_json,
};
use wardlink_shared::token::Claims;
use wardlink_shared::wire::EdgeCommand;

use super::WardState;
use super::auth::{Refusal, audit, authenticate};
use crate::rules::CommandRequest;

/// Largest client message accepted.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Close codes (RFC 6455 §7.4.1).
const CLOSE_POLICY: u16 = 1008;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_TRY_AGAIN: u16 = 1013;
/// The edge pings an idle client this often...
const PING_EVERY: Duration = Duration::from_secs(20);
/// ... and closes a session from which nothing came for this long.
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// How often the hub's reachability is looked at.
const LINK_EVERY: Duration = Duration::from_secs(1);
/// A client that does not take a message within this is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn upgrade(
    State(s): State<WardState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let text = |name| headers.get(name).map(|v: &header::HeaderValue| v.to_str());
    let origin_ok = match text(header::ORIGIN) {
        None => true,
        Some(Err(_)) => false,
        Some(Ok(o)) => origin_allowed(
            Some(o),
            text(header::HOST).and_then(Result::ok),
            &s.allowed_origins,
        ),
    };
    if !origin_ok {
        return Refusal(
            StatusCode::FORBIDDEN,
            "origin",
            "pages from this origin may not open a session".into(),
        )
        .respond(&s);
    }
    let claims = match authenticate(&s, &headers, query.get("token").map(String::as_str)) {
        Ok(c) => c,
        Err(r) => return r.respond(&s),
    };
    if let Some(w) = query.get("ward")
        && w != s.feed.ward().as_str()
    {
        return Refusal(
            StatusCode::FORBIDDEN,
            "other_ward",
            "this ward view shows another ward".into(),
        )
        .respond(&s);
    }
    let since = match query.get("since").map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return (StatusCode::BAD_REQUEST, "since must be a sequence number\n").into_response();
        }
    };
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| session(socket, s, claims, since))
}

fn error_json(code: &str, message: &str) -> String {
    json!({ "type": "error", "error": code, "message": message }).to_string()
}

/// Where the session stands: ward view, which edge, whether the hub is reachable, and `head`,
/// the last seq the session has been given (a page that knew a higher one from before an
/// edge restart takes this instead).
fn link_json(s: &WardState, reachable: bool, head: u64) -> String {
    json!({
        "type": "link",
        "view": "ward",
        "edge": s.edge.as_str(),
        "ward": s.feed.ward().as_str(),
        "hub": if reachable { "reachable" } else { "unreachable" },
        "head": head,
    })
    .to_string()
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

async fn send(sink: &mut Sink, text: String) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

/// Sends a close frame, if the client takes it within [`SEND_TIMEOUT`].
async fn close(sink: &mut Sink, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_owned().into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
}

async fn session(socket: WebSocket, s: WardState, claims: Claims, since: Option<u64>) {
    let (mut sink, mut stream) = socket.split();
    let mut live = s.feed.subscribe();
    let wards: Vec<&str> = claims.wards.iter().map(|w| w.as_str()).collect();
    if !audit(
        &s,
        &claims,
        "ws_open",
        None,
        format!("wards: {}", wards.join(",")),
    )
    .await
    {
        close(&mut sink, CLOSE_GOING_AWAY, "edge stopping").await;
        return;
    }
    s.metrics.sessions.add(1);
    tracing::info!(user = %claims.sub, "ward view session started");
    let now = crate::clock::now_ms();
    let mut last = match since {
        Some(since) => {
            let replay = s.feed.replay(since, now);
            let mut ok = true;
            for e in &replay.events {
                ok = ok && send(&mut sink, e.json.to_string()).await;
            }
            if !ok {
                s.metrics.sessions.add(-1);
                return;
            }
            replay.seq.max(since)
        }
        None => s.feed.replay(u64::MAX, now).seq,
    };
    let mut reachable = s.uplink.get() > 0;
    let mut ok = send(&mut sink, link_json(&s, reachable, last)).await;
    let mut link = tokio::time::interval(LINK_EVERY);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let idle = tokio::time::sleep(IDLE_LIMIT);
    tokio::pin!(idle);
    let expiry = tokio::time::sleep(until_expiry(claims.exp));
    tokio::pin!(expiry);
    let mut keys = s.keys.watch();
    let mut bucket = MessageBucket::new(std::time::Instant::now());
    while ok {
        tokio::select! {
            r = live.recv() => match r {
                Ok(e) if e.seq > last => {
                    last = e.seq;
                    ok = send(&mut sink, e.json.to_string()).await;
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    // It resumes with `?since=` from what it has.
                    close(&mut sink, CLOSE_TRY_AGAIN, "fell behind; reconnect").await;
                    ok = false;
                }
                Err(RecvError::Closed) => ok = false,
            },
            m = stream.next() => {
                idle.as_mut().reset(tokio::time::Instant::now() + IDLE_LIMIT);
                let counted = matches!(m, Some(Ok(Message::Text(_) | Message::Binary(_))));
                if counted && !bucket.take(std::time::Instant::now()) {
                    s.metrics.refused.with("rate_limit").inc();
                    close(&mut sink, CLOSE_POLICY, "message rate limit").await;
                    break;
                }
                match m {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(reply) = client_message(&s, &claims, text.as_str()).await {
                            ok = send(&mut sink, reply).await;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        s.metrics.refused.with("malformed").inc();
                        ok = send(&mut sink, error_json("binary", "messages are JSON text")).await;
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => ok = false,
                    Some(Ok(_)) => {}
                }
            },
            _ = link.tick() => {
                let now_reachable = s.uplink.get() > 0;
                if now_reachable != reachable {
                    reachable = now_reachable;
                    ok = send(&mut sink, link_json(&s, reachable, last)).await;
                }
            }
            _ = ping.tick() => {
                let ping = sink.send(Message::Ping(Default::default()));
                ok = matches!(tokio::time::timeout(SEND_TIMEOUT, ping).await, Ok(Ok(())));
            }
            () = &mut idle => {
                close(&mut sink, CLOSE_POLICY, "idle: no pong").await;
                ok = false;
            }
            () = &mut expiry => {
                close(&mut sink, CLOSE_POLICY, "token expired").await;
                ok = false;
            }
            changed = keys.changed() => {
                if changed.is_err() || keys.borrow_and_update().is_revoked(&claims.jti) {
                    tracing::info!(user = %claims.sub, "token revoked; ward view session closed");
                    close(&mut sink, CLOSE_POLICY, "token revoked").await;
                    ok = false;
                }
            }
            () = s.shutdown.cancelled() => {
                close(&mut sink, CLOSE_GOING_AWAY, "edge shutting down").await;
                ok = false;
            }
        }
    }
    s.metrics.sessions.add(-1);
    audit(&s, &claims, "ws_close", None, String::new()).await;
    tracing::info!(user = %claims.sub, "ward view session ended");
}

fn until_expiry(exp: u64) -> Duration {
    let now = u64::try_from(crate::clock::now_ms() / 1000).unwrap_or(0);
    Duration::from_secs(exp.saturating_sub(now))
}

/// Handles a client message; the reply, if any.
async fn client_message(s: &WardState, claims: &Claims, text: &str) -> Option<String> {
    let refuse = |code: &str, message: &str| Some(error_json(code, message));
    let now = crate::clock::now_ms();
    // An acknowledgement naming a version: (episode, version seen).
    let mut stale = None;
    let command = match serde_json::from_str::<ClientMessage>(text) {
        Ok(ClientMessage::Ack { alert, version }) => {
            if !s.feed.is_open(&alert) {
                return refuse("unknown_alert", "no such alert");
            }
            stale = version.map(|v| (alert.clone(), v));
            match version {
                Some(version) => EdgeCommand::AcknowledgeVersion {
                    alert,
                    version,
                    by: claims.sub.clone(),
                    ts: now,
                },
                None => EdgeCommand::Acknowledge {
                    alert,
                    by: claims.sub.clone(),
                    ts: now,
                },
            }
        }
        Ok(ClientMessage::Silence {
            patient,
            minutes,
            reason,
        }) => {
            let reason = match check_silence(minutes, &reason) {
                Ok(r) => r,
                Err(why) => return refuse("invalid", why),
            };
            if !s.feed.knows(&patient) {
                return refuse("unknown_patient", "no such patient");
            }
            EdgeCommand::Silence {
                patient,
                from: now,
                until: now + i64::from(minutes) * 60_000,
                by: claims.sub.clone(),
                reason: reason.to_owned(),
            }
        }
        Err(e) => {
            s.metrics.refused.with("malformed").inc();
            return refuse("malformed", &e.to_string());
        }
    };
    let (applied, done) = oneshot::channel();
    let request = CommandRequest {
        command,
        applied,
        from_ward: true,
    };
    if s.commands.send(request).await.is_err() {
        return refuse("internal", "the edge is stopping");
    }
    match done.await {
        Ok(true) => None,
        // The alarm worsened since the version the clinician saw: still news.
        Ok(false)
            if let Some((alert, current)) = stale.as_ref().and_then(|(alert, seen)| {
                s.feed
                    .version(alert)
                    .filter(|v| v > seen)
                    .map(|v| (alert, v))
            }) =>
        {
            s.metrics.refused.with("stale_version").inc();
            // As the hub answers: the page frees its button for the current version.
            Some(stale_version_json(alert, current))
        }
        // Resolved between the check and the rules task.
        Ok(false) => refuse("resolved", "the alarm is already over"),
        Err(_) => refuse("internal", "the edge is stopping"),
    }
}
