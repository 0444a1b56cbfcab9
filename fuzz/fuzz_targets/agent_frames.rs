//! Agent protocol frames from a malicious guest, in arbitrary chunks.
//! The property lives in `ignis_fuzz::agent_frames` (also run, bounded, by
//! `cargo test -p ignis-fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ignis_fuzz::agent_frames(data));
