//! Micro-benchmarks of the per-reading hot path (issue 8): decoding a device payload, the
//! alarm engine's evaluation of a reading, and a postcard frame of 64 readings encoded and
//! decoded. `cargo bench -p wardlink-shared`; figures go to BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use wardlink_shared::alarm::{AlarmEngine, RuleSettings};
use wardlink_shared::payload::decode_json;
use wardlink_shared::wire::{Frame, Record, RecordBody, decode, encode};

const PAYLOAD: &[u8] = br#"{"ts":"2026-11-26T12:00:00.250Z","hr":72,"spo2":97,"rr":16,"temp":36.8,"sbp":120,"dbp":80,"o2":false,"acvpu":"A"}"#;
const TOPIC: &str = "patients/bed-07/vitals";
const NOW: i64 = 1_795_694_400_000;

fn payload(c: &mut Criterion) {
    c.bench_function("decode_json (full reading)", |b| {
        b.iter(|| decode_json(black_box(TOPIC), black_box(PAYLOAD), NOW))
    });
}

fn rules(c: &mut Criterion) {
    let Ok(reading) = decode_json(TOPIC, PAYLOAD, NOW) else {
        return;
    };
    let mut engine = AlarmEngine::new(RuleSettings::default(), "edge-bench");
    let mut now = NOW;
    let base = std::time::Instant::now();
    c.bench_function(
        "AlarmEngine::observe (normal reading, NEWS2, trends)",
        |b| {
            b.iter(|| {
                now += 1000;
                let mut r = reading.clone();
                r.ts = now;
                let at = wardlink_shared::time::Now {
                    mono: base + std::time::Duration::from_millis((now - NOW) as u64),
                    wall: now,
                };
                black_box(engine.observe(black_box(&r), at))
            })
        },
    );
}

fn frames(c: &mut Criterion) {
    let Ok(reading) = decode_json(TOPIC, PAYLOAD, NOW) else {
        return;
    };
    let records: Vec<Record> = (1..=64)
        .map(|seq| Record {
            seq,
            body: RecordBody::Vitals {
                reading: reading.clone(),
                news2: None,
            },
        })
        .collect();
    let frame = Frame::Records { records };
    c.bench_function("wire::encode (64 readings)", |b| {
        b.iter(|| encode(black_box(&frame)))
    });
    let Ok(bytes) = encode(&frame) else {
        return;
    };
    c.bench_function("wire::decode (64 readings)", |b| {
        b.iter(|| decode(black_box(&bytes[4..])))
    });
}

// The macro's generated function has no doc comment of its own.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, payload, rules, frames);
}
use group::benches;
criterion_main!(benches);
