//! Timestamps: milliseconds since the Unix epoch, with RFC 3339 parsing and formatting.
//!
//! All clinical logic works on [`Millis`]; the text form only exists at the edges of the system
//! (device payloads in, dashboard messages out).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

/// The two clocks at one instant, as a driver reads them and hands them to the core (which
/// never reads a clock itself).
///
/// `mono` runs every timer (alarm delays, confirmations, `signal_lost`, silences, reminders):
/// it never steps. `wall` only stamps what is recorded; a Raspberry Pi without a real-time
/// clock steps it when NTP syncs, by hours or days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub mono: std::time::Instant,
    /// Wall-clock time, ms since the Unix epoch.
    pub wall: Millis,
}

impl Now {
    /// `wall`, a wall-clock instant (ms), on the monotonic clock: as far before or after
    /// `mono` as it is before or after `self.wall`. Earlier than the monotonic clock can say
    /// (before the machine started) reads as `mono` minus as much as it can.
    pub fn mono_of(&self, wall: Millis) -> std::time::Instant {
        let offset = std::time::Duration::from_millis(wall.abs_diff(self.wall));
        if wall >= self.wall {
            self.mono + offset
        } else {
            self.mono.checked_sub(offset).unwrap_or(self.mono)
        }
    }

    /// Milliseconds from `then` to this instant on the monotonic clock (0 if `then` is later).
    pub fn since(&self, then: std::time::Instant) -> Millis {
        Millis::try_from(self.mono.saturating_duration_since(then).as_millis())
            .unwrap_or(Millis::MAX)
    }
}

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

/// Parses a duration such as `250ms`, `3s`, `15m`, `8h` or `1d`. A bare number is seconds.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return None,
    };
    std::time::Duration::try_from_secs_f64(secs).ok()
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
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("3s"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("8h"), Some(Duration::from_secs(8 * 3600)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("3w"), None);
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339(""), None);
    }
}
