//! The admin listener: `/healthz` for supervisors and load balancers, `/metrics` for Prometheus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use tokio::sync::watch;
use wardlink_shared::alarm::ActiveAlarm;

use crate::metrics::EdgeMetrics;

/// `[admin]` in `edge.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// `/healthz` and `/metrics`. Loopback by default: it is for the box's operator.
    pub listen: SocketAddr,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9180)),
        }
    }
}

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Metrics and readiness.
    pub metrics: Arc<EdgeMetrics>,
    /// The alarm episodes active at this edge.
    pub active: watch::Receiver<Vec<ActiveAlarm>>,
}

/// The admin routes: `/healthz`, `/metrics`, and `/alarms` (the active episodes as JSON, with
/// who acknowledged each, so an operator can see the edge agrees with the hub).
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/alarms", get(alarms))
        .with_state(state)
}

async fn alarms(State(s): State<AdminState>) -> impl IntoResponse {
    let active = s.active.borrow().clone();
    axum::Json(active)
}

async fn healthz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.metrics.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.registry.render(),
    )
}
