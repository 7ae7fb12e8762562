//! Reading a TOML configuration file into typed settings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use wardlink_shared::config::{ConfigError, parse_toml};

/// Reads and parses `path`. Errors name the file, the key and the reason.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        key: "-".into(),
        reason: format!("cannot read: {e}"),
    })?;
    parse_toml(&file, &text)
}

/// Makes each relative path relative to the directory of the config file at `config`.
pub fn resolve_relative(config: &Path, paths: &mut [&mut PathBuf]) {
    let base = config.parent().unwrap_or(Path::new("."));
    for p in paths.iter_mut() {
        if p.is_relative() {
            **p = base.join(&**p);
        }
    }
}

/// The variables among `keys` that are set in the process environment.
pub fn env_overrides(keys: &[&str]) -> HashMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| keys.contains(&k.as_str()))
        .collect()
}

/// Parses an override; a bad value is a [`ConfigError`] naming the variable.
pub fn parse_override<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| ConfigError {
        file: "environment".into(),
        key: key.into(),
        reason: e.to_string(),
    })
}
