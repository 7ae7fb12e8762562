//! Model-based tests of the outbox: seeded random operations (appends, acknowledgements,
//! reopenings) checked after every step against an in-memory model of what was appended.
//!
//! `OUTBOX_SEED=<n>` runs one seed; `OUTBOX_SEEDS=<n>` changes how many seeds are run. A seed
//! fixes the settings and the operations drawn, but not exactly the run: what a read returns
//! depends on how far the commit thread got, and acknowledgements name seqs that were read.
//! A failure prints its seed, the settings and the last operations.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::runtime::Runtime;
use wardlink_shared::alarm::{AlarmEvent, AlertState, Priority};
use wardlink_shared::ids::PatientId;
use wardlink_shared::vitals::{Reading, Vitals};
use wardlink_shared::wire::{Lane, Record, RecordBody};

use super::OutboxMetrics;
use super::{EPOCH_SHIFT, Outbox, Settings};

const SEEDS: u64 = 20;
const OPS: usize = 200;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A telemetry record identified by `id` (its timestamp and heart rate).
pub(super) fn vitals(id: i64) -> RecordBody {
    RecordBody::Vitals {
        reading: Reading {
            patient: PatientId::new("bed-1").expect("patient id"),
            ts: 1_795_694_400_000 + id,
            vitals: Vitals {
                hr: Some(40.0 + (id % 1000) as f32 / 10.0),
                spo2: Some(95.0),
                ..Vitals::default()
            },
        },
        news2: None,
    }
}

/// An alarm record identified by `id`.
pub(super) fn alarm(id: i64) -> RecordBody {
    RecordBody::Episode(AlarmEvent {
        id: format!("e-{id}"),
        patient: PatientId::new("bed-1").expect("patient id"),
        kind: "hr_high".into(),
        priority: Priority::High,
        state: AlertState::Raised,
        message: "HR high".into(),
        values: Vitals {
            hr: Some(181.0),
            ..Vitals::default()
        },
        ts: 1_795_694_400_000 + id,
        silenced: false,
        version: 1,
        current: Some(181.0),
        worst: Some(181.0),
        update: false,
    })
}

/// What the model knows of one lane.
#[derive(Default)]
struct LaneModel {
    /// Every record appended (acknowledged or not), by the seq the outbox gave it.
    data: BTreeMap<u64, RecordBody>,
    /// The epoch marker seqs: the head right after each open.
    markers: Vec<u64>,
    /// The highest seq acknowledged (what the hub stored).
    acked: u64,
    /// The highest seq handed out.
    head: u64,
    /// Seqs returned by the last full read: what an acknowledgement may name.
    last_read: Vec<u64>,
}

struct Harness {
    rt: Runtime,
    _dir: tempfile::TempDir,
    path: PathBuf,
    settings: Settings,
    outbox: Option<(Outbox, JoinHandle<()>)>,
    lanes: [LaneModel; 2],
    next_id: i64,
    epoch: u64,
    /// The outbox's stream id (0 before the first open).
    stream: u64,
    /// The operations done so far, printed when a check fails.
    log: Vec<String>,
}

impl Harness {
    fn new(settings: Settings) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("outbox.redb");
        let mut h = Harness {
            rt: runtime(),
            _dir: dir,
            path,
            settings,
            outbox: None,
            lanes: [LaneModel::default(), LaneModel::default()],
            next_id: 0,
            epoch: 0,
            stream: 0,
            log: Vec::new(),
        };
        h.open();
        h
    }

    fn outbox(&self) -> &Outbox {
        &self.outbox.as_ref().expect("outbox open").0
    }

    fn lane(&mut self, lane: Lane) -> &mut LaneModel {
        &mut self.lanes[usize::from(lane.index())]
    }

    fn heads(&self) -> super::Heads {
        *self.outbox().heads().borrow()
    }

    /// Opens the outbox (a new boot epoch) and checks the seqs it will give out are new.
    fn open(&mut self) {
        let opened = Outbox::open(&self.path, self.settings.clone(), OutboxMetrics::detached())
            .expect("open outbox");
        self.outbox = Some(opened);
        let heads = self.heads();
        let mut epoch = None;
        for lane in Lane::ALL {
            let h = heads.of(lane);
            let m = self.lane(lane);
            assert!(
                h > m.head,
                "{lane:?}: head {h:#x} after open is not above every seq given out before ({:#x})",
                m.head
            );
            assert_eq!(
                h & ((1 << EPOCH_SHIFT) - 1),
                0,
                "{lane:?}: head {h:#x} after open is not an epoch start"
            );
            m.head = h;
            m.markers.push(h);
            epoch.get_or_insert(h >> EPOCH_SHIFT);
            assert_eq!(epoch, Some(h >> EPOCH_SHIFT), "lanes in different epochs");
        }
        let epoch = epoch.unwrap_or_default();
        assert!(epoch > self.epoch, "epoch {epoch} reused");
        self.epoch = epoch;
        assert_ne!(heads.stream, 0, "no stream id");
        if self.stream != 0 {
            assert_eq!(
                heads.stream, self.stream,
                "the stream id changed on reopening"
            );
        }
        self.stream = heads.stream;
    }

    /// Drops the handle, waits for the commit thread to finish, and opens again.
    fn reopen(&mut self) {
        self.close();
        self.open();
    }

    fn close(&mut self) {
        let (outbox, thread) = self.outbox.take().expect("outbox open");
        drop(outbox);
        thread.join().expect("commit thread panicked");
    }

    /// Appends `kinds` (true: an alarm) and records the seqs they must get.
    fn append(&mut self, kinds: &[bool]) {
        let before = self.heads();
        let mut expect = [before.of(Lane::Alarms), before.of(Lane::Telemetry)];
        for lane in Lane::ALL {
            let m = &self.lanes[usize::from(lane.index())];
            assert_eq!(before.of(lane), m.head, "{lane:?}: head moved by itself");
        }
        let mut batch = Vec::new();
        for &is_alarm in kinds {
            self.next_id += 1;
            let body = if is_alarm {
                alarm(self.next_id)
            } else {
                vitals(self.next_id)
            };
            let i = usize::from(body.lane().index());
            expect[i] += 1;
            self.lanes[i].data.insert(expect[i], body.clone());
            batch.push(body);
        }
        let outbox = self.outbox().clone();
        self.rt
            .block_on(outbox.append(batch))
            .expect("append to an open outbox");
        let after = self.heads();
        for lane in Lane::ALL {
            let i = usize::from(lane.index());
            assert_eq!(
                after.of(lane),
                expect[i],
                "{lane:?}: an append of {} records moved the head from {:#x} to {:#x}",
                kinds.len(),
                before.of(lane),
                after.of(lane)
            );
            self.lanes[i].head = expect[i];
        }
    }

    fn ack(&mut self, lane: Lane, seq: u64) {
        self.outbox().ack(lane, seq);
        let m = self.lane(lane);
        m.acked = m.acked.max(seq);
    }

    fn read(&self, lane: Lane, after: u64, limit: usize) -> Vec<Record> {
        let outbox = self.outbox().clone();
        self.rt
            .block_on(outbox.read(lane, after, limit))
            .expect("read")
    }

    /// Checks `records`, read after `after` with `limit`, against the model.
    fn check_chain(&self, lane: Lane, after: u64, limit: usize, records: &[Record]) {
        let m = &self.lanes[usize::from(lane.index())];
        assert!(
            records.len() <= limit,
            "{lane:?}: more than {limit} returned"
        );
        let mut prev = after;
        for r in records {
            assert!(
                r.seq > prev,
                "{lane:?}: seq {:#x} after {prev:#x} (read after {after:#x})",
                r.seq
            );
            assert!(
                r.continues(prev),
                "{lane:?}: {r:?} does not continue {prev:#x} (read after {after:#x})"
            );
            assert_eq!(r.body.lane(), lane, "{r:?} on the wrong lane");
            match &r.body {
                RecordBody::Vitals { .. }
                | RecordBody::Alarm(_)
                | RecordBody::Episode(_)
                | RecordBody::Acknowledged { .. }
                | RecordBody::Silenced { .. }
                | RecordBody::Access { .. }
                | RecordBody::Paged { .. }
                | RecordBody::EpisodesOpen { .. } => {
                    assert_eq!(
                        m.data.get(&r.seq),
                        Some(&r.body),
                        "{lane:?}: seq {:#x} returned with another body than appended",
                        r.seq
                    );
                }
                RecordBody::Gap {
                    after: a, evicted, ..
                } => {
                    let (a, evicted) = (*a, *evicted);
                    assert!(a < r.seq, "{r:?}: a gap after its own seq");
                    // A gap sits at an epoch start or in place of the last record it evicted.
                    assert!(
                        m.markers.contains(&r.seq) || m.data.contains_key(&r.seq),
                        "{r:?}: a gap at a seq that was never given out"
                    );
                    if lane == Lane::Alarms {
                        assert_eq!(evicted, 0, "{r:?}: alarms evicted");
                        assert!(m.markers.contains(&r.seq), "{r:?}: not an epoch marker");
                    }
                    // Only records of its range can have been evicted into it...
                    let in_range = m.data.range(a + 1..=r.seq).count() as u64;
                    assert!(
                        evicted <= in_range,
                        "{r:?}: counts {evicted} evicted but only {in_range} records were \
                         given seqs in its range"
                    );
                    // ...and every unacknowledged one was (nothing else removes them).
                    let unacked = m.data.range(a.max(m.acked) + 1..=r.seq).count() as u64;
                    assert!(
                        evicted >= unacked,
                        "{r:?}: counts {evicted} evicted but stands for {unacked} \
                         unacknowledged records (acked {:#x})",
                        m.acked
                    );
                }
                RecordBody::Unreadable { .. } => panic!("{r:?}: unreadable record"),
            }
            prev = r.seq;
        }
        if limit == usize::MAX {
            assert_eq!(
                prev, m.head,
                "{lane:?}: a full read after {after:#x} stopped at {prev:#x}, short of the head"
            );
        } else if after < m.head {
            // A bounded read may come back short of `limit` while more records exist: a
            // commit that evicts between its memory snapshot and its database read turns
            // several records into one gap. But it never comes back empty.
            assert!(
                !records.is_empty(),
                "{lane:?}: a read after {after:#x} returned nothing, the head is {:#x}",
                m.head
            );
        }
    }

    /// Reads each lane in full from its acknowledged seq and checks it against the model,
    /// then reads a few records from a cursor, as the uplink does.
    fn check(&mut self, rng: &mut StdRng) {
        for lane in Lane::ALL {
            let acked = self.lanes[usize::from(lane.index())].acked;
            let all = self.read(lane, acked, usize::MAX);
            self.check_chain(lane, acked, usize::MAX, &all);
            let m = &self.lanes[usize::from(lane.index())];
            let returned: BTreeMap<u64, &Record> = all.iter().map(|r| (r.seq, r)).collect();
            for (&seq, body) in m.data.range(acked + 1..) {
                if returned.contains_key(&seq) {
                    // Its body was checked by `check_chain` (a gap replaced it, or it is there).
                    continue;
                }
                assert!(
                    matches!(body, RecordBody::Vitals { .. }),
                    "{lane:?}: unacknowledged {body:?} at {seq:#x} lost (acked {acked:#x})"
                );
                // The first record at or above it must be a gap covering it.
                let cover = returned.range(seq..).next().map(|(_, r)| *r);
                assert!(
                    cover.is_some_and(|r| matches!(
                        r.body,
                        RecordBody::Gap { after, .. } if after < seq
                    )),
                    "{lane:?}: telemetry at {seq:#x} neither returned nor inside a gap \
                     (next returned: {cover:?}, acked {acked:#x})"
                );
            }
            let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
            // The uplink reads on from the last seq it sent, a few records at a time.
            let cursor = match seqs.len() {
                0 => acked,
                n => match rng.random_range(0..=n) {
                    0 => acked,
                    k => seqs[k - 1],
                },
            };
            let limit = rng.random_range(1..=12);
            let some = self.read(lane, cursor, limit);
            self.check_chain(lane, cursor, limit, &some);
            self.lane(lane).last_read = seqs;
        }
    }

    fn failure_context(&self) -> String {
        let tail = self.log.len().saturating_sub(40);
        format!(
            "settings: {:?}\nlast operations ({} in all):\n  {}",
            self.settings,
            self.log.len(),
            self.log[tail..].join("\n  ")
        )
    }
}

/// One seed: random settings, `ops` random operations, every one followed by a full check.
fn run(seed: u64, ops: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let settings = Settings {
        max_batch: rng.random_range(1..=8),
        commit_window: Duration::from_millis(rng.random_range(0..=2)),
        max_bytes: rng.random_range(1_000..=4_000),
        max_memory_records: rng.random_range(8..=64),
    };
    let mut h = Harness::new(settings);
    let result = catch_unwind(AssertUnwindSafe(|| {
        h.check(&mut rng);
        for _ in 0..ops {
            match rng.random_range(0..100) {
                0..50 => {
                    let n = rng.random_range(1..=20);
                    let kinds: Vec<bool> = (0..n).map(|_| rng.random_bool(0.1)).collect();
                    let alarms = kinds.iter().filter(|&&a| a).count();
                    h.log.push(format!(
                        "append {} telemetry, {alarms} alarms (heads {:#x}, {:#x})",
                        n - alarms,
                        h.lanes[0].head,
                        h.lanes[1].head
                    ));
                    h.append(&kinds);
                }
                50..78 => {
                    let lane = if rng.random_bool(0.3) {
                        Lane::Alarms
                    } else {
                        Lane::Telemetry
                    };
                    let read = &h.lane(lane).last_read;
                    if read.is_empty() {
                        continue;
                    }
                    let seq = read[rng.random_range(0..read.len())];
                    h.log.push(format!("ack {lane:?} {seq:#x}"));
                    h.ack(lane, seq);
                }
                78..83 => {
                    h.log.push("reopen".into());
                    h.reopen();
                    // The hub's Welcome: the uplink acknowledges what it already stored.
                    if rng.random_bool(0.5) {
                        for lane in Lane::ALL {
                            let acked = h.lane(lane).acked;
                            if acked > 0 {
                                h.log.push(format!("welcome ack {lane:?} {acked:#x}"));
                                h.ack(lane, acked);
                            }
                        }
                    }
                }
                _ => {
                    // Let the commit thread run for a while.
                    let ms = rng.random_range(0..=3);
                    h.log.push(format!("pause {ms} ms"));
                    std::thread::sleep(Duration::from_millis(ms));
                }
            }
            h.check(&mut rng);
        }
        h.log.push("final reopen".into());
        h.reopen();
        h.check(&mut rng);
        h.close();
    }));
    if let Err(e) = result {
        let context = h.failure_context();
        eprintln!(
            "outbox model test failed: seed {seed} (rerun with OUTBOX_SEED={seed})\n{context}"
        );
        std::panic::resume_unwind(e);
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn random_operations_keep_the_lanes_chained_and_complete() {
    let seeds: Vec<u64> = match env_u64("OUTBOX_SEED") {
        Some(s) => vec![s],
        None => (1..=env_u64("OUTBOX_SEEDS").unwrap_or(SEEDS)).collect(),
    };
    for seed in seeds {
        run(seed, OPS);
    }
}

/// A lower bound of the bytes a record takes on disk (its stamp encoded as 0).
fn stored_bytes(r: &Record) -> u64 {
    let body = postcard::to_stdvec(&(0i64, &r.body)).expect("encode");
    9 + body.len() as u64
}

#[test]
fn disk_budget_evicts_telemetry_but_never_alarms() {
    const TELEMETRY: usize = 300;
    let settings = Settings {
        max_batch: 8,
        commit_window: Duration::from_millis(1),
        max_bytes: 3_000,
        max_memory_records: 64,
    };
    let mut h = Harness::new(settings.clone());
    for b in 0..TELEMETRY / 10 {
        let mut kinds = vec![false; 10];
        if b % 6 == 0 {
            kinds.push(true);
        }
        h.append(&kinds);
    }
    let alarms: Vec<u64> = h.lanes[0].data.keys().copied().collect();
    assert_eq!(alarms.len(), 5);
    let evicted = |records: &[Record]| {
        records
            .iter()
            .filter_map(|r| match r.body {
                RecordBody::Gap { evicted, .. } => Some(evicted),
                _ => None,
            })
            .sum::<u64>()
    };
    // The commit thread catches up and evicts for the budget.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let telemetry = h.read(Lane::Telemetry, 0, usize::MAX);
        h.check_chain(Lane::Telemetry, 0, usize::MAX, &telemetry);
        if evicted(&telemetry) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no eviction within 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    // After a clean close everything is committed; a new boot sees the same.
    h.reopen();
    let mut rng = StdRng::seed_from_u64(0);
    h.check(&mut rng);
    let alarm_lane = h.read(Lane::Alarms, 0, usize::MAX);
    let telemetry = h.read(Lane::Telemetry, 0, usize::MAX);
    let kept: Vec<u64> = alarm_lane
        .iter()
        .filter(|r| matches!(r.body, RecordBody::Episode(_)))
        .map(|r| r.seq)
        .collect();
    assert_eq!(kept, alarms, "alarms evicted");
    let readings = telemetry
        .iter()
        .filter(|r| matches!(r.body, RecordBody::Vitals { .. }))
        .count() as u64;
    let evicted = evicted(&telemetry);
    assert!(evicted > 0, "nothing evicted: {telemetry:?}");
    assert_eq!(
        readings + evicted,
        TELEMETRY as u64,
        "readings kept plus evicted must be every reading appended (nothing was acknowledged)"
    );
    // Every commit leaves the store within its budget (the alarms alone fit in it); the
    // reopening added only this epoch's markers since.
    let markers = [0, 1].map(|i| h.lanes[i].head);
    let stored: u64 = alarm_lane
        .iter()
        .chain(&telemetry)
        .filter(|r| !markers.contains(&r.seq))
        .map(stored_bytes)
        .sum();
    assert!(
        stored <= settings.max_bytes,
        "{stored} bytes stored over the budget of {}",
        settings.max_bytes
    );
    h.close();
}
