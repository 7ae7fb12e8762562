//! The device JSON payload decoder on arbitrary bytes: never a panic, and every reading it
//! accepts holds only finite values within the physiological ranges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardlink_shared::payload::decode_json;
use wardlink_shared::vitals::VitalSign;

/// 2026-12-01T00:00:00Z.
const NOW: i64 = 1_796_083_200_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(reading) = decode_json("patients/p1/vitals", data, NOW) {
        assert!(!reading.vitals.is_empty());
        for sign in VitalSign::ALL {
            if let Some(v) = reading.vitals.value(sign) {
                assert!(v.is_finite(), "{sign:?} = {v}");
            }
        }
    }
});
