//! Feeds arbitrary bytes to both decoders. Run from `fuzz/`:
//! `cargo +nightly fuzz run decode` (see docs/FUZZING.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::frame::{decode_stream, Frame};

fuzz_target!(|data: &[u8]| {
    const MAX: u32 = 64 * 1024;
    if let Ok(f) = Frame::decode(data, MAX) {
        assert_eq!(f.to_vec(), data, "accepted bytes must re-encode identically");
    }
    let mut rest = data;
    while let Ok(Some((_, used))) = decode_stream(rest, MAX) {
        rest = &rest[used..];
    }
});
