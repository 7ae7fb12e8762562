//! Dashboard tokens: Ed25519-signed JWTs naming a user, a role and the wards it may see.
//!
//! Verification pins the algorithm (EdDSA only: no `none`, no HMAC confusion), requires `exp`,
//! `iss`, `aud` and `sub`, and checks `nbf` when present (RFC 8725).

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use wardlink_shared::WardId;

/// Clock skew tolerated between the token issuer and the hub.
const LEEWAY_S: u64 = 30;

/// What a token holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
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
}

impl Claims {
    /// Whether the holder may see `ward`'s live data.
    pub fn may_see(&self, ward: &WardId) -> bool {
        self.role.sees_live_data() && (self.role.all_wards() || self.wards.contains(ward))
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Signature, expiry, issuer, audience or shape is wrong.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// A key file could not be read.
    #[error("{path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

fn read_key(path: &Path) -> Result<Vec<u8>, TokenError> {
    std::fs::read(path).map_err(|e| TokenError::Key {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Signs tokens (used by `wardlink-cloud token`).
pub struct TokenIssuer {
    key: EncodingKey,
    issuer: String,
    audience: String,
}

impl TokenIssuer {
    /// Loads the Ed25519 private key.
    pub fn load(path: &Path, issuer: &str, audience: &str) -> Result<Self, TokenError> {
        let pem = read_key(path)?;
        let key = EncodingKey::from_ed_pem(&pem).map_err(|e| TokenError::Key {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            key,
            issuer: issuer.into(),
            audience: audience.into(),
        })
    }

    /// Issues a token valid from `now` (seconds since the epoch) for `ttl`.
    pub fn issue(
        &self,
        user: &str,
        role: Role,
        wards: Vec<WardId>,
        now: u64,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let claims = Claims {
            sub: user.into(),
            role,
            wards,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl.as_secs()),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &claims,
            &self.key,
        )?)
    }
}

/// Verifies tokens (used by the hub).
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    /// Loads the Ed25519 public key.
    pub fn load(path: &Path, issuer: &str, audience: &str) -> Result<Self, TokenError> {
        let pem = read_key(path)?;
        let key = DecodingKey::from_ed_pem(&pem).map_err(|e| TokenError::Key {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_S;
        Ok(Self { key, validation })
    }

    /// Checks a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        Ok(jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)?.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn issue_verify_and_refuse() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), &pki::InitOptions::default()).unwrap();
        let other = tempfile::tempdir().unwrap();
        pki::init(other.path(), &pki::InitOptions::default()).unwrap();
        let issuer = TokenIssuer::load(
            &dir.path().join("jwt.key"),
            "wardlink-hub",
            "wardlink-dashboard",
        )
        .unwrap();
        let verifier = TokenVerifier::load(
            &dir.path().join("jwt.pub"),
            "wardlink-hub",
            "wardlink-dashboard",
        )
        .unwrap();
        let ward = WardId::new("icu").unwrap();
        let t = issuer
            .issue(
                "ann",
                Role::Nurse,
                vec![ward.clone()],
                now(),
                Duration::from_secs(60),
            )
            .unwrap();
        let c = verifier.verify(&t).unwrap();
        assert_eq!(c.sub, "ann");
        assert!(c.may_see(&ward));
        assert!(!c.may_see(&WardId::new("er").unwrap()));

        let expired = issuer
            .issue(
                "ann",
                Role::Nurse,
                vec![],
                now() - 3600,
                Duration::from_secs(60),
            )
            .unwrap();
        assert!(verifier.verify(&expired).is_err());

        let foreign = TokenIssuer::load(
            &other.path().join("jwt.key"),
            "wardlink-hub",
            "wardlink-dashboard",
        )
        .unwrap()
        .issue("eve", Role::Admin, vec![], now(), Duration::from_secs(60))
        .unwrap();
        assert!(verifier.verify(&foreign).is_err());

        let wrong_aud = TokenIssuer::load(&dir.path().join("jwt.key"), "wardlink-hub", "elsewhere")
            .unwrap()
            .issue("ann", Role::Admin, vec![], now(), Duration::from_secs(60))
            .unwrap();
        assert!(verifier.verify(&wrong_aud).is_err());

        // alg=none with the same claims.
        let body = t.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{body}.");
        assert!(verifier.verify(&none).is_err());
        assert!(verifier.verify("garbage").is_err());
    }

    #[test]
    fn auditor_sees_no_live_data() {
        let c = Claims {
            sub: "a".into(),
            role: Role::Auditor,
            wards: vec![],
            iss: String::new(),
            aud: String::new(),
            iat: 0,
            nbf: 0,
            exp: 0,
        };
        assert!(!c.may_see(&WardId::new("icu").unwrap()));
        let admin = Claims {
            role: Role::Admin,
            ..c
        };
        assert!(admin.may_see(&WardId::new("icu").unwrap()));
    }
}
