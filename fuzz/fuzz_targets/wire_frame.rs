//! The QUIC frame decoder on arbitrary bytes, as a peer could send them in any chunking: never
//! a panic; a frame that decodes encodes to bytes that decode and encode to the same bytes
//! (compared as bytes: a float may be NaN).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardlink_shared::wire::{self, FrameDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut).min(bytes.len());
    let mut decoder = FrameDecoder::new();
    decoder.push(&bytes[..at]);
    let mut frames = Vec::new();
    while let Ok(Some(f)) = decoder.next_frame() {
        frames.push(f);
    }
    decoder.push(&bytes[at..]);
    while let Ok(Some(f)) = decoder.next_frame() {
        frames.push(f);
    }
    if let Ok(frame) = wire::decode(bytes) {
        frames.push(frame);
    }
    for frame in frames {
        let encoded = wire::encode(&frame).expect("a decoded frame encodes");
        let again = wire::decode(&encoded[4..]).expect("an encoded frame decodes");
        assert_eq!(wire::encode(&again).expect("encodes again"), encoded);
    }
});
