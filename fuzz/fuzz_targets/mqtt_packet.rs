//! The gate's MQTT parser on arbitrary bytes: never a panic; a frame never claims more bytes
//! than it was given; a SUBSCRIBE the gate relays re-encoded reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardlink_shared::mqtt::{self, LEVEL_V4, LEVEL_V5};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let level = if selector & 1 == 0 { LEVEL_V4 } else { LEVEL_V5 };
    match mqtt::frame(bytes, 1 << 16) {
        Ok(Some(n)) => assert!(n <= bytes.len()),
        Ok(None) | Err(_) => return,
    }
    let _ = mqtt::parse_connect(bytes);
    let _ = mqtt::packet_id(bytes);
    if let Ok(p) = mqtt::parse_publish(bytes, level) {
        assert!(p.qos <= 2);
        assert!(!p.topic.contains(['+', '#']));
    }
    if let Ok(sub) = mqtt::parse_subscribe(bytes, level) {
        let relayed = mqtt::encode_subscribe(level, &sub);
        let again = mqtt::parse_subscribe(&relayed, level).expect("a relayed SUBSCRIBE reads back");
        assert_eq!((again.id, &again.filters, &again.options), (sub.id, &sub.filters, &sub.options));
    }
});
