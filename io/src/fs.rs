//! Durable, private small-file writes: write a temporary file readable by its owner only, fsync
//! it, rename it over the target, fsync the directory. A crash leaves either the old file or
//! the new one, never a torn one. Everything written this way holds patient data, device
//! password hashes or secrets, so it is `0600`, and data directories `0700`.

use std::io::Write as _;
use std::path::Path;

/// Replaces `path` with `bytes` atomically and durably (mode `0600`), creating the directory if
/// needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp)?;
    // A temporary file left by an older version may have wider permissions.
    restrict(&tmp, 0o600)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable only once the directory entry is.
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Creates the data directory `dir` (and its parents) if needed, readable by its owner only
/// (`0700`); an existing one open to others is closed to them. Returns whether it had to be.
pub fn private_dir(dir: &Path) -> std::io::Result<bool> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    restrict(dir, 0o700)
}

/// Sets `path`'s mode to `mode` if it grants more; returns whether it did.
pub fn restrict(path: &Path, mode: u32) -> std::io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if current & !mode != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            return Ok(true);
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(false)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn files_and_data_directories_are_private() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("data");
        assert!(!private_dir(&dir)?, "created private");
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        assert!(private_dir(&dir)?, "an open directory is closed");
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("devices.json");
        std::fs::write(&file, b"old")?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        write_atomic(&file, b"new")?;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file)?, b"new");
        Ok(())
    }
}
