//! Arbitrary bytes through the frame decoder, meta decoders and inflaters;
//! the invariants live in `syncrpc::fuzzing` so `cargo test` checks them too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    syncrpc::fuzzing::decode_all(data);
});
