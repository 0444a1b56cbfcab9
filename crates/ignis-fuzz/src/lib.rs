//! Fuzz entry points, one per decoder of untrusted input. Each takes any
//! bytes, must not panic, and checks the bounds its decoder promises
//! (memory, files written, errors instead of hangs). The cargo-fuzz
//! targets in `fuzz/` (nightly, libFuzzer) call these; `tests/bounded.rs`
//! runs them on seeded mutations of valid inputs in every `cargo test`, so
//! CI exercises each one for a bounded time.

use ignis_agent_proto::{
    Decoder, ErrorMsg, ExitMsg, Hello, Kind, Request, HEADER_LEN, MAX_PAYLOAD,
};

/// Agent frames from a (malicious) guest, in chunks of any size: memory
/// stays bounded by one frame plus one push; control payloads are parsed
/// as the host parses them.
pub fn agent_frames(data: &[u8]) {
    let mut dec = Decoder::new();
    let split = data.first().map(|b| usize::from(*b) + 1).unwrap_or(1);
    for chunk in data.chunks(split) {
        dec.push(chunk);
        while let Some(r) = dec.next_frame() {
            let Ok(f) = r else { continue };
            match f.kind {
                Kind::Open => drop(f.parse::<Request>()),
                Kind::Hello => drop(f.parse::<Hello>()),
                Kind::Exit => drop(f.parse::<ExitMsg>()),
                Kind::Error => drop(f.parse::<ErrorMsg>()),
                _ => drop(f.as_u32()),
            }
        }
        assert!(dec.buffered() <= HEADER_LEN + MAX_PAYLOAD as usize + chunk.len());
    }
}

/// Image JSON from a registry or an archive: index, manifest, config,
/// docker-save manifest. Parsed or refused; the config's derived settings
/// computed.
pub fn image_json(data: &[u8]) {
    use ignis_image::oci;
    if data.len() as u64 > oci::MAX_JSON {
        return;
    }
    if let Ok(cfg) = serde_json::from_slice::<oci::ConfigFile>(data) {
        let c = cfg.image_config();
        drop(c);
    }
    if let Ok(idx) = serde_json::from_slice::<oci::Index>(data) {
        let _ = oci::pick_platform(&idx.manifests);
    }
    drop(serde_json::from_slice::<oci::Manifest>(data));
    drop(serde_json::from_slice::<Vec<oci::DockerSaveEntry>>(data));
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = oci::is_index(None, &v);
    }
}

/// A layer tarball unpacked into a fresh tree with small limits: it
/// unpacks or fails with an error; nothing is written outside the tree and
/// no more than the limit inside it.
pub fn tar_layer(data: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("root");
    let outside = dir.path().join("outside");
    std::fs::write(&outside, b"sentinel").expect("sentinel");
    let limits = ignis_image::unpack::Limits {
        max_bytes: 1 << 20,
        max_entries: 1000,
        max_depth: 32,
    };
    let mut u = ignis_image::unpack::Unpacker::with_privilege(&root, false).with_limits(limits);
    if u.apply_layer(data).is_ok() {
        drop(u.finish());
    }
    assert_eq!(std::fs::read(&outside).expect("sentinel"), b"sentinel");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 2, "nothing created beside the tree: {names:?}");
    assert!(du(&root) <= limits.max_bytes + 4096 * limits.max_entries);
}

fn du(p: &std::path::Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if m.is_dir() {
        std::fs::read_dir(p)
            .map(|d| d.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0)
    } else {
        m.len()
    }
}

/// YAML or JSON manifests (files, Git trees): parsed and validated, or
/// refused with an error naming the field.
pub fn yaml_manifests(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ms) = ignis_core::manifest::parse(text, "fuzz") {
        for m in &ms {
            drop(ignis_core::manifest::validate(m, "fuzz"));
        }
    }
}

/// A REST API `apply`/`delete` body: what the HTTP layer parses before the
/// service sees anything.
pub fn api_body(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    drop(ignis_daemon::parse_manifest_body(&text));
}
