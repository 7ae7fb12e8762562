//! Configuration errors and TOML parsing shared by both programs: a bad file is reported as
//! one line naming the file, the key and the reason.

/// A configuration problem: which file, which key, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    /// The file (or `environment`).
    pub file: String,
    /// The offending key, dotted.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses TOML into `T`, turning the parser's error into a [`ConfigError`] that names the key.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let key = e
            .span()
            .map(|span| key_at(text, span.start))
            .unwrap_or_else(|| "-".into());
        ConfigError {
            file: file.into(),
            key,
            reason: e.message().replace('\n', " "),
        }
    })
}

/// The dotted key of the line at byte `offset`: the nearest `[table]` header above it plus the
/// line's own key.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = text[line_start..line_end].trim();
    if line.starts_with('[') {
        return line
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_owned();
    }
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let own = line.split_once('=').map(|(k, _)| k.trim().to_owned());
    match (table, own) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (Some(t), None) => t,
        (None, Some(k)) => k,
        (None, None) => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_at_finds_table_and_key() {
        let text = "[a]\nx = 1\n[b.c]\ny = \"z\"\n";
        assert_eq!(key_at(text, text.find("y =").unwrap() + 4), "b.c.y");
        assert_eq!(key_at(text, 5), "a.x");
        assert_eq!(key_at(text, 1), "a");
    }
}
