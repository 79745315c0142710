//! Control-socket requests: any bytes, received in any pieces, are framed and decoded or
//! refused with a position.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, &[u8])| {
    let (split, bytes) = input;
    pacer::fuzz::request(bytes, usize::from(split));
});
