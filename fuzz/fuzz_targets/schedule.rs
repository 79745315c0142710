//! Schedule lines: any text parses or is refused, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    pacer::fuzz::schedule(text);
});
