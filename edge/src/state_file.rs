//! Small JSON state files in the data directory (devices' sessions, patients' own settings),
//! read once at start. Written with `wardlink_io::fs::write_atomic`.

use std::path::Path;

use serde::de::DeserializeOwned;

/// The state in `path`: the default if the file does not exist; if it cannot be read or
/// parsed, the default too, logged at ERROR with `consequence` (what running without it means),
/// because losing state silently is worse than starting without it loudly.
pub fn load_or_default<T: DeserializeOwned + Default>(path: &Path, consequence: &str) -> T {
    let failed = |error: &dyn std::fmt::Display| {
        tracing::error!(path = %path.display(), %error, "{consequence}");
        T::default()
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| failed(&e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => T::default(),
        Err(e) => failed(&e),
    }
}
