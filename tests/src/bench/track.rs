//! Which reading was sent when, and which receiver saw it how often.
//!
//! Every reading is identified by its patient and its `ts`: reading `k` of patient `p` carries
//! `ts = base + k` milliseconds, so the receiver recovers `(p, k)` from what any system forwards
//! (the hub's `vitals` event, Node-RED's message, an MQTT delivery) without the payload carrying
//! anything a real monitor would not send. The send instant is stored per reading; the latency
//! is receive instant minus send instant, on one monotonic clock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;

/// Histogram shards: receivers record into `shard[receiver % SHARDS]`, so thousands of
/// receivers share a few histograms without contending on one lock.
const SHARDS: usize = 16;

/// Highest latency the histograms track: one minute, in nanoseconds.
const MAX_NS: u64 = 60_000_000_000;

/// A new latency histogram in nanoseconds with three significant figures.
pub fn histogram() -> Histogram<u64> {
    // Bounds are constants within hdrhistogram's limits.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds")
}

/// Patient id of patient `p` in a run.
pub fn patient_id(p: usize) -> String {
    format!("bench-{p:05}")
}

/// Patient index of a patient id made by [`patient_id`].
pub fn patient_index(id: &str) -> Option<usize> {
    id.strip_prefix("bench-")?.parse().ok()
}

/// Send-side bookkeeping of one measured phase.
pub struct Tracker {
    epoch: Instant,
    base_ms: i64,
    patients: usize,
    per_patient: usize,
    /// Readings `k < warmup` are counted for loss but not for latency.
    warmup: usize,
    /// Send instant of each reading in ns since `epoch`, plus one (0 = never sent).
    sent_at: Vec<AtomicU64>,
    sent_per_patient: Vec<AtomicU32>,
    shards: Vec<Mutex<Histogram<u64>>>,
    /// Largest delay of a send behind its schedule, ns (the generator falling behind).
    max_lag_ns: AtomicU64,
}

impl Tracker {
    /// Room for `per_patient` readings of each of `patients`, stamped from `base_ms`.
    pub fn new(patients: usize, per_patient: usize, warmup: usize, base_ms: i64) -> Self {
        Self {
            epoch: Instant::now(),
            base_ms,
            patients,
            per_patient,
            warmup,
            sent_at: (0..patients * per_patient)
                .map(|_| AtomicU64::new(0))
                .collect(),
            sent_per_patient: (0..patients).map(|_| AtomicU32::new(0)).collect(),
            shards: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
            max_lag_ns: AtomicU64::new(0),
        }
    }

    /// Records how late a send was against its schedule.
    pub fn lagged(&self, lag: std::time::Duration) {
        let ns = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX);
        self.max_lag_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// The largest send lag, ms.
    pub fn max_lag_ms(&self) -> f64 {
        self.max_lag_ns.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Readings scheduled in this phase, all patients.
    pub fn scheduled(&self) -> u64 {
        (self.patients * self.per_patient) as u64
    }

    /// Readings each patient sends before latencies are recorded.
    pub fn warmup(&self) -> usize {
        self.warmup
    }

    /// Readings each patient sends in this phase.
    pub fn per_patient(&self) -> usize {
        self.per_patient
    }

    /// Nanoseconds since the tracker was made.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The payload of reading `k` of patient `p`: an ordinary reading in the contract's
    /// JSON, normal values (no alarm), stamped `base + k` ms.
    pub fn payload(&self, p: usize, k: usize) -> String {
        let ts = wardlink_shared::time::format_rfc3339(self.base_ms + k as i64);
        let hr = 68 + (p + k) % 8;
        format!(r#"{{"ts":"{ts}","hr":{hr},"spo2":97,"rr":16,"temp":36.8}}"#)
    }

    /// Records that reading `k` of patient `p` is being sent now.
    pub fn mark_sent(&self, p: usize, k: usize) {
        if p >= self.patients || k >= self.per_patient {
            return;
        }
        if let Some(slot) = self.sent_at.get(p * self.per_patient + k) {
            slot.store(self.now_ns() + 1, Ordering::Relaxed);
            self.sent_per_patient[p].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Readings sent so far, all patients.
    pub fn sent(&self) -> u64 {
        self.sent_per_patient
            .iter()
            .map(|n| u64::from(n.load(Ordering::Relaxed)))
            .sum()
    }

    /// Readings of patient `p` sent so far.
    pub fn sent_by(&self, p: usize) -> u64 {
        self.sent_per_patient
            .get(p)
            .map_or(0, |n| u64::from(n.load(Ordering::Relaxed)))
    }

    /// Patients in this phase.
    pub fn patients(&self) -> usize {
        self.patients
    }

    /// The merged latency histogram of every receiver.
    pub fn latency(&self) -> Histogram<u64> {
        let mut all = histogram();
        for shard in &self.shards {
            if let Ok(h) = shard.lock() {
                // Same bounds on both sides: adding cannot fail.
                let _ = all.add(&*h);
            }
        }
        all
    }
}

/// What one receiver (a dashboard or an MQTT subscriber) saw.
pub struct Seen {
    shard: usize,
    bits: Vec<u64>,
    /// Distinct readings received.
    pub unique: u64,
    /// Readings received more than once (each extra copy counts).
    pub duplicated: u64,
    /// Messages that were not a reading of this phase.
    pub other: u64,
    /// Samples waiting to be merged into the shared histogram.
    pending: Vec<u64>,
}

impl Seen {
    /// A receiver numbered `n`.
    pub fn new(tracker: &Tracker, n: usize) -> Self {
        Self {
            shard: n % SHARDS,
            bits: vec![0; (tracker.patients * tracker.per_patient).div_ceil(64)],
            unique: 0,
            duplicated: 0,
            other: 0,
            pending: Vec::with_capacity(64),
        }
    }

    /// Records reading `(patient, ts)` received now.
    pub fn receive(&mut self, tracker: &Tracker, patient: &str, ts: &str) {
        let now = tracker.now_ns();
        let Some(p) = patient_index(patient).filter(|p| *p < tracker.patients) else {
            self.other += 1;
            return;
        };
        let Some(k) = wardlink_shared::time::parse_rfc3339(ts)
            .map(|ms| ms - tracker.base_ms)
            .and_then(|k| usize::try_from(k).ok())
            .filter(|k| *k < tracker.per_patient)
        else {
            self.other += 1;
            return;
        };
        let index = p * tracker.per_patient + k;
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        if self.bits[word] & bit != 0 {
            self.duplicated += 1;
            return;
        }
        self.bits[word] |= bit;
        self.unique += 1;
        let sent = tracker.sent_at[index].load(Ordering::Relaxed);
        if sent > 0 && k >= tracker.warmup {
            self.pending.push(now.saturating_sub(sent - 1).max(1));
            if self.pending.len() == self.pending.capacity() {
                self.flush(tracker);
            }
        }
    }

    /// Merges pending samples into the shared histogram.
    pub fn flush(&mut self, tracker: &Tracker) {
        if self.pending.is_empty() {
            return;
        }
        if let Ok(mut h) = tracker.shards[self.shard].lock() {
            for v in self.pending.drain(..) {
                h.saturating_record(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_counts_unique_duplicates_and_strangers() {
        let t = Tracker::new(3, 4, 0, 1_800_000_000_000);
        t.mark_sent(1, 2);
        let ts = wardlink_shared::time::format_rfc3339(1_800_000_000_002);
        let mut seen = Seen::new(&t, 0);
        seen.receive(&t, &patient_id(1), &ts);
        seen.receive(&t, &patient_id(1), &ts);
        seen.receive(&t, "someone-else", &ts);
        seen.receive(&t, &patient_id(1), "2026-01-01T00:00:00Z");
        seen.flush(&t);
        assert_eq!((seen.unique, seen.duplicated, seen.other), (1, 1, 2));
        assert_eq!(t.sent(), 1);
        assert_eq!(t.latency().len(), 1);
    }

    #[test]
    fn payload_round_trips_its_identity() {
        let t = Tracker::new(2, 10, 0, 1_800_000_000_000);
        let payload = t.payload(1, 7);
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
        let ms = wardlink_shared::time::parse_rfc3339(v["ts"].as_str().unwrap()).unwrap();
        assert_eq!(ms - 1_800_000_000_000, 7);
        assert_eq!(patient_index(&patient_id(1234)), Some(1234));
    }
}
