//! Layer tarballs unpacked with small limits: no escape, bounded size.
//! The property lives in `ignis_fuzz::tar_layer` (also run, bounded, by
//! `cargo test -p ignis-fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ignis_fuzz::tar_layer(data));
