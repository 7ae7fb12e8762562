//! Criterion benchmark of a device's authentication: an unknown device id must cost what a
//! wrong password costs, or the time of the answer tells which device ids exist. Both run the
//! same Argon2 verification (the unknown one against a decoy hash).
//!
//! ```sh
//! cargo bench -p wardlink-edge --bench auth
//! ```

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use wardlink_edge::broker::{DeviceRegistry, add_device};
use wardlink_shared::{DeviceId, PatientId};

fn authentication(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.json");
    let password = add_device(
        &path,
        DeviceId::new("mon-1").unwrap(),
        PatientId::new("bed-1").unwrap(),
        10,
    )
    .unwrap();
    let registry = DeviceRegistry::new(path, 10);
    let mut group = c.benchmark_group("authenticate");
    group.bench_function("right password", |b| {
        b.iter(|| registry.authenticate("mon-1", "mon-1", &password).is_ok())
    });
    group.bench_function("wrong password", |b| {
        b.iter(|| registry.authenticate("mon-1", "mon-1", "0123456789abcdef0123456789abcdef"))
    });
    group.bench_function("unknown device", |b| {
        b.iter(|| registry.authenticate("mon-9", "mon-9", "0123456789abcdef0123456789abcdef"))
    });
    group.finish();
}

criterion_group!(benches, authentication);
criterion_main!(benches);
