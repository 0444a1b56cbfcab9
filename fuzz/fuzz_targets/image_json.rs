//! Image index, manifest, config and docker-save JSON.
//! The property lives in `ignis_fuzz::image_json` (also run, bounded, by
//! `cargo test -p ignis-fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ignis_fuzz::image_json(data));
