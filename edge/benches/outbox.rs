//! Criterion benchmark of the outbox's append: the durable buffer every reading enters before
//! the uplink. A redb file on disk with the edge's default settings (10 ms group commit, up to
//! 1,024 records per commit); nothing is acknowledged, as when the uplink is down, so the
//! sustained figure includes the group commits (fsync) it forces and the disk budget's
//! eviction.
//!
//! ```sh
//! cargo bench -p wardlink-edge --bench outbox
//! ```

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use wardlink_edge::config::OutboxSection;
use wardlink_edge::outbox::Outbox;
use wardlink_edge::outbox::OutboxMetrics;
use wardlink_shared::ids::PatientId;
use wardlink_shared::vitals::{Reading, Vitals};
use wardlink_shared::wire::RecordBody;

fn reading(patient: &PatientId, i: i64) -> RecordBody {
    RecordBody::Vitals {
        reading: Reading {
            patient: patient.clone(),
            ts: 1_795_694_400_000 + i,
            vitals: Vitals {
                hr: Some(60.0 + (i % 40) as f32),
                spo2: Some(97.0),
                rr: Some(16.0),
                temp: Some(36.8),
                ..Vitals::default()
            },
        },
        news2: None,
    }
}

fn outbox(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A bounded file: the oldest telemetry is evicted as the benchmark runs.
    let settings = OutboxSection {
        max_bytes: 64 << 20,
        ..OutboxSection::default()
    };
    let (outbox, _thread) = Outbox::open(
        &dir.path().join("outbox.redb"),
        settings.settings(),
        OutboxMetrics::detached(),
    )
    .unwrap();
    let patient = PatientId::new("bed-01").unwrap();
    let mut i = 0i64;

    let mut group = c.benchmark_group("outbox append");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1 reading", |b| {
        b.iter_batched(
            || {
                i += 1;
                vec![reading(&patient, i)]
            },
            |records| rt.block_on(outbox.append(black_box(records))).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("64 readings", |b| {
        b.iter_batched(
            || {
                (0..64)
                    .map(|_| {
                        i += 1;
                        reading(&patient, i)
                    })
                    .collect::<Vec<_>>()
            },
            |records| rt.block_on(outbox.append(black_box(records))).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, outbox);
criterion_main!(benches);
