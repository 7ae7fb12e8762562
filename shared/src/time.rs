//! Timestamps: milliseconds since the Unix epoch, with RFC 3339 parsing and formatting.
//!
//! All clinical logic works on [`Millis`]; the text form only exists at the edges of the system
//! (device payloads in, dashboard messages out).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

/// Parses an RFC 3339 timestamp into milliseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats milliseconds since the epoch as RFC 3339 in UTC with millisecond precision,
/// e.g. `2026-11-26T12:00:00.250Z`.
pub fn format_rfc3339(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            millis
        ),
        // Out of the representable range: only reachable from a corrupt record.
        Err(_) => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = parse_rfc3339("2026-11-26T12:00:00.250Z").unwrap();
        assert_eq!(ms, 1_795_694_400_250);
        assert_eq!(format_rfc3339(ms), "2026-11-26T12:00:00.250Z");
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let ms = parse_rfc3339("2026-11-26T13:00:00+01:00").unwrap();
        assert_eq!(format_rfc3339(ms), "2026-11-26T12:00:00.000Z");
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339(""), None);
    }
}
