//! Time for the edge's drivers. The shared core never reads a clock; this is the one place
//! the edge does.

use wardlink_shared::time::{Millis, Now};

/// Both clocks, read together: the monotonic one for the alarm engine's timers, the wall
/// clock for stamps.
pub fn now() -> Now {
    Now {
        mono: std::time::Instant::now(),
        wall: now_ms(),
    }
}

/// Milliseconds since the Unix epoch. A clock before 1970 reads as 0.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
        })
}
