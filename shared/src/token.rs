//! Dashboard tokens as the hub issues them and everyone checks them: Ed25519-signed JWTs
//! naming a user, a role and the wards it may see. The hub verifies them on its API; an edge
//! verifies the same tokens on its ward view, with the hub's public keys.
//!
//! Verification pins the algorithm (EdDSA only: no `none`, no HMAC confusion), requires `exp`,
//! `iss`, `aud` and `sub`, and checks `nbf` when present (RFC 8725). It also refuses a token
//! without `jti` (it could never be revoked) and one whose `sub` is empty, too long or holds
//! control or invisible (format) characters (it names the person in the audit log and on every
//! dashboard).
//!
//! Sans-IO: keys come in as PEM bytes; reading them from files is the caller's business.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::ids::WardId;

/// Clock skew tolerated between the token issuer and the verifier.
const LEEWAY_S: u64 = 30;
/// The longest `sub` and `jti` accepted.
const MAX_CLAIM_CHARS: usize = 128;

/// What a token holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Live data and alerts of their wards; may acknowledge and silence.
    Nurse,
    /// Same as nurse.
    Doctor,
    /// Everything, plus configuration.
    Admin,
    /// The audit log; no live patient data.
    Auditor,
}

impl Role {
    /// Whether this role sees every ward.
    pub fn all_wards(self) -> bool {
        matches!(self, Role::Admin | Role::Auditor)
    }

    /// Whether this role may receive live patient data.
    pub fn sees_live_data(self) -> bool {
        !matches!(self, Role::Auditor)
    }
}

/// The claims of a dashboard token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// Their role.
    pub role: Role,
    /// Wards they may see (ignored for roles that see all).
    #[serde(default)]
    pub wards: Vec<WardId>,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Expires at.
    pub exp: u64,
    /// Token id, for revocation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
}

impl Claims {
    /// Whether the holder may see `ward`'s live data.
    pub fn may_see(&self, ward: &WardId) -> bool {
        self.role.sees_live_data() && (self.role.all_wards() || self.wards.contains(ward))
    }
}

/// Why a token was refused, or a key not taken.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Signature, expiry, issuer, audience or shape is wrong.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// The token names no key id, or one this verifier does not know (RFC 8725 §3.10: keys
    /// are chosen by the verifier, never by the token).
    #[error("invalid token: unknown or missing key id")]
    UnknownKey,
    /// A claim the signature covers is unusable (see the module comment).
    #[error("invalid token: {0}")]
    Claim(&'static str),
    /// A key could not be read.
    #[error("{path}: {reason}")]
    Key {
        /// Where it came from (a file, or the hub).
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Verifies tokens.
pub struct TokenVerifier {
    /// (key id, key): the current key and those still valid during a rollover.
    keys: Vec<(String, DecodingKey)>,
    validation: Validation,
}

impl TokenVerifier {
    /// A verifier of tokens from `issuer` for `audience`, signed by one of `keys`: (key id,
    /// where the key came from (for errors), Ed25519 public key in PEM).
    pub fn from_pems(
        keys: &[(&str, &str, &[u8])],
        issuer: &str,
        audience: &str,
    ) -> Result<Self, TokenError> {
        let mut loaded = Vec::with_capacity(keys.len());
        for (id, origin, pem) in keys {
            let key = DecodingKey::from_ed_pem(pem).map_err(|e| TokenError::Key {
                path: (*origin).to_owned(),
                reason: e.to_string(),
            })?;
            loaded.push(((*id).to_owned(), key));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_S;
        Ok(Self {
            keys: loaded,
            validation,
        })
    }

    /// Checks a token and returns its claims. The key is the one the token's `kid` names among
    /// this verifier's; the algorithm is pinned to EdDSA whatever the header says.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let (_, key) = self
            .keys
            .iter()
            .find(|(id, _)| *id == kid)
            .ok_or(TokenError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)?.claims;
        check_claims(&claims)?;
        Ok(claims)
    }
}

/// The checks on claims that the JWT library does not make.
fn check_claims(claims: &Claims) -> Result<(), TokenError> {
    let usable = |s: &str| {
        !s.is_empty() && s.chars().count() <= MAX_CLAIM_CHARS && crate::plain::is_plain(s)
    };
    if claims.jti.is_empty() {
        return Err(TokenError::Claim(
            "no jti: the token could never be revoked",
        ));
    }
    if !usable(&claims.jti) {
        return Err(TokenError::Claim(
            "jti too long or with control or invisible characters",
        ));
    }
    if !usable(&claims.sub) || claims.sub.trim().is_empty() {
        return Err(TokenError::Claim(
            "sub empty, too long or with control or invisible characters",
        ));
    }
    Ok(())
}
