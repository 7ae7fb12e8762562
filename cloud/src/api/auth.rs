//! Who is calling: the dashboard token from `Authorization: Bearer …` (or, for browsers'
//! WebSockets, `?token=`), verified before anything else happens.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::token::Claims;

/// A refusal: 401 (with `WWW-Authenticate: Bearer`) or 403, counted.
pub(super) fn refuse(app: &AppState, status: StatusCode, message: &str) -> Response {
    let reason = if status == StatusCode::UNAUTHORIZED {
        "unauthorized"
    } else {
        "forbidden"
    };
    app.metrics.ws_refused.with(reason).inc();
    let mut response = (status, format!("{message}\n")).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Why a caller is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unauthenticated {
    /// No token.
    Missing,
    /// A token that does not verify.
    Invalid,
    /// A token that was revoked.
    Revoked,
}

impl Unauthenticated {
    /// The 401 to answer.
    pub(super) fn respond(self, app: &AppState) -> Response {
        let message = match self {
            Unauthenticated::Missing => "missing token",
            Unauthenticated::Invalid => "invalid token",
            Unauthenticated::Revoked => "revoked token",
        };
        refuse(app, StatusCode::UNAUTHORIZED, message)
    }
}

/// The caller's verified claims.
pub(super) fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Claims, Unauthenticated> {
    let token = bearer(headers)
        .or(query_token)
        .ok_or(Unauthenticated::Missing)?;
    let claims = app.verifier.verify(token).map_err(|e| {
        tracing::debug!(error = %e, "dashboard token refused");
        Unauthenticated::Invalid
    })?;
    if app.revoked_tokens.borrow().contains_key(&claims.jti) {
        tracing::info!(user = %claims.sub, "revoked dashboard token refused");
        return Err(Unauthenticated::Revoked);
    }
    Ok(claims)
}
