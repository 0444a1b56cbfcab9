//! The Debian 12 + cloud-init image of the live cloud-init tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use ignis_testkit::{ImageSpec, OciWriter};

/// The rootfs tarball: IGNIS_TEST_CLOUD_ROOTFS, else what
/// scripts/cloud-image.sh builds (or finds cached). `None` after a skip
/// line (for `tier`) when this machine cannot build it (not root, no
/// debootstrap).
pub fn rootfs(tier: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IGNIS_TEST_CLOUD_ROOTFS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/cloud-image.sh");
    let has_debootstrap = ["/usr/sbin/debootstrap", "/usr/bin/debootstrap"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    let out = Command::new("bash").arg(script).output().unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        // Only a missing tool is a skip; a failing debootstrap is a failure.
        if !rustix::process::geteuid().is_root() || !has_debootstrap {
            super::tier::skip(
                tier,
                "the cloud-init image needs root and debootstrap (scripts/deps.sh installs it)",
            );
            return None;
        }
        panic!("scripts/cloud-image.sh failed: {err}");
    }
    Some(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// Imports the rootfs tarball as `debian-cloud:12`.
pub fn import_image(env: &super::Env, rootfs: &Path) {
    // The tarball is one (gzip) layer of an OCI layout.
    let layer = std::fs::read(rootfs).unwrap();
    let spec = ImageSpec {
        layers: vec![layer],
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        gzip: true,
        name: Some("debian-cloud:12".into()),
        ..Default::default()
    };
    let dir = env.dir.path().join("img-debian-cloud");
    let files = OciWriter::oci_files(&spec);
    drop(spec);
    OciWriter::write_dir(&files, &dir).unwrap();
    drop(files);
    env.ok(&["image", "import", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
}
