//! Revoked edges and dashboard tokens.
//!
//! `wardlink-cloud revoke --edge ID` adds the edge id to `<data_dir>/revoked_edges.json`;
//! `wardlink-cloud revoke-token --token JWT` adds the token's id (`jti`, with its expiry) to
//! `<data_dir>/revoked_tokens.json`. Both files are written atomically. The running hub checks
//! them every [`POLL`], so a revocation takes effect within that time without a restart: the
//! edge's open connection, or the token's open sessions, are closed and later attempts refused.
//!
//! Edge revocation is by edge id (the certificate's CN), so re-enrolling the same id does not
//! undo it: an edge is brought back with `wardlink-cloud revoke --edge ID --restore`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wardlink_shared::EdgeId;

use crate::config::CloudConfig;

/// How often the running hub looks at the file.
pub const POLL: Duration = Duration::from_millis(500);

/// The set of revoked edges, as the hub currently knows it.
pub type Revoked = Arc<BTreeSet<EdgeId>>;
/// Revoked token ids with their expiry (seconds since the epoch), as the hub knows them.
pub type RevokedTokens = Arc<BTreeMap<String, u64>>;

/// The revocation list could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not what it should hold.
    #[error("{path}: malformed: {source}")]
    Malformed {
        /// The file.
        path: String,
        /// The cause.
        source: serde_json::Error,
    },
}

/// Where the hub configured by `cfg` keeps its revocation list.
pub fn path(cfg: &CloudConfig) -> PathBuf {
    cfg.hub.data_dir.join("revoked_edges.json")
}

/// Where the hub configured by `cfg` keeps its revoked token ids.
pub fn tokens_path(cfg: &CloudConfig) -> PathBuf {
    cfg.hub.data_dir.join("revoked_tokens.json")
}

/// The list in `path` (empty if the file does not exist).
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> Result<T, RevocationError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| RevocationError::Malformed {
            path: path.display().to_string(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(RevocationError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Revokes `edge` (or, with `restore`, lifts its revocation). Returns whether the list
/// changed.
pub fn set(cfg: &CloudConfig, edge: &EdgeId, restore: bool) -> Result<bool, RevocationError> {
    let path = path(cfg);
    let mut revoked: BTreeSet<EdgeId> = load(&path)?;
    let changed = if restore {
        revoked.remove(edge)
    } else {
        revoked.insert(edge.clone())
    };
    if changed {
        save(&path, &revoked)?;
    }
    Ok(changed)
}

/// Tokens are accepted this long past `exp` (the verifier's leeway): they stay listed as long.
const LEEWAY_S: u64 = 60;

/// Revokes the token with id `jti`, valid until `exp`; ids of tokens expired by `now` are
/// dropped from the list. Returns whether `jti` was newly revoked.
pub fn revoke_token(
    cfg: &CloudConfig,
    jti: &str,
    exp: u64,
    now: u64,
) -> Result<bool, RevocationError> {
    let path = tokens_path(cfg);
    let mut revoked: BTreeMap<String, u64> = load(&path)?;
    revoked.retain(|_, e| e.saturating_add(LEEWAY_S) >= now);
    let added = revoked.insert(jti.to_owned(), exp).is_none();
    save(&path, &revoked)?;
    Ok(added)
}

fn save(path: &Path, value: &impl serde::Serialize) -> Result<(), RevocationError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| RevocationError::Malformed {
        path: path.display().to_string(),
        source,
    })?;
    wardlink_io::fs::write_atomic(path, &bytes).map_err(|source| RevocationError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Loads the list at `path` and keeps it current until `shutdown`. A file that cannot be read
/// keeps the last good list (and is logged): a broken edit never un-revokes anyone.
pub fn watch<T: DeserializeOwned + Default + Send + Sync + 'static>(
    path: PathBuf,
    shutdown: CancellationToken,
) -> Result<(watch::Receiver<Arc<T>>, impl Future<Output = ()>), RevocationError> {
    let first: T = load(&path)?;
    let (tx, rx) = watch::channel(Arc::new(first));
    let task = async move {
        // The write is a rename, so a new inode marks a change even within one mtime tick.
        let stamp = |p: &Path| {
            std::fs::metadata(p).ok().map(|m| {
                #[cfg(unix)]
                let inode = std::os::unix::fs::MetadataExt::ino(&m);
                #[cfg(not(unix))]
                let inode = 0u64;
                (
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.len(),
                    inode,
                )
            })
        };
        let mut seen = stamp(&path);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
            let now = stamp(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match load::<T>(&path) {
                Ok(list) => {
                    tracing::info!(path = %path.display(), "revocation list reloaded");
                    tx.send_replace(Arc::new(list));
                }
                Err(e) => {
                    tracing::error!(error = %e, "revocation list unreadable; keeping the last one")
                }
            }
        }
    };
    Ok((rx, task))
}
