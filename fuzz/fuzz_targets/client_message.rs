//! A dashboard's WebSocket text (from a browser, so from anyone with a token) on arbitrary
//! bytes: the client message decoder and the silence check never panic, and a reason they
//! accept is plain text within its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardlink_shared::dashboard::{
    ClientMessage, MAX_SILENCE_REASON_CHARS, check_silence,
};
use wardlink_shared::plain::is_plain;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ClientMessage::Silence {
        minutes, reason, ..
    }) = serde_json::from_str::<ClientMessage>(text)
        && let Ok(kept) = check_silence(minutes, &reason)
    {
        assert!(is_plain(kept), "{kept:?}");
        assert!(!kept.is_empty() && kept.chars().count() <= MAX_SILENCE_REASON_CHARS);
    }
});
