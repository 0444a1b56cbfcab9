//! YAML/JSON manifests (files, Git trees).
//! The property lives in `ignis_fuzz::yaml_manifests` (also run, bounded, by
//! `cargo test -p ignis-fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ignis_fuzz::yaml_manifests(data));
