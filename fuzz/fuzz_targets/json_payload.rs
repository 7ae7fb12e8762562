//! The device JSON payload decoder on arbitrary bytes: never a panic, and every reading it
//! accepts holds only finite values within the physiological ranges, and signal quality
//! figures within 0–100.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardlink_shared::payload::decode_json_stamped;
use wardlink_shared::vitals::VitalSign;

/// 2026-12-01T00:00:00Z.
const NOW: i64 = 1_796_083_200_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = decode_json_stamped("patients/p1/vitals", data, NOW, 86_400_000) {
        assert!(!d.reading.vitals.is_empty());
        for sign in VitalSign::ALL {
            if let Some(v) = d.reading.vitals.value(sign) {
                assert!(v.is_finite(), "{sign:?} = {v}");
            }
        }
        for q in [d.quality.sq, d.quality.pi].into_iter().flatten() {
            assert!((0.0..=100.0).contains(&q), "quality {q}");
        }
    }
});
