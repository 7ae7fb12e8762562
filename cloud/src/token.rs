//! Dashboard tokens at the hub: issuing them (`wardlink-cloud token`) and the hub's verifier,
//! loaded from its key files. The token format and its checks live in
//! [`wardlink_shared::token`], which edges use too.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use wardlink_shared::WardId;
pub use wardlink_shared::token::{Claims, Role, TokenError, TokenVerifier};

use crate::config::AuthSection;

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

/// The hub's public keys as (key id, PEM): the current one and those of a rollover. Edges get
/// them over the control stream to check the same tokens on their ward view.
pub fn public_keys(auth: &AuthSection) -> Result<Vec<(String, String)>, TokenError> {
    let mut keys = vec![(auth.key_id.as_str(), auth.jwt_public_key.as_path())];
    keys.extend(
        auth.previous_keys
            .iter()
            .map(|k| (k.id.as_str(), k.public_key.as_path())),
    );
    keys.into_iter()
        .map(|(id, path)| {
            let pem = String::from_utf8(read_key(path)?).map_err(|e| TokenError::Key {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            Ok((id.to_owned(), pem))
        })
        .collect()
}

/// The verifier of the hub configured by `auth`: its current key and the previous ones.
pub fn hub_verifier(auth: &AuthSection) -> Result<TokenVerifier, TokenError> {
    let keys = public_keys(auth)?;
    let pems: Vec<(&str, &str, &[u8])> = keys
        .iter()
        .map(|(id, pem)| (id.as_str(), "jwt public key", pem.as_bytes()))
        .collect();
    TokenVerifier::from_pems(&pems, &auth.issuer, &auth.audience)
}

/// Loads a verifier from Ed25519 public key files by key id.
pub fn load_verifier(
    keys: &[(&str, &Path)],
    issuer: &str,
    audience: &str,
) -> Result<TokenVerifier, TokenError> {
    let mut pems = Vec::with_capacity(keys.len());
    for (id, path) in keys {
        pems.push((*id, path.display().to_string(), read_key(path)?));
    }
    let pems: Vec<(&str, &str, &[u8])> = pems
        .iter()
        .map(|(id, origin, pem)| (*id, origin.as_str(), pem.as_slice()))
        .collect();
    TokenVerifier::from_pems(&pems, issuer, audience)
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
        let verifier = load_verifier(
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
            (with(&|c| c.sub = "ann\nadmin".into()), "control"),
            (with(&|c| c.sub = "ann\u{7}".into()), "control"),
            (with(&|c| c.jti = "x\r".into()), "control"),
            (with(&|c| c.sub = "a".repeat(129)), "too long"),
            (with(&|c| c.sub = "ann\u{202E}nimda".into()), "invisible"),
            (with(&|c| c.sub = "\u{200B}".into()), "invisible"),
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
        let both = load_verifier(
            &[("k2", new_pub.as_path()), ("k1", old_pub.as_path())],
            "wardlink-hub",
            "wardlink-dashboard",
        )
        .unwrap();
        assert!(both.verify(&issue(&old, "k1")).is_ok());
        assert!(both.verify(&issue(&new, "k2")).is_ok());
        // A token signed with the new key but naming the old kid does not verify.
        assert!(both.verify(&issue(&new, "k1")).is_err());
        let after = load_verifier(
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
