//! REST API apply/delete bodies.
//! The property lives in `ignis_fuzz::api_body` (also run, bounded, by
//! `cargo test -p ignis-fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ignis_fuzz::api_body(data));
