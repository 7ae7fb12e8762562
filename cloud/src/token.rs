//! Dashboard tokens: Ed25519-signed JWTs naming a user, a role and the wards it may see.
//!
//! Verification pins the algorithm (EdDSA only: no `none`, no HMAC confusion), requires `exp`,
//! `iss`, `aud` and `sub`, and checks `nbf` when present (RFC 8725). It also refuses a token
//! without `jti` (it could never be revoked) and one whose `sub` is empty, too long or holds
//! control characters (it names the person in the audit log and on every dashboard).

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use wardlink_shared::WardId;

use crate::config::AuthSection;

/// Clock skew tolerated between the token issuer and the hub.
const LEEWAY_S: u64 = 30;
/// The longest `sub` and `jti` accepted.
const MAX_CLAIM_CHARS: usize = 128;

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

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Signature, expiry, issuer, audience or shape is wrong.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// The token names no key id, or one this hub does not know (RFC 8725 §3.10: keys are
    /// chosen by the verifier, never by the token).
    #[error("invalid token: unknown or missing key id")]
    UnknownKey,
    /// A claim the signature covers is unusable (see the module comment).
    #[error("invalid token: {0}")]
    Claim(&'static str),
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
    key_id: String,
    issuer: String,
    audience: String,
}

impl TokenIssuer {
    /// The issuer of the hub configured by `auth`: its current key and key id.
    pub fn for_hub(auth: &AuthSection) -> Result<Self, TokenError> {
        Self::load(
            &auth.jwt_private_key,
            &auth.key_id,
            &auth.issuer,
            &auth.audience,
        )
    }

    /// Loads the Ed25519 private key; tokens name it as `key_id`.
    pub fn load(
        path: &Path,
        key_id: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, TokenError> {
        let pem = read_key(path)?;
        let key = EncodingKey::from_ed_pem(&pem).map_err(|e| TokenError::Key {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            key,
            key_id: key_id.into(),
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
            jti: new_jti(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key_id.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

/// A random token id.
fn new_jti() -> String {
    let bytes: [u8; 12] = rand::RngExt::random(&mut rand::rng());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `jti` and `exp` a token claims, read without verifying it (to revoke a token one
/// holds).
pub fn peek(token: &str) -> Option<(String, u64)> {
    let claims = jsonwebtoken::dangerous::insecure_decode::<Claims>(token)
        .ok()?
        .claims;
    (!claims.jti.is_empty()).then_some((claims.jti, claims.exp))
}

/// Verifies tokens (used by the hub).
pub struct TokenVerifier {
    /// (key id, key): the current key and those still valid during a rollover.
    keys: Vec<(String, DecodingKey)>,
    validation: Validation,
}

impl TokenVerifier {
    /// The verifier of the hub configured by `auth`: its current key and the previous ones.
    pub fn for_hub(auth: &AuthSection) -> Result<Self, TokenError> {
        let mut keys = vec![(auth.key_id.as_str(), auth.jwt_public_key.as_path())];
        keys.extend(
            auth.previous_keys
                .iter()
                .map(|k| (k.id.as_str(), k.public_key.as_path())),
        );
        Self::load(&keys, &auth.issuer, &auth.audience)
    }

    /// Loads Ed25519 public keys by key id.
    pub fn load(keys: &[(&str, &Path)], issuer: &str, audience: &str) -> Result<Self, TokenError> {
        let mut loaded = Vec::with_capacity(keys.len());
        for (id, path) in keys {
            let pem = read_key(path)?;
            let key = DecodingKey::from_ed_pem(&pem).map_err(|e| TokenError::Key {
                path: path.display().to_string(),
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
    /// this hub's; the algorithm is pinned to EdDSA whatever the header says.
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
        !s.is_empty() && s.chars().count() <= MAX_CLAIM_CHARS && !s.chars().any(char::is_control)
    };
    if claims.jti.is_empty() {
        return Err(TokenError::Claim(
            "no jti: the token could never be revoked",
        ));
    }
    if !usable(&claims.jti) {
        return Err(TokenError::Claim("jti too long or with control characters"));
    }
    if !usable(&claims.sub) || claims.sub.trim().is_empty() {
        return Err(TokenError::Claim(
            "sub empty, too long or with control characters",
        ));
    }
    Ok(())
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
            "k1",
            "wardlink-hub",
            "wardlink-dashboard",
        )
        .unwrap();
        let pub_key = dir.path().join("jwt.pub");
        let verifier = TokenVerifier::load(
            &[("k1", pub_key.as_path())],
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
            "k1",
            "wardlink-hub",
            "wardlink-dashboard",
        )
        .unwrap()
        .issue("eve", Role::Admin, vec![], now(), Duration::from_secs(60))
        .unwrap();
        assert!(verifier.verify(&foreign).is_err());

        let wrong_aud = TokenIssuer::load(
            &dir.path().join("jwt.key"),
            "k1",
            "wardlink-hub",
            "elsewhere",
        )
        .unwrap()
        .issue("ann", Role::Admin, vec![], now(), Duration::from_secs(60))
        .unwrap();
        assert!(verifier.verify(&wrong_aud).is_err());

        // alg=none with the same claims.
        let body = t.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{body}.");
        assert!(verifier.verify(&none).is_err());
        assert!(verifier.verify("garbage").is_err());

        // The public key used as an HMAC secret (algorithm confusion).
        let claims = verifier.verify(&t).unwrap();
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some("k1".into());
        let pem = std::fs::read(&pub_key).unwrap();
        let confused = jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(&pem)).unwrap();
        assert!(verifier.verify(&confused).is_err());

        // No kid, or one the hub does not know.
        let key =
            EncodingKey::from_ed_pem(&std::fs::read(dir.path().join("jwt.key")).unwrap()).unwrap();
        let no_kid = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key).unwrap();
        assert!(matches!(
            verifier.verify(&no_kid),
            Err(TokenError::UnknownKey)
        ));
        let mut other_kid = Header::new(Algorithm::EdDSA);
        other_kid.kid = Some("k9".into());
        let unknown = jsonwebtoken::encode(&other_kid, &claims, &key).unwrap();
        assert!(matches!(
            verifier.verify(&unknown),
            Err(TokenError::UnknownKey)
        ));

        // exp as a string is not a time.
        let text = serde_json::json!({
            "sub": "ann", "role": "nurse", "wards": ["icu"], "iss": "wardlink-hub",
            "aud": "wardlink-dashboard", "iat": now(), "nbf": now(), "exp": (now() + 60).to_string(),
        });
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some("k1".into());
        let stringly = jsonwebtoken::encode(&h, &text, &key).unwrap();
        assert!(verifier.verify(&stringly).is_err());

        // Signed by the hub's key, but unusable: no jti, an empty sub, control characters.
        let with = |f: &dyn Fn(&mut Claims)| {
            let mut c = claims.clone();
            f(&mut c);
            jsonwebtoken::encode(&h, &c, &key).unwrap()
        };
        for (token, what) in [
            (with(&|c| c.jti.clear()), "no jti"),
            (with(&|c| c.sub.clear()), "sub empty"),
            (with(&|c| c.sub = "  ".into()), "sub empty"),
            (with(&|c| c.sub = "ann\nadmin".into()), "control characters"),
            (with(&|c| c.sub = "ann\u{7}".into()), "control characters"),
            (with(&|c| c.jti = "x\r".into()), "control characters"),
            (with(&|c| c.sub = "a".repeat(129)), "too long"),
        ] {
            match verifier.verify(&token) {
                Err(e @ TokenError::Claim(_)) => assert!(e.to_string().contains(what), "{e}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        assert!(
            verifier
                .verify(&with(&|c| c.sub = "Ann O'Neil-Łukasz".into()))
                .is_ok()
        );

        // Every token has its own id, which `peek` reads without the key.
        let (jti, exp) = peek(&t).unwrap();
        assert_eq!(jti, claims.jti);
        assert_eq!(exp, claims.exp);
        assert_ne!(peek(&t), peek(&wrong_aud));
    }

    #[test]
    fn two_keys_are_valid_during_a_rollover() {
        let old = tempfile::tempdir().unwrap();
        pki::init(old.path(), &pki::InitOptions::default()).unwrap();
        let new = tempfile::tempdir().unwrap();
        pki::init(new.path(), &pki::InitOptions::default()).unwrap();
        let issue = |dir: &tempfile::TempDir, kid: &str| {
            TokenIssuer::load(
                &dir.path().join("jwt.key"),
                kid,
                "wardlink-hub",
                "wardlink-dashboard",
            )
            .unwrap()
            .issue("ann", Role::Admin, vec![], now(), Duration::from_secs(60))
            .unwrap()
        };
        let (old_pub, new_pub) = (old.path().join("jwt.pub"), new.path().join("jwt.pub"));
        let both = TokenVerifier::load(
            &[("k2", new_pub.as_path()), ("k1", old_pub.as_path())],
            "wardlink-hub",
            "wardlink-dashboard",
        )
        .unwrap();
        assert!(both.verify(&issue(&old, "k1")).is_ok());
        assert!(both.verify(&issue(&new, "k2")).is_ok());
        // A token signed with the new key but naming the old kid does not verify.
        assert!(both.verify(&issue(&new, "k1")).is_err());
        let after = TokenVerifier::load(
            &[("k2", new_pub.as_path())],
            "wardlink-hub",
            "wardlink-dashboard",
        )
        .unwrap();
        assert!(matches!(
            after.verify(&issue(&old, "k1")),
            Err(TokenError::UnknownKey)
        ));
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
            jti: String::new(),
        };
        assert!(!c.may_see(&WardId::new("icu").unwrap()));
        let admin = Claims {
            role: Role::Admin,
            ..c
        };
        assert!(admin.may_see(&WardId::new("icu").unwrap()));
    }
}
