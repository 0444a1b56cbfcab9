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
    let id = env.ok_id(&["kernel", "import", path.to_str().unwrap(), "--default"]);
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

/// A minimal Debian package (an `ar` archive with a plain data.tar) holding
/// `vmlinuz` and one module of kernel `version`.
fn tiny_kernel_deb(path: &std::path::Path, version: &str) {
    let vmlinux = ignis_kernel::elf::test_elf(format!("Linux version {version} (t) #1").as_bytes());
    let mut t = tar::Builder::new(Vec::new());
    let mut add = |p: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        t.append_data(&mut h, p, data).unwrap();
    };
    add(&format!("./boot/vmlinuz-{version}"), &vmlinux);
    add(
        &format!("./lib/modules/{version}/kernel/drivers/virtio.ko"),
        b"\x7fELF module",
    );
    let data = t.into_inner().unwrap();
    let mut ar = b"!<arch>\n".to_vec();
    for (name, body) in [
        ("debian-binary", &b"2.0\n"[..]),
        ("control.tar", &[][..]),
        ("data.tar", &data[..]),
    ] {
        ar.extend_from_slice(
            format!(
                "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                0,
                0,
                0,
                "100644",
                body.len()
            )
            .as_bytes(),
        );
        ar.extend_from_slice(body);
        if body.len() % 2 == 1 {
            ar.push(b'\n');
        }
    }
    std::fs::write(path, ar).unwrap();
}

/// `kernel import apt:PKG`, with apt-cache and apt-get stand-ins on PATH:
/// the metapackage resolves to the versioned package, whose download is
/// imported; a download that fails is "unavailable", exit code 5, and says
/// what to do.
#[test]
fn kernel_import_apt_resolves_downloads_and_a_failure_is_exit_5() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let dir = env.dir.path();
    let deb = dir.join("linux-image-6.1.0-99-amd64_6.1.1-1_amd64.deb");
    tiny_kernel_deb(&deb, "6.1.0-99-amd64");
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.join("apt.log");
    let script = |name: &str, body: String| {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script(
        "apt-cache",
        "[ \"$1 $2\" = 'depends linux-image-amd64' ] && printf 'linux-image-amd64\\n  Depends: linux-image-6.1.0-99-amd64\\n'\nexit 0\n".into(),
    );
    script(
        "apt-get",
        format!(
            "echo \"$*\" >> {log}\nif [ \"$1 $2\" = 'download linux-image-6.1.0-99-amd64' ]; then cp {deb} .; else echo \"E: Unable to locate package $2\" >&2; exit 100; fi\n",
            log = log.display(),
            deb = deb.display()
        ),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let import = |pkg: &str| {
        env.cmd()
            .env("PATH", &path)
            .args(["kernel", "import", pkg, "--default"])
            .output()
            .unwrap()
    };
    let out = import("apt:linux-image-amd64");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let k: serde_json::Value =
        serde_json::from_str(&env.ok(&["kernel", "inspect", "default"])).unwrap();
    assert_eq!(k["version"], "6.1.0-99-amd64", "{k}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "download linux-image-6.1.0-99-amd64\n",
        "the metapackage is resolved before the download"
    );

    let out = import("apt:linux-image-6.1.0-98-amd64");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("run apt-get update first"), "{err}");
    let kernels: serde_json::Value =
        serde_json::from_str(&env.ok(&["kernel", "ls", "-o", "json"])).unwrap();
    assert_eq!(kernels.as_array().unwrap().len(), 1, "{kernels}");
}
