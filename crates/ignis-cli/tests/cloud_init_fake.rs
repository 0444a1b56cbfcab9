//! cloud-init NoCloud seeds (`--user-data`, `--meta-data`, manifest
//! `spec.userData`/`spec.metaData`) through the real binary on the fake
//! VMM: the seed disk in the VM's directory read back with the `fatfs`
//! crate, no seed unless asked, bad input refused naming the flag with
//! nothing left behind, forks with a seed of their own, `rm`. The guest
//! side (cloud-init applying it) is tests/cloud_init.rs on QEMU.

#![cfg(feature = "fake-vmm")]

mod common;

use common::Env;
use std::io::Read;
use std::path::PathBuf;

fn seed_path(env: &Env, id: &str) -> PathBuf {
    env.root().join("vms").join(id).join("seed.img")
}

/// The seed's label and files (name, text), as the crate reads them.
fn read_seed(path: &std::path::Path) -> (String, Vec<(String, String)>) {
    let fs = fatfs::FileSystem::new(std::fs::File::open(path).unwrap(), fatfs::FsOptions::new())
        .unwrap();
    let label = fs.volume_label();
    let mut files = Vec::new();
    for e in fs.root_dir().iter() {
        let e = e.unwrap();
        let mut s = String::new();
        e.to_file().read_to_string(&mut s).unwrap();
        files.push((e.file_name(), s));
    }
    (label, files)
}

fn file<'a>(files: &'a [(String, String)], name: &str) -> &'a str {
    &files
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in {files:?}"))
        .1
}

fn yaml(s: &str) -> serde_yaml::Value {
    serde_yaml::from_str(s).unwrap()
}

#[test]
fn user_data_and_meta_data_make_a_seed_that_goes_with_rm() {
    let (env, img) = Env::fake_app();
    let ud = env.root().join("../user-data.yaml");
    std::fs::write(&ud, "#cloud-config\nhostname: seeded\n").unwrap();
    let md = env.root().join("../meta-data.yaml");
    std::fs::write(&md, "zone: east\n").unwrap();
    let id = env.ok_id(&[
        "run",
        "--backend",
        "fake",
        "--network",
        "none",
        "--name",
        "ci",
        "--user-data",
        ud.to_str().unwrap(),
        "--meta-data",
        md.to_str().unwrap(),
        &img,
    ]);
    let (label, files) = read_seed(&seed_path(&env, &id));
    assert_eq!(label, "cidata");
    assert_eq!(
        file(&files, "user-data"),
        "#cloud-config\nhostname: seeded\n"
    );
    let meta = yaml(file(&files, "meta-data"));
    assert_eq!(meta["instance-id"], id.as_str());
    assert_eq!(meta["local-hostname"], "ci");
    assert_eq!(meta["zone"], "east");
    // --network none: no network-config.
    assert!(
        !files.iter().any(|(n, _)| n == "network-config"),
        "{files:?}"
    );
    // Kept in the spec (the content), and in the manifest `get` prints.
    let v = env.vm_json("ci");
    assert_eq!(v["spec"]["userData"], "#cloud-config\nhostname: seeded\n");
    assert_eq!(v["spec"]["metaData"], "zone: east\n");
    let m = env.ok(&["get", "vm", "ci"]);
    assert!(m.contains("userData:") && m.contains("metaData:"), "{m}");
    // No flag, no seed.
    let plain = env.fake_vm("run", "plain", &img);
    assert!(env.root().join("vms").join(&plain).is_dir());
    assert!(!seed_path(&env, &plain).exists());
    assert!(env.vm_json("plain")["spec"]["userData"].is_null());
    // rm takes the seed with the VM's directory.
    env.ok(&["rm", "-f", "ci", "plain"]);
    assert!(!env.root().join("vms").join(&id).exists());
}

#[test]
fn a_manifest_carries_the_content_and_ssh_keys_go_to_public_keys() {
    let (env, img) = Env::fake_app();
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH1 test@host";
    let manifest = env.root().join("../vm.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata:\n  name: from-manifest\nspec:\n  image: {img}\n  backend: fake\n  network:\n    mode: none\n  ssh: \"{key}\"\n  userData: |\n    #cloud-config\n    runcmd: [true]\n"
        ),
    )
    .unwrap();
    let id = env.ok_id(&["run", "--config", manifest.to_str().unwrap()]);
    let (_, files) = read_seed(&seed_path(&env, &id));
    assert_eq!(file(&files, "user-data"), "#cloud-config\nruncmd: [true]\n");
    let meta = yaml(file(&files, "meta-data"));
    assert_eq!(meta["public-keys"], yaml(&format!("['{key}']")));
    assert_eq!(meta["local-hostname"], "from-manifest");
    env.ok(&["rm", "-f", "from-manifest"]);
}

#[test]
fn bad_seed_input_is_refused_naming_the_flag_and_leaves_nothing() {
    let (env, img) = Env::fake_app();
    let dir = env.root().join("../inputs");
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big");
    std::fs::write(&big, vec![b'#'; (1 << 20) + 1]).unwrap();
    let binary = dir.join("binary");
    std::fs::write(&binary, [0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe]).unwrap();
    let nul = dir.join("nul");
    std::fs::write(&nul, b"#cloud-config\n\0").unwrap();
    let list = dir.join("list");
    std::fs::write(&list, "- a\n- b\n").unwrap();
    let missing = dir.join("missing");
    let vms_before = std::fs::read_dir(env.root().join("vms"))
        .map(|d| d.count())
        .unwrap_or(0);
    for (flag, path, says) in [
        ("--user-data", &missing, "cannot read"),
        ("--user-data", &big, "larger than 1 MiB"),
        ("--user-data", &binary, "not text"),
        ("--user-data", &nul, "NUL"),
        ("--meta-data", &list, "not a YAML mapping"),
        ("--meta-data", &missing, "cannot read"),
    ] {
        for verb in ["create", "run"] {
            let out = env.run(&[
                verb,
                "--backend",
                "fake",
                "--name",
                "bad",
                flag,
                path.to_str().unwrap(),
                &img,
            ]);
            // Docker's convention: `run` reports its own failures as 125.
            common::assert_exit(&out, if verb == "run" { 125 } else { 1 });
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(&format!("{flag}: ")) && err.contains(says),
                "{flag} {}: {err}",
                path.display()
            );
        }
    }
    assert_eq!(env.ok(&["ps", "-a", "-q"]).trim(), "");
    let vms_after = std::fs::read_dir(env.root().join("vms"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(vms_after, vms_before, "no VM directory left behind");
    // The same checks hold for a manifest's content (the daemon's path).
    let manifest = dir.join("vm.yaml");
    std::fs::write(
        &manifest,
        format!("apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata:\n  name: bad\nspec:\n  image: {img}\n  backend: fake\n  metaData: \"[1, 2]\"\n"),
    )
    .unwrap();
    let out = env.run(&["create", "--config", manifest.to_str().unwrap()]);
    common::assert_exit(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--meta-data: not a YAML mapping"), "{err}");
    assert_eq!(env.ok(&["ps", "-a", "-q"]).trim(), "");
}

#[test]
fn a_fork_gets_a_seed_of_its_own() {
    let (env, img) = Env::fake_app();
    let ud = env.root().join("../ud");
    std::fs::write(&ud, "#cloud-config\n").unwrap();
    let src = env.ok_id(&[
        "run",
        "--backend",
        "fake",
        "--network",
        "none",
        "--size",
        "64MB",
        "--memory",
        "64MB",
        "--name",
        "src",
        "--user-data",
        ud.to_str().unwrap(),
        &img,
    ]);
    env.ok(&["snapshot", "src", "--name", "s"]);
    let ids = env.ok(&["fork", "s", "-n", "2"]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    assert_eq!(ids.len(), 2);
    for (i, id) in ids.iter().enumerate() {
        assert_ne!(*id, src);
        let (_, files) = read_seed(&seed_path(&env, id));
        let meta = yaml(file(&files, "meta-data"));
        assert_eq!(meta["instance-id"], *id, "a new instance-id");
        assert_eq!(meta["local-hostname"], format!("s-{}", i + 1));
        assert_eq!(file(&files, "user-data"), "#cloud-config\n");
    }
    env.ok(&["rm", "-f", "src", ids[0], ids[1]]);
}
