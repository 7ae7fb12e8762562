//! Revoked edges. `wardlink-cloud revoke --edge ID` adds the edge id to
//! `<data_dir>/revoked_edges.json` (written atomically). The running hub checks the file every
//! [`POLL`], so a revocation takes effect within that time without a restart: the edge's open
//! connection is closed and every later handshake refused.
//!
//! Revocation is by edge id (the certificate's CN), so re-enrolling the same id does not undo
//! it: an edge is brought back with `wardlink-cloud revoke --edge ID --restore`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wardlink_shared::EdgeId;

use crate::config::CloudConfig;

/// How often the running hub looks at the file.
pub const POLL: Duration = Duration::from_millis(500);

/// The set of revoked edges, as the hub currently knows it.
pub type Revoked = Arc<BTreeSet<EdgeId>>;

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
    /// The file is not a JSON array of edge ids.
    #[error("{path}: not a list of edge ids: {source}")]
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

/// The revoked edges in `path` (none if the file does not exist).
pub fn load(path: &Path) -> Result<BTreeSet<EdgeId>, RevocationError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| RevocationError::Malformed {
            path: path.display().to_string(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
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
    let mut revoked = load(&path)?;
    let changed = if restore {
        revoked.remove(edge)
    } else {
        revoked.insert(edge.clone())
    };
    if changed {
        let bytes =
            serde_json::to_vec_pretty(&revoked).map_err(|source| RevocationError::Malformed {
                path: path.display().to_string(),
                source,
            })?;
        wardlink_io::fs::write_atomic(&path, &bytes).map_err(|source| RevocationError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(changed)
}

/// Loads the list at `path` and keeps it current until `shutdown`. A file that cannot be read
/// keeps the last good list (and is logged): a broken edit never un-revokes anyone.
pub fn watch(
    path: PathBuf,
    shutdown: CancellationToken,
) -> Result<(watch::Receiver<Revoked>, impl Future<Output = ()>), RevocationError> {
    let first = load(&path)?;
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
            match load(&path) {
                Ok(list) => {
                    tracing::info!(revoked = list.len(), "edge revocation list reloaded");
                    tx.send_replace(Arc::new(list));
                }
                Err(e) => {
                    tracing::error!(error = %e, "edge revocation list unreadable; keeping the last one")
                }
            }
        }
    };
    Ok((rx, task))
}
