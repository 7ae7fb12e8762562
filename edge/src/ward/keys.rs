//! The hub's token keys at the edge: what the ward view checks dashboard tokens with. The hub
//! sends them on the control stream (at every connection and at every revocation); they are
//! kept in `token_keys.json` in the data directory, so the ward view keeps working through a
//! restart while the hub is unreachable. A token revoked while the link was up stays refused;
//! one revoked while it is down is refused once the link returns.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use wardlink_shared::token::{Claims, TokenError, TokenVerifier};
use wardlink_shared::wire::TokenKeys;

/// What checks tokens now.
pub struct Checker {
    verifier: Option<TokenVerifier>,
    revoked: HashSet<String>,
}

/// Why a token was refused at the ward view.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The edge has never heard the hub's keys.
    #[error("this ward view has no token keys yet: connect the edge to its hub once")]
    NoKeys,
    /// Bad signature, expiry, issuer, audience or claims.
    #[error(transparent)]
    Invalid(#[from] TokenError),
    /// Revoked at the hub.
    #[error("token revoked")]
    Revoked,
}

impl Checker {
    /// Checks `token`: its claims, or why not.
    pub fn verify(&self, token: &str) -> Result<Claims, Refused> {
        let verifier = self.verifier.as_ref().ok_or(Refused::NoKeys)?;
        let claims = verifier.verify(token)?;
        if self.revoked.contains(&claims.jti) {
            return Err(Refused::Revoked);
        }
        Ok(claims)
    }

    /// Whether the token id `jti` is revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.contains(jti)
    }

    fn build(keys: &TokenKeys) -> Result<Self, TokenError> {
        let pems: Vec<(&str, &str, &[u8])> = keys
            .keys
            .iter()
            .map(|(id, pem)| (id.as_str(), "the hub's token keys", pem.as_bytes()))
            .collect();
        Ok(Self {
            verifier: Some(TokenVerifier::from_pems(
                &pems,
                &keys.issuer,
                &keys.audience,
            )?),
            revoked: keys.revoked.iter().map(|(id, _)| id.clone()).collect(),
        })
    }
}

/// The keys in force, shared by the uplink (which updates them) and the ward view.
#[derive(Clone)]
pub struct Keys {
    path: PathBuf,
    current: Arc<watch::Sender<Arc<Checker>>>,
    last: Arc<std::sync::Mutex<TokenKeys>>,
}

impl Keys {
    /// The keys saved at `path` (none if there is no file; an unreadable one is logged).
    pub fn load(path: PathBuf) -> Self {
        let saved: TokenKeys = crate::state_file::load_or_default(
            &path,
            "token keys unreadable; the ward view refuses every token until the hub sends them",
        );
        let checker = if saved.keys.is_empty() {
            Checker {
                verifier: None,
                revoked: HashSet::new(),
            }
        } else {
            Checker::build(&saved).unwrap_or_else(|e| {
                tracing::error!(error = %e, "saved token keys unusable");
                Checker {
                    verifier: None,
                    revoked: HashSet::new(),
                }
            })
        };
        Self {
            path,
            current: Arc::new(watch::channel(Arc::new(checker)).0),
            last: Arc::new(std::sync::Mutex::new(saved)),
        }
    }

    /// The checker in force.
    pub fn checker(&self) -> Arc<Checker> {
        self.current.borrow().clone()
    }

    /// Watches the checker (a session closes when its token is revoked).
    pub fn watch(&self) -> watch::Receiver<Arc<Checker>> {
        self.current.subscribe()
    }

    /// Takes up what the hub sent, and saves it. Keys that do not parse are refused (logged)
    /// and the previous ones stay.
    pub async fn update(&self, keys: TokenKeys) {
        {
            let mut last = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *last == keys {
                return;
            }
            *last = keys.clone();
        }
        match Checker::build(&keys) {
            Ok(checker) => {
                self.current.send_replace(Arc::new(checker));
            }
            Err(e) => {
                tracing::error!(error = %e, "the hub sent unusable token keys; keeping the previous ones");
                return;
            }
        }
        let path = self.path.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let bytes = serde_json::to_vec_pretty(&keys).map_err(std::io::Error::other)?;
            wardlink_io::fs::write_atomic(&path, &bytes)
        })
        .await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::error!(
                "token keys not saved: after a restart without the hub, the ward view may refuse tokens or accept one revoked since"
            );
        }
    }
}
