//! The snapshot store, lineage, forks, export/import and their errors
//! through the real binary on the fake VMM (its "memory" and "state" are
//! small files; the writable disk is a real sparse ext4). Live snapshots of
//! Linux guests are in tests/net.rs (QEMU, bridge in a test netns).

#![cfg(feature = "fake-vmm")]

mod common;

use common::Env;
use std::io::Read;

fn snaps(env: &Env) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&env.ok(&["snapshot", "ls", "-o", "json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn store_dedups_tracks_lineage_and_collects_shared_blobs() {
    let (env, img) = Env::fake_app();
    let baseline = env.blobs().len();
    env.fake_vm("run", "src", &img);
    let a = env.ok_id(&["snapshot", "src", "--name", "a"]);
    assert_eq!(a.len(), 16);
    assert_eq!(env.blobs().len(), baseline + 3, "state, memory, disk");
    // Same content again: a second record, no new blob.
    env.ok(&["snapshot", "src", "--name", "b"]);
    assert_eq!(
        env.blobs().len(),
        baseline + 3,
        "identical blobs are stored once"
    );
    let list = snaps(&env);
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["memory"]["digest"], list[1]["memory"]["digest"]);
    // Name taken: conflict (4), nothing added.
    let out = env.run(&["snapshot", "src", "--name", "a"]);
    common::assert_exit(&out, 4);
    assert_eq!(snaps(&env).len(), 2);

    // Forks: running, restored from a, identity of their own.
    let ids = env.ok(&["fork", "a", "-n", "3"]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    assert_eq!(ids.len(), 3);
    for (i, id) in ids.iter().enumerate() {
        let v = env.vm_json(id);
        assert_eq!(v["name"], format!("a-{}", i + 1));
        assert_eq!(v["status"]["state"], "running", "{v}");
        assert_eq!(v["spec"]["snapshot"]["id"], a.as_str());
        assert!(v["status"]["restorePending"].is_null(), "resumed once: {v}");
    }
    // restore: one clone under the name asked for, resumed from a.
    let again = env.ok_id(&["restore", "a", "--name", "again"]);
    let v = env.vm_json("again");
    assert_eq!(v["id"], again.as_str());
    assert_eq!(v["status"]["state"], "running", "{v}");
    assert_eq!(v["spec"]["snapshot"]["id"], a.as_str());
    assert!(v["status"]["restorePending"].is_null(), "resumed: {v}");
    assert!(!ids.contains(&again.as_str()), "a VM of its own");
    let out = env.run(&["restore", "a", "--name", "again"]);
    assert_eq!(out.status.code(), Some(4), "the name is taken");
    env.ok(&["rm", "-f", "again"]);
    // A snapshot of a fork is a child of a.
    env.ok(&["snapshot", "a-1", "--name", "c"]);
    let c = env.ok(&["snapshot", "inspect", "c"]);
    let c: serde_json::Value = serde_json::from_str(&c).unwrap();
    assert_eq!(c["parent"], a.as_str());
    let tree = env.ok(&["snapshot", "ls", "--tree"]);
    let lines: Vec<&str> = tree.lines().collect();
    let a_line = lines.iter().position(|l| l.contains(" a (of src")).unwrap();
    assert!(
        lines[a_line + 1..].iter().any(|l| l.contains("vm a-1")),
        "{tree}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("  └─ c (of a-1")),
        "{tree}"
    );

    // Removing snapshots keeps blobs something else still uses.
    env.ok(&["snapshot", "rm", "a", "b"]);
    let state_digest = list[0]["state"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    assert!(
        env.blobs().contains(&state_digest),
        "forks still reference the state"
    );
    env.ok(&["rm", "-f", "a-1", "a-2", "a-3", "src"]);
    env.ok(&["snapshot", "rm", "c"]);
    env.ok(&["system", "prune"]);
    assert_eq!(env.blobs().len(), baseline, "every snapshot blob collected");
    assert_eq!(env.count("vms"), 0);
}

#[test]
fn bad_requests_change_nothing() {
    let (env, img) = Env::fake_app();
    env.fake_vm("run", "src", &img);
    env.ok(&["stop", "src"]);
    let out = env.run(&["snapshot", "src"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
    let out = env.run(&["fork", "nothing-here"]);
    assert_eq!(out.status.code(), Some(3));
    for (args, says) in [
        (&["-n", "0"][..], "want 1 to 1000 clones"),
        (&["-n", "1001"][..], "want 1 to 1000 clones"),
        (&["--name-prefix=-x"][..], "invalid name prefix '-x'"),
        (&["--name-prefix", ""][..], "invalid name prefix ''"),
    ] {
        let out = env.run(&[&["fork", "src"][..], args].concat());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(snaps(&env).is_empty());
    assert_eq!(env.ok(&["ps", "-a", "-Q"]).lines().count(), 1);
}

/// An export (`raw`: the decompressed tar) with `edit` applied to each
/// entry's content, as plain entries, zstd-compressed again.
fn rewrite(raw: &[u8], edit: impl Fn(&str, &mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut ar = tar::Archive::new(raw);
        let mut b = tar::Builder::new(&mut out);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let path = e.path().unwrap().into_owned();
            edit(path.to_str().unwrap(), &mut data);
            // Plain entries (the export's disk is a GNU sparse entry).
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, &data[..]).unwrap();
        }
        b.finish().unwrap();
    }
    zstd::encode_all(&out[..], 1).unwrap()
}

#[test]
fn corrupted_blobs_exports_and_vmm_mismatch_are_refused() {
    let (env, img) = Env::fake_app();
    env.fake_vm("run", "src", &img);
    env.ok(&["snapshot", "src", "--name", "s"]);
    let file = env.dir.path().join("s.snap");
    env.ok(&["snapshot", "export", "s", "-o", file.to_str().unwrap()]);

    // Import into a fresh root that has the image and kernel.
    let other = Env::new();
    other.fake_kernel();
    other.app_image();
    let id = other.ok_id(&["snapshot", "import", file.to_str().unwrap()]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&other.ok(&["snapshot", "inspect", "s"]))
            .unwrap()["id"],
        id.as_str()
    );
    let clone = other.ok(&["fork", "s", "--name-prefix", "imp"]);
    assert_eq!(other.vm_json(clone.trim())["status"]["state"], "running");
    other.ok(&["rm", "-f", "imp-1"]);
    // Importing it twice is a conflict.
    assert_eq!(
        other
            .run(&["snapshot", "import", file.to_str().unwrap()])
            .status
            .code(),
        Some(4)
    );

    // A damaged export: refused, nothing recorded.
    let third = Env::new();
    third.fake_kernel();
    third.app_image();
    let raw = zstd::decode_all(std::fs::File::open(&file).unwrap()).unwrap();
    let tampered = rewrite(&raw, |path, data| {
        if path.starts_with("blobs/") && data.len() > 4 {
            data[2] ^= 0xff;
        }
    });
    let bad = env.dir.path().join("bad.snap");
    std::fs::write(&bad, tampered).unwrap();
    let out = third.run(&["snapshot", "import", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match its digest"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(third.ok(&["snapshot", "ls", "-Q"]).is_empty());

    // A snapshot from another VMM version: refused at fork.
    let edited = rewrite(&raw, |path, data| {
        if path == "snapshot.json" {
            let mut v: serde_json::Value = serde_json::from_slice(data).unwrap();
            v["vmmVersion"] = "fake 0".into();
            *data = serde_json::to_vec(&v).unwrap();
        }
    });
    let old = env.dir.path().join("old.snap");
    std::fs::write(&old, edited).unwrap();
    third.ok(&["snapshot", "import", old.to_str().unwrap()]);
    let out = third.run(&["fork", "s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was taken with 'fake 0'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        third.ok(&["ps", "-a", "-Q"]).is_empty(),
        "no clone left behind"
    );

    // A blob damaged in the store: fork refuses before creating anything.
    let snap: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshot", "inspect", "s"])).unwrap();
    let blob_path = |root: std::path::PathBuf, digest: &str| {
        let (algo, hex) = digest.split_once(':').unwrap();
        root.join("blobs").join(algo).join(hex)
    };
    let mem = blob_path(env.root(), snap["memory"]["digest"].as_str().unwrap());
    std::fs::write(&mem, b"flipped").unwrap();
    let before = env.ok(&["ps", "-a", "-Q"]);
    let out = env.run(&["fork", "s", "-n", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing or corrupted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.ok(&["ps", "-a", "-Q"]), before);

    // Blobs are hashed when they enter the store, not on every use: a
    // blob changed in place after its import (same size, one byte) is
    // caught by its seal and refused by restore too.
    let imported: serde_json::Value =
        serde_json::from_str(&other.ok(&["snapshot", "inspect", "s"])).unwrap();
    let disk = blob_path(other.root(), imported["disk"]["digest"].as_str().unwrap());
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.write_all_at(b"\x01", 1024).unwrap();
    }
    let out = other.run(&["restore", "s", "--name", "tampered"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the disk blob"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(other.ok(&["ps", "-a", "-Q"]).is_empty(), "nothing created");
}
