//! `ignis image` end to end through the real binary: import formats,
//! dedup, names, rm, prune, corruption, concurrency and SIGKILL safety.

mod common;

use common::{check_small_disk, small_spec, Env};
use ignis_testkit::OciWriter;
use std::os::unix::process::ExitStatusExt;

#[test]
fn import_oci_layout_builds_a_correct_disk_and_keeps_the_config() {
    let env = Env::for_tier(common::tier::E2FS);
    let layout = env.small_image("example.com/app:1", "s1");
    let id = env.ok_id(&["image", "import", layout.to_str().unwrap()]);
    let rec: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "inspect", "example.com/app:1"])).unwrap();
    assert_eq!(rec["id"], id.as_str());
    assert_eq!(rec["config"]["cmd"][0], "/bin/sh");
    assert_eq!(rec["config"]["env"][0], "PATH=/bin");
    assert_eq!(rec["layers"].as_array().unwrap().len(), 2);
    check_small_disk(rec["diskPath"].as_str().unwrap().as_ref(), "s1");
}

#[test]
fn import_docker_save_and_oci_tar_forms() {
    let env = Env::for_tier(common::tier::E2FS);
    let spec = small_spec("busybox:1", "docker");
    let save = env.dir.path().join("save.tar");
    OciWriter::write_tar(&OciWriter::docker_save_files(&spec), &save).unwrap();
    env.ok(&["image", "import", save.to_str().unwrap()]);
    // Docker-style short names resolve to the normalized reference.
    let rec: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "inspect", "busybox:1"])).unwrap();
    assert_eq!(rec["names"][0], "docker.io/library/busybox:1");
    check_small_disk(rec["diskPath"].as_str().unwrap().as_ref(), "docker");

    let oci_tar = env.dir.path().join("oci.tar");
    OciWriter::write_tar(
        &OciWriter::oci_files(&small_spec("example.com/x:2", "ocitar")),
        &oci_tar,
    )
    .unwrap();
    env.ok(&["image", "import", oci_tar.to_str().unwrap()]);
    assert_eq!(env.image_ids().len(), 2);
}

/// An OCI layout whose `org.opencontainers.image.ref.name` is a bare tag
/// (`latest`, as `skopeo copy ... oci:DIR:latest` writes) is that tag of an
/// image named after the layout, under `localhost/` (podman's naming), and
/// the import says so; never `docker.io/library/latest:latest`.
#[test]
fn oci_layout_with_a_bare_tag_is_named_after_the_layout() {
    let env = Env::new();
    let files = OciWriter::oci_files(&small_spec("latest", "bare"));
    let dir = env.dir.path().join("MyApp");
    OciWriter::write_dir(&files, &dir).unwrap();
    let out = env
        .cmd()
        .args(["image", "import", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bare tag") && err.contains("localhost/myapp:latest"),
        "{err}"
    );
    let names = env.ok(&["image", "ls", "--format", "{{.Names}}"]);
    assert_eq!(names.trim(), "localhost/myapp:latest");
    assert!(!env.ok(&["image", "ls"]).contains("library/latest"));
    // The tar form is named after the file, without its extension; -t adds
    // the name the user wants.
    let tar = env.dir.path().join("other-app.tar");
    OciWriter::write_tar(&OciWriter::oci_files(&small_spec("1.2", "bare2")), &tar).unwrap();
    env.ok(&["image", "import", "-t", "mine:3", tar.to_str().unwrap()]);
    let rec: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "inspect", "mine:3"])).unwrap();
    let names = rec["names"].to_string();
    assert!(names.contains("localhost/other-app:1.2"), "{names}");
    // A full reference in ref.name is kept as it is.
    let full = env.dir.path().join("full");
    OciWriter::write_dir(
        &OciWriter::oci_files(&small_spec("example.com/x:2", "full")),
        &full,
    )
    .unwrap();
    env.ok(&["image", "import", full.to_str().unwrap()]);
    env.ok(&["image", "inspect", "example.com/x:2"]);
}

#[test]
fn same_image_imported_twice_is_stored_once_with_both_names() {
    let env = Env::new();
    let layout = env.small_image("a:1", "same");
    env.ok(&["image", "import", layout.to_str().unwrap()]);
    let blobs = env.blobs();
    env.ok(&["image", "import", "--name", "b:2", layout.to_str().unwrap()]);
    assert_eq!(env.blobs(), blobs, "no new blobs");
    assert_eq!(env.count("disks"), 1);
    assert_eq!(env.image_ids().len(), 1);
    let table = env.ok(&["image", "ls"]);
    assert!(
        table.contains("docker.io/library/a:1") && table.contains("docker.io/library/b:2"),
        "{table}"
    );
}

#[test]
fn concurrent_imports_from_two_processes_store_the_image_once() {
    let env = Env::new();
    let tar = env.dir.path().join("img.tar");
    OciWriter::write_tar(&OciWriter::oci_files(&small_spec("race:1", "race")), &tar).unwrap();
    env.ok(&["image", "ls"]); // create the root first, as a user would have
    let children: Vec<_> = (0..2)
        .map(|_| {
            env.cmd()
                .args(["image", "import", tar.to_str().unwrap()])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(env.image_ids().len(), 1);
    assert_eq!(env.count("disks"), 1);
    // manifest + config + 2 layers
    assert_eq!(env.blobs().len(), 4);
    assert_eq!(env.count("tmp"), 0, "scratch cleaned");
}

#[test]
fn corrupted_blob_in_an_archive_is_refused_and_not_stored() {
    let env = Env::new();
    let mut files = OciWriter::oci_files(&small_spec("bad:1", "bad"));
    // Flip a byte in the largest layer blob, keeping its name.
    let victim = files
        .iter_mut()
        .filter(|(p, _)| p.starts_with("blobs/"))
        .max_by_key(|(_, d)| d.len())
        .unwrap();
    let last = victim.1.len() - 1;
    victim.1[last] ^= 0xff;
    let bad_digest = victim.0.trim_start_matches("blobs/sha256/").to_string();
    let tar = env.dir.path().join("bad.tar");
    OciWriter::write_tar(&files, &tar).unwrap();
    let out = env.run(&["image", "import", tar.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match its digest"), "{err}");
    assert!(
        !env.blobs().contains(&bad_digest),
        "corrupted blob must not be stored"
    );
    assert!(env.image_ids().is_empty());
    env.ok(&["system", "prune"]);
    assert!(
        env.blobs().is_empty(),
        "nothing left after GC: {:?}",
        env.blobs()
    );
}

#[test]
fn layer_that_does_not_match_its_diff_id_is_refused() {
    let env = Env::new();
    let mut spec = small_spec("diff:1", "x");
    spec.gzip = false;
    let mut files = OciWriter::oci_files(&spec);
    // Rewrite the config's first diff_id to something else (and rename the
    // config blob consistently) so only the diff_id check can catch it.
    let idx = files
        .iter()
        .position(|(_, d)| d.starts_with(b"{\"architecture\""))
        .unwrap();
    let cfg = String::from_utf8(files[idx].1.clone()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    let first = v["rootfs"]["diff_ids"][0].as_str().unwrap().to_string();
    let forged = cfg.replace(&first, &format!("sha256:{}", "0".repeat(64)));
    let old_digest = ignis_testkit::sha256(cfg.as_bytes());
    let new_digest = ignis_testkit::sha256(forged.as_bytes());
    files[idx] = (
        format!("blobs/sha256/{}", new_digest.trim_start_matches("sha256:")),
        forged.into_bytes(),
    );
    let midx = files
        .iter()
        .position(|(_, d)| String::from_utf8_lossy(d).contains(&old_digest))
        .unwrap();
    let manifest = String::from_utf8(files[midx].1.clone())
        .unwrap()
        .replace(&old_digest, &new_digest);
    let old_m = ignis_testkit::sha256(&files[midx].1);
    let new_m = ignis_testkit::sha256(manifest.as_bytes());
    files[midx] = (
        format!("blobs/sha256/{}", new_m.trim_start_matches("sha256:")),
        manifest.into_bytes(),
    );
    let iidx = files.iter().position(|(p, _)| p == "index.json").unwrap();
    files[iidx].1 = String::from_utf8(files[iidx].1.clone())
        .unwrap()
        .replace(&old_m, &new_m)
        .into_bytes();
    let dir = env.dir.path().join("forged");
    OciWriter::write_dir(&files, &dir).unwrap();
    let out = env.run(&["image", "import", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("the layer is corrupted"), "{err}");
    assert!(env.image_ids().is_empty());
    assert_eq!(env.count("disks"), 0);
    assert_eq!(env.count("tmp"), 0);
}

#[test]
fn hostile_layer_is_refused_with_the_entry_named_and_nothing_recorded() {
    let env = Env::new();
    let evil = ignis_testkit::LayerBuilder::new()
        .symlink("x", "/etc")
        .file("x/passwd", b"pwned", 0o644)
        .build();
    let spec = ignis_testkit::ImageSpec {
        layers: vec![evil],
        name: Some("evil:1".into()),
        ..Default::default()
    };
    let dir = env.dir.path().join("evil");
    OciWriter::write_dir(&OciWriter::oci_files(&spec), &dir).unwrap();
    let out = env.run(&["image", "import", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'x/passwd' goes through symlink 'x'"), "{err}");
    assert!(env.image_ids().is_empty());
    assert_eq!(env.count("disks"), 0);
    assert_eq!(env.count("tmp"), 0);
}

#[test]
fn killed_import_leaves_no_record_and_no_orphan_after_gc() {
    for point in [
        "import:blobs-stored",
        "image:disk-built",
        "image:before-record",
    ] {
        let env = Env::new();
        let layout = env.small_image("killed:1", point);
        let out = env.run_fault(point, &["image", "import", layout.to_str().unwrap()]);
        assert_eq!(out.status.signal(), Some(9), "{point}: killed by SIGKILL");
        assert!(env.image_ids().is_empty(), "{point}: no record");
        let prune = env.ok(&["system", "prune"]);
        assert!(prune.contains("Total reclaimed space"), "{prune}");
        assert!(
            env.blobs().is_empty(),
            "{point}: orphan blobs {:?}",
            env.blobs()
        );
        assert_eq!(env.count("disks"), 0, "{point}: orphan disk");
        assert_eq!(env.count("tmp"), 0, "{point}: scratch left");
        // And the same import then succeeds.
        env.ok(&["image", "import", layout.to_str().unwrap()]);
        assert_eq!(env.image_ids().len(), 1);
    }
}

#[test]
fn rm_untags_then_deletes_and_collects_blobs() {
    let env = Env::new();
    let layout = env.small_image("one:1", "rm");
    env.ok(&[
        "image",
        "import",
        "--name",
        "two:2",
        layout.to_str().unwrap(),
    ]);
    assert_eq!(
        env.ok(&["image", "rm", "one:1"]).trim(),
        "Untagged: docker.io/library/one:1"
    );
    assert_eq!(env.image_ids().len(), 1);
    let out = env.ok(&["image", "rm", "two:2"]);
    assert!(out.starts_with("Deleted: sha256:"), "{out}");
    assert!(env.image_ids().is_empty());
    assert!(env.blobs().is_empty(), "blobs collected: {:?}", env.blobs());
    assert_eq!(env.count("disks"), 0);
}

#[test]
fn rm_refuses_an_image_in_use_unless_forced() {
    let env = Env::new();
    let layout = env.small_image("used:1", "used");
    let id = env.ok_id(&["image", "import", layout.to_str().unwrap()]);
    // Record a VM that uses the image, as the VM layer does.
    let db = rusqlite::Connection::open(env.root().join("state.db")).unwrap();
    db.execute(
        "INSERT INTO objects (kind, id, created, record) VALUES ('vm', 'vm1', 0, '{}')",
        [],
    )
    .unwrap();
    db.execute(
        "INSERT INTO uses (user_kind, user_id, kind, id) VALUES ('vm', 'vm1', 'image', ?1)",
        [&id],
    )
    .unwrap();
    let out = env.run(&["image", "rm", "used:1"]);
    assert_eq!(out.status.code(), Some(4), "conflict exit code");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is used by vm vm1"));
    assert_eq!(env.image_ids(), vec![id.clone()]);
    let out = env.ok(&["image", "rm", "-f", "used:1"]);
    assert!(out.contains("in use"), "{out}");
    // Still stored (the VM needs its disk), but nameless.
    assert_eq!(env.image_ids(), vec![id.clone()]);
    env.ok(&["system", "prune"]);
    assert_eq!(
        env.image_ids(),
        vec![id],
        "prune keeps images that are in use"
    );
    db.execute("DELETE FROM objects WHERE kind = 'vm'", [])
        .unwrap();
    let out = env.ok(&["system", "prune"]);
    assert!(out.contains("Deleted image"), "{out}");
    assert!(env.image_ids().is_empty());
    assert!(env.blobs().is_empty());
}

#[test]
fn ids_prefixes_and_errors_have_meaningful_exit_codes() {
    let env = Env::new();
    let out = env.run(&["image", "inspect", "nope"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no image named or with ID prefix 'nope'")
    );
    let out = env.run(&["image", "import", "/does/not/exist"]);
    assert_eq!(out.status.code(), Some(3));
    let id = env.ok_id(&[
        "image",
        "import",
        env.small_image("p:1", "p").to_str().unwrap(),
    ]);
    let short = &id[7..11];
    let rec: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "inspect", short])).unwrap();
    assert_eq!(rec["id"], id.as_str());
    let fmt = env.ok(&["image", "ls", "--format", "{{.ID}} {{.Names}}"]);
    assert_eq!(fmt.trim(), format!("{id} docker.io/library/p:1"));
    let not_archive = env.dir.path().join("junk");
    std::fs::create_dir(&not_archive).unwrap();
    let out = env.run(&["image", "import", not_archive.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("neither a docker-save archive nor an OCI image layout"));
}
