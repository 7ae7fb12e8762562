//! The gate's MQTT parser against rumqttc's codec on inputs libFuzzer finds: wherever both
//! accept a packet, they must read the same length and fields (see `edge/tests/mqtt_oracle.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardlink_shared::mqtt::{LEVEL_V4, LEVEL_V5};

#[path = "../../edge/tests/oracle/mod.rs"]
mod oracle;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let level = if selector & 1 == 0 { LEVEL_V4 } else { LEVEL_V5 };
    oracle::compare(level, bytes, &mut oracle::Tally::default());
});
