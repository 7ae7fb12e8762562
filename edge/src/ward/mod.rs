//! The ward view: the edge serves the hub's dashboard page and WebSocket contract on the ward's
//! LAN, from its own state, so the ward sees and answers its alarms when the hub or the network
//! is gone (`../shared/DESIGN.md`, "Edge → ward view").
//!
//! - `GET /`, `/app.js`, `/app.css`: the page, marked as the ward view of this edge;
//! - `GET /ws`: the dashboard WebSocket (`?since=` resumes; `ack` and `silence` apply here at
//!   once and reach the hub with their `by` as alarm-lane records);
//! - `GET /api/wards/{ward}/history`, `GET /api/patients/{patient}/history`: what the edge
//!   keeps of the last hour;
//! - `GET /healthz`.
//!
//! Tokens are the hub's JWTs, checked with the hub's keys ([`keys`]); only tokens covering this
//! edge's ward pass (403 otherwise). Every session and read is audited at the hub (an `Access`
//! record on the alarm lane).

mod auth;
pub mod feed;
mod history;
pub mod keys;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wardlink_shared::EdgeId;
use wardlink_shared::metrics::{Gauge, LabeledCounter, Registry};
use wardlink_shared::web::{CSP, SCRIPT, STYLE, ward_view_index};

pub use feed::Feed;
pub use keys::Keys;

use crate::outbox::Outbox;
use crate::rules::CommandRequest;

/// `[ward]` in `edge.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WardSection {
    /// The ward view's HTTP listener (`WARDLINK_WARD_LISTEN`); none: no ward view.
    pub listen: Option<SocketAddr>,
    /// Readings kept for the ward view's history (at most one per patient every 5 s).
    pub history_max: usize,
    /// Browser origins allowed to open `/ws` besides the ward view's own.
    pub allowed_origins: Vec<String>,
}

impl Default for WardSection {
    fn default() -> Self {
        Self {
            listen: None,
            history_max: 20_000,
            allowed_origins: Vec::new(),
        }
    }
}

impl WardSection {
    /// Checks the values; the offending key and why.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if !(100..=1_000_000).contains(&self.history_max) {
            return Err(("ward.history_max", "must be between 100 and 1000000"));
        }
        Ok(())
    }
}

/// What the ward view counts.
#[derive(Debug)]
pub struct WardMetrics {
    /// Open ward-view sessions.
    pub sessions: Arc<Gauge>,
    /// Requests refused, by reason.
    pub refused: LabeledCounter,
}

impl WardMetrics {
    /// Registers the ward view's metrics on `r`.
    pub fn register(r: &Registry) -> Self {
        Self {
            sessions: r.gauge(
                "wardlink_edge_ward_sessions",
                "Dashboard sessions open on the edge's ward view.",
            ),
            refused: r.labeled_counter(
                "wardlink_edge_ward_refused_total",
                "Ward view requests refused, by reason.",
                "reason",
                &[
                    "no_token",
                    "invalid_token",
                    "revoked",
                    "no_keys",
                    "other_ward",
                    "role",
                    "origin",
                    "rate_limit",
                    "malformed",
                ],
            ),
        }
    }
}

/// What the ward view's handlers share.
#[derive(Clone)]
pub struct WardState {
    /// This edge.
    pub edge: EdgeId,
    /// What the view shows.
    pub feed: Feed,
    /// The hub's token keys.
    pub keys: Keys,
    /// Acknowledgements and silences go to the rules task as commands.
    pub commands: mpsc::Sender<CommandRequest>,
    /// Access records for the hub's audit log.
    pub outbox: Outbox,
    /// Whether the hub is reachable now (the uplink's gauge).
    pub uplink: Arc<Gauge>,
    /// Counts.
    pub metrics: Arc<WardMetrics>,
    /// Browser origins allowed besides the view's own.
    pub allowed_origins: Arc<Vec<String>>,
    /// The page, naming this edge and ward.
    pub index: Arc<str>,
    /// Fires when the edge stops.
    pub shutdown: CancellationToken,
}

/// The routes.
pub fn router(state: WardState) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT.into()) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE.into()) }),
        )
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/ws", get(ws::upgrade))
        .route("/api/wards/{ward}/history", get(history::ward))
        .route("/api/patients/{patient}/history", get(history::patient))
        .with_state(state)
}

/// The page as this edge serves it.
pub fn page(edge: &EdgeId, ward: &wardlink_shared::WardId) -> Arc<str> {
    ward_view_index(edge.as_str(), ward.as_str()).into()
}

async fn index(State(s): State<WardState>) -> Response {
    asset("text/html; charset=utf-8", s.index.clone())
}

fn asset(content_type: &'static str, body: Arc<str>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Binds the ward view on `addr` and serves it until `state.shutdown`; returns the bound
/// address.
pub async fn serve(
    addr: SocketAddr,
    state: WardState,
) -> anyhow::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding ward view listener {addr}"))?;
    let bound = listener.local_addr()?;
    let shutdown = state.shutdown.clone();
    let app = router(state);
    Ok((bound, async move {
        let serve = axum::serve(
            axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            app,
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "ward view listener failed");
        }
    }))
}
