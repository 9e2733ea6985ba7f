//! Arbitrary bytes through `anna::protocol::decode`: it must return, never
//! panic, overflow the stack or exhaust memory; and whatever it accepts must
//! survive encode → decode unchanged.

#![no_main]

use anna::protocol::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(msg) = decode(bytes) {
        let frame = encode(&msg).expect("a decoded message re-encodes");
        assert_eq!(decode(&frame), Ok(msg), "decode(encode(m)) != m");
    }
});
