//! `cargo +nightly fuzz run safetensors`: see `fuzz/README.md`.
#![no_main]

#[path = "../../tests/fuzz_harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Ok or a clean error; a panic (or the harness's checks failing) is the finding.
    let _ = harness::load(harness::Format::Safetensors, data);
});
