//! `ignis kernel` through the real binary.

mod common;

use common::Env;
use std::io::Write;

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn import_a_bzimage_extracts_the_elf_and_names_it_by_release() {
    let env = Env::new();
    let elf = ignis_kernel::elf::test_elf(b"Linux version 6.6.6-test (t) #1");
    let bz = ignis_kernel::bzimage::test_bzimage(&gz(&elf), "6.6.6-test");
    let path = env.dir.path().join("vmlinuz");
    std::fs::write(&path, bz).unwrap();
    let id = env
        .ok(&["kernel", "import", path.to_str().unwrap(), "--default"])
        .trim()
        .to_string();
    assert_eq!(
        id,
        ignis_testkit::sha256(&elf),
        "the kernel ID is the digest of the ELF vmlinux"
    );
    let rec: serde_json::Value =
        serde_json::from_str(&env.ok(&["kernel", "inspect", "default"])).unwrap();
    assert_eq!(rec["version"], "6.6.6-test");
    assert_eq!(rec["names"], serde_json::json!(["6.6.6-test", "default"]));
    assert!(rec["bzimageDigest"].is_string());
    let table = env.ok(&["kernel", "ls"]);
    assert!(table.contains("6.6.6-test,default"), "{table}");
    env.ok(&["kernel", "rm", "default"]);
    assert!(env.blobs().is_empty(), "blobs collected");
}

#[test]
fn a_file_that_is_not_an_x86_64_kernel_is_refused() {
    let env = Env::new();
    let arm = {
        let mut e = ignis_kernel::elf::test_elf(b"x");
        e[0x12] = 0xb7;
        e
    };
    for (name, data, want) in [
        (
            "script",
            b"#!/bin/sh\necho not a kernel\n".to_vec(),
            "neither an ELF vmlinux nor a bzImage",
        ),
        ("arm64", arm, "not x86_64"),
    ] {
        let path = env.dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        let out = env.run(&["kernel", "import", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{name}: {err}");
    }
    assert_eq!(env.ok(&["kernel", "ls", "-o", "json"]).trim(), "[]");
    env.ok(&["system", "prune"]);
    assert!(env.blobs().is_empty());
}

/// The default kernel from Debian's linux-image-amd64 package. `.ci/run`
/// downloads the package with apt and sets IGNIS_TEST_KERNEL_DEB.
#[test]
fn import_the_debian_kernel_package() {
    let Some(deb) = std::env::var_os("IGNIS_TEST_KERNEL_DEB") else {
        common::tier::skip(
            common::tier::KERNEL,
            "IGNIS_TEST_KERNEL_DEB not set (scripts/kernel-deb.sh downloads the .deb)",
        );
        return;
    };
    // The real import (every other live test clones the shared fixture).
    let env = Env::for_tier(common::tier::KERNEL);
    env.ok(&["kernel", "import", deb.to_str().unwrap(), "--default"]);
    let rec: serde_json::Value =
        serde_json::from_str(&env.ok(&["kernel", "inspect", "default"])).unwrap();
    let version = rec["version"].as_str().unwrap();
    assert!(version.ends_with("-amd64"), "{version}");
    assert!(rec["modulesDigest"].is_string());
    assert!(
        rec["vmlinuxSize"].as_u64().unwrap() > 20 << 20,
        "an uncompressed vmlinux is tens of MB"
    );
    // The module tree holds the virtio drivers the guest init will load.
    let hex = rec["modulesDigest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let f = std::fs::File::open(env.root().join("blobs/sha256").join(hex)).unwrap();
    let mut tar = tar::Archive::new(zstd_reader(f));
    let names: Vec<String> = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    for m in [
        "virtio_blk.ko",
        "virtio_net.ko",
        "vmw_vsock_virtio_transport.ko",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(m)),
            "{m} missing from the module tree"
        );
    }
}

fn zstd_reader(f: std::fs::File) -> impl std::io::Read {
    zstd::stream::read::Decoder::new(f).expect("zstd")
}
