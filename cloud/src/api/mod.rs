//! The hub's HTTP API: `/ws` for dashboards, `/api/patients/{patient}/settings`, `/healthz`,
//! `/metrics`.

mod audit;
mod auth;
mod history;
mod notifications;
mod settings;
mod web;
mod ws;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, put};

use crate::bus::Bus;
use crate::metrics::HubMetrics;
use crate::store::Store;
use crate::token::TokenVerifier;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Event log for replay.
    pub store: Store,
    /// Live events.
    pub bus: Bus,
    /// Dashboard token checks.
    pub verifier: Arc<TokenVerifier>,
    /// Metrics.
    pub metrics: Arc<HubMetrics>,
    /// Fires when the hub stops; sessions close with 1001 (going away).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Browser origins allowed to open `/ws` besides the hub's own.
    pub allowed_origins: Arc<Vec<String>>,
    /// Revoked token ids (kept current by `revocation::watch`).
    pub revoked_tokens: tokio::sync::watch::Receiver<crate::revocation::RevokedTokens>,
    /// Which wards live dashboards are watching (for "nobody watching" escalation).
    pub watchers: Arc<crate::notify::Watchers>,
    /// Patient pseudonyms for audit entries written here.
    pub pseudonyms: Arc<crate::audit::Pseudonymiser>,
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(web::index))
        .route("/app.js", get(web::script))
        .route("/app.css", get(web::style))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/ws", get(ws::upgrade))
        .route("/api/patients/{patient}/settings", put(settings::put))
        .route("/api/audit", get(audit::get))
        .route("/api/audit/head", get(audit::head))
        .route("/api/notifications", get(notifications::get))
        .route("/api/patients/{patient}/history", get(history::patient))
        .route("/api/wards/{ward}/history", get(history::ward))
        .with_state(state)
}

async fn healthz(State(app): State<AppState>) -> impl IntoResponse {
    if app.metrics.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics_text(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.registry.render(),
    )
}
