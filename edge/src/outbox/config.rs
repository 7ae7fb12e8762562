//! `[outbox]` in `edge.toml`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Settings;

/// `[outbox]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSection {
    /// Most records committed in one transaction.
    pub max_batch: usize,
    /// Most records in flight to the hub per lane before waiting for an ack.
    pub max_in_flight: u64,
    /// How long the first record of a group commit waits for others (ms). Records are
    /// forwarded to the hub meanwhile. A device's acknowledgement waits for the commit (or the
    /// hub's), so this bounds what a group commit adds to it.
    pub commit_window_ms: u64,
    /// Disk budget in bytes of stored records (0: none). Over it, the oldest telemetry is
    /// evicted (counted, and reported to the hub); alarms never are.
    pub max_bytes: u64,
    /// Records held in memory before they are committed. A slow disk makes appends wait at
    /// this bound; a failing one (full) makes the oldest telemetry held in memory go instead.
    pub max_memory_records: usize,
}

impl Default for OutboxSection {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            max_in_flight: 8192,
            commit_window_ms: 10,
            max_bytes: 1 << 30,
            max_memory_records: 100_000,
        }
    }
}

impl OutboxSection {
    /// The outbox's settings.
    pub fn settings(&self) -> Settings {
        Settings {
            max_batch: self.max_batch,
            commit_window: Duration::from_millis(self.commit_window_ms),
            max_bytes: self.max_bytes,
            max_memory_records: self.max_memory_records,
        }
    }

    /// The first key that is out of range, and why.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.max_batch == 0 {
            return Err(("outbox.max_batch", "must be at least 1"));
        }
        if self.max_in_flight == 0 {
            return Err(("outbox.max_in_flight", "must be at least 1"));
        }
        if self.commit_window_ms > 1000 {
            return Err((
                "outbox.commit_window_ms",
                "must be at most 1000 (device acknowledgements wait for the commit)",
            ));
        }
        if self.max_memory_records < self.max_batch {
            return Err((
                "outbox.max_memory_records",
                "must be at least outbox.max_batch",
            ));
        }
        Ok(())
    }
}
