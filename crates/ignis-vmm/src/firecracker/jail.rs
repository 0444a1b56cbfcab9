//! Firecracker under its jailer: the VMM runs chrooted in
//! `<vm dir>/jail/<firecracker>/<id>/root` (pivot_root in a mount namespace
//! of its own), as its own uid/gid, with only `/dev/kvm`, `/dev/net/tun`
//! and `/dev/urandom` as device nodes. Everything it opens is placed in the
//! chroot first: hard links to the kernel, initrd, disks and snapshot files
//! (no copies; a copy only where the store is on another filesystem), the
//! writable disk handed to the jail's user. Read-only files stay root's, so
//! a compromised VMM cannot alter the shared image or snapshot blobs.
//!
//! The host reaches the API and vsock sockets through symlinks in the VM
//! directory, so control, the agent and snapshots work as for a plain
//! Firecracker.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{VmSpec, VmmError};

pub const BINARY: &str = "jailer";
/// The jail's base directory inside the VM directory.
pub const JAIL_DIR: &str = "jail";

/// The chroot of the VM whose runtime directory is `dir`, if it runs (or
/// ran) jailed.
pub fn root_of(dir: &Path) -> Option<PathBuf> {
    let id = dir.file_name()?;
    std::fs::read_dir(dir.join(JAIL_DIR))
        .ok()?
        .flatten()
        .map(|e| e.path().join(id).join("root"))
        .find(|r| r.is_dir())
}

/// Places `src` in the jail as `dst`: a hard link, or a copy across
/// filesystems.
fn place(src: &Path, dst: &Path) -> Result<(), VmmError> {
    let _ = std::fs::remove_file(dst);
    match std::fs::hard_link(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(18) => std::fs::copy(src, dst)
            .map(drop)
            .map_err(VmmError::file("copy into the jail", src)),
        Err(e) => Err(VmmError::file("link into the jail", src)(e)),
    }
}

fn is_block_device(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())
}

/// A device node in the jail for the block device `src`, owned by the
/// jail's user.
fn block_node(src: &Path, dst: &Path, uid: u32, gid: u32) -> Result<(), VmmError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(src).map_err(VmmError::file("stat", src))?;
    let _ = std::fs::remove_file(dst);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dst,
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        meta.rdev(),
    )
    .map_err(|e| VmmError::file("make a device node in the jail for", src)(e.into()))?;
    std::os::unix::fs::chown(dst, Some(uid), Some(gid))
        .map_err(VmmError::file("hand to the jail's user", dst))
}

/// A hard link to a volume's file (same filesystem only).
fn link_volume(src: &Path, dst: &Path) -> Result<(), VmmError> {
    let _ = std::fs::remove_file(dst);
    std::fs::hard_link(src, dst).map_err(VmmError::file(
        "link into the jail (under the jailer a volume file must be on the state root's filesystem)",
        src,
    ))
}

/// Moves a file the jailed VMM wrote out of the jail.
pub fn take_out(src: &Path, dst: &Path) -> Result<(), VmmError> {
    match std::fs::rename(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(18) => {
            std::fs::copy(src, dst).map_err(VmmError::file("copy out of the jail", src))?;
            let _ = std::fs::remove_file(src);
            Ok(())
        }
        Err(e) => Err(VmmError::file("move out of the jail", src)(e)),
    }
}

/// Prepares the jail for `spec` and returns the jailer command and the
/// spec as the jailed Firecracker sees it (paths inside the chroot, which
/// [`super::config`] turns into relative names).
pub fn command(
    jailer: &Path,
    firecracker: &Path,
    spec: &VmSpec,
) -> Result<(Command, VmSpec), VmmError> {
    let (uid, gid) = spec.confine.user.ok_or(VmmError::NoJailUser)?;
    let exec =
        std::fs::canonicalize(firecracker).map_err(VmmError::file("resolve", firecracker))?;
    let exec_name = exec.file_name().ok_or_else(|| VmmError::NotInstalled {
        binary: exec.display().to_string(),
        hint: "the firecracker path names no file",
    })?;
    let base = spec.dir.join(JAIL_DIR);
    let root = base.join(exec_name).join(&spec.id).join("root");
    // A jail left from an earlier run (the jailer refuses to reuse its
    // copy of the binary; links may point at old files).
    let _ = std::fs::remove_dir_all(base.join(exec_name).join(&spec.id));
    std::fs::create_dir_all(&root).map_err(VmmError::file("create", &root))?;

    let mut jailed = spec.clone();
    jailed.dir = root.clone();
    place(&spec.vmlinux, &root.join("vmlinux"))?;
    jailed.vmlinux = root.join("vmlinux");
    place(&spec.initrd, &root.join("initrd.img"))?;
    jailed.initrd = root.join("initrd.img");
    for (i, d) in jailed.disks.iter_mut().enumerate() {
        let inside = root.join(format!("disk{i}.img"));
        if is_block_device(&d.path) {
            // A host block device (a volume): a node of the same device,
            // the jail user's, inside the jail (a link cannot leave /dev).
            block_node(&d.path, &inside, uid, gid)?;
            d.path = inside;
            continue;
        }
        if d.serial.is_some() {
            // A volume file is linked, never copied: a copy would lose
            // the guest's writes (or copy a whole disk image).
            link_volume(&d.path, &inside)?;
        } else {
            place(&d.path, &inside)?;
        }
        if !d.read_only {
            std::os::unix::fs::chown(&inside, Some(uid), Some(gid))
                .map_err(VmmError::file("hand to the jail's user", &d.path))?;
        }
        d.path = inside;
    }
    if let Some(r) = &mut jailed.restore {
        // Not the names a snapshot of this VM is written to: those files
        // are moved out, these are links to shared blobs.
        place(&r.state, &root.join("restore.vmstate"))?;
        place(&r.memory, &root.join("restore.memory"))?;
        r.state = root.join("restore.vmstate");
        r.memory = root.join("restore.memory");
    }
    // Its log: a file in the VM directory (it outlives the jail), linked in.
    let log = spec.dir.join(super::LOG_FILE);
    super::fresh_log(&log)?;
    place(&log, &root.join(super::LOG_FILE))?;
    std::os::unix::fs::chown(&log, Some(uid), Some(gid))
        .map_err(VmmError::file("hand to the jail's user", &log))?;
    // Its metrics FIFO (read by the supervisor), when there is one.
    let fifo = spec.dir.join(super::metrics::METRICS_FIFO);
    let metrics = fifo.exists();
    if metrics {
        place(&fifo, &root.join(super::metrics::METRICS_FIFO))?;
        std::os::unix::fs::chown(&fifo, Some(uid), Some(gid))
            .map_err(VmmError::file("hand to the jail's user", &fifo))?;
    }
    // An unprivileged Firecracker cannot create its TAP: it opens one made
    // for its user (the supervisor enslaves it to the bridge as usual and
    // deletes it when the VM stops).
    // In a VM's network namespace (CNI) its TAPs exist already, made
    // for this user.
    if spec.netns.is_none() {
        for n in &spec.net {
            crate::tap::create_persistent(&n.tap, uid, gid).map_err(VmmError::file(
                "create the jailed VMM's TAP",
                Path::new(&n.tap),
            ))?;
        }
    }
    // The host's way in: symlinks from the VM directory to the sockets the
    // jailed VMM creates at its root.
    for sock in [super::API_SOCKET, super::VSOCK_SOCKET] {
        let link = spec.dir.join(sock);
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_file(root.join(sock));
        let target = Path::new(JAIL_DIR)
            .join(exec_name)
            .join(&spec.id)
            .join("root")
            .join(sock);
        std::os::unix::fs::symlink(&target, &link).map_err(VmmError::file("link", &link))?;
    }
    let mut cmd = Command::new(jailer);
    cmd.arg("--id")
        .arg(&spec.id)
        .arg("--exec-file")
        .arg(&exec)
        .arg("--uid")
        .arg(uid.to_string())
        .arg("--gid")
        .arg(gid.to_string())
        .arg("--chroot-base-dir")
        .arg(&base);
    if let Some(ns) = &spec.netns {
        cmd.arg("--netns").arg(ns);
    }
    cmd.arg("--")
        .arg("--api-sock")
        .arg(format!("/{}", super::API_SOCKET))
        .arg("--log-path")
        .arg(format!("/{}", super::LOG_FILE))
        .arg("--level")
        .arg(super::LOG_LEVEL);
    if metrics {
        cmd.arg("--metrics-path")
            .arg(format!("/{}", super::metrics::METRICS_FIFO));
    }
    Ok((cmd, jailed))
}

/// Removes the jail of the VM in `dir` (after its VMM exited).
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir.join(JAIL_DIR));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block device node to jail (as root only: mknod needs it).
    fn block_device() -> Option<PathBuf> {
        let p = PathBuf::from("/dev/loop0");
        (rustix::process::geteuid().is_root() && is_block_device(&p)).then_some(p)
    }

    #[test]
    fn prepares_links_owner_and_relative_paths() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store");
        std::fs::create_dir(&store).unwrap();
        for f in ["vmlinux", "image.ext4", "state", "mem", "vol.ext4"] {
            std::fs::write(store.join(f), f).unwrap();
        }
        let dir = d.path().join("vms/abc123");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("initrd.img"), "initrd").unwrap();
        std::fs::write(dir.join("data.ext4"), "data").unwrap();
        let fc = d.path().join("firecracker");
        std::fs::write(&fc, "").unwrap();
        let spec = VmSpec {
            id: "abc123".into(),
            dir: dir.clone(),
            vmlinux: store.join("vmlinux"),
            initrd: dir.join("initrd.img"),
            cmdline: String::new(),
            vcpus: 1,
            memory_mib: 128,
            disks: vec![
                crate::DiskSpec {
                    path: store.join("image.ext4"),
                    read_only: true,
                    serial: None,
                },
                crate::DiskSpec {
                    path: dir.join("data.ext4"),
                    read_only: false,
                    serial: None,
                },
                // Volumes: a writable file, a read-only block device.
                crate::DiskSpec {
                    path: store.join("vol.ext4"),
                    read_only: false,
                    serial: Some("ignis-vol0".into()),
                },
            ]
            .into_iter()
            .chain(block_device().map(|b| crate::DiskSpec {
                path: b,
                read_only: true,
                serial: Some("ignis-vol1".into()),
            }))
            .collect(),
            accel: crate::Accel::Kvm,
            net: vec![],
            netns: None,
            restore: Some(crate::RestoreSpec {
                state: store.join("state"),
                memory: store.join("mem"),
            }),
            confine: crate::Confinement {
                user: Some((1_000_123, 1_000_124)),
                jailer: Some("/usr/bin/jailer".into()),
                ..Default::default()
            },
        };
        let (cmd, jailed) = command(Path::new("/usr/bin/jailer"), &fc, &spec).unwrap();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let base = dir.join("jail");
        assert_eq!(
            args,
            [
                "--id",
                "abc123",
                "--exec-file",
                fc.to_str().unwrap(),
                "--uid",
                "1000123",
                "--gid",
                "1000124",
                "--chroot-base-dir",
                base.to_str().unwrap(),
                "--",
                "--api-sock",
                "/firecracker.sock",
                "--log-path",
                "/firecracker.log",
                "--level",
                "Warning"
            ]
        );
        let root = base.join("firecracker/abc123/root");
        assert_eq!(root_of(&dir), Some(root.clone()));
        // Hard links, not copies.
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&root.join("disk0.img")), ino(&store.join("image.ext4")));
        assert_eq!(ino(&root.join("restore.memory")), ino(&store.join("mem")));
        // Only the writable disk belongs to the jail's user (as root).
        if rustix::process::geteuid().is_root() {
            assert_eq!(
                std::fs::metadata(dir.join("data.ext4")).unwrap().uid(),
                1_000_123
            );
            assert_eq!(
                std::fs::metadata(store.join("image.ext4")).unwrap().uid(),
                0
            );
        }
        // What Firecracker is told: names relative to its chroot.
        let load = super::super::load_call(&jailed, jailed.restore.as_ref().unwrap());
        assert_eq!(load["snapshot_path"], "restore.vmstate");
        assert_eq!(load["mem_backend"]["backend_path"], "restore.memory");
        let c = super::super::config(&jailed);
        assert_eq!(c["boot-source"]["kernel_image_path"], "vmlinux");
        assert_eq!(c["boot-source"]["initrd_path"], "initrd.img");
        assert_eq!(c["drives"][0]["path_on_host"], "disk0.img");
        assert_eq!(c["drives"][1]["path_on_host"], "disk1.img");
        // A writable volume file: linked and the jail user's; a block
        // device: a node of the same device in the jail, read-only.
        assert_eq!(ino(&root.join("disk2.img")), ino(&store.join("vol.ext4")));
        assert_eq!(c["drives"][2]["path_on_host"], "disk2.img");
        assert_eq!(c["drives"][2]["is_read_only"], false);
        if let Some(b) = block_device() {
            let node = std::fs::metadata(root.join("disk3.img")).unwrap();
            assert_eq!(node.rdev(), std::fs::metadata(&b).unwrap().rdev());
            assert_eq!(node.uid(), 1_000_123);
            assert_eq!(c["drives"][3]["path_on_host"], "disk3.img");
            assert_eq!(c["drives"][3]["is_read_only"], true);
            assert_eq!(
                std::fs::metadata(store.join("vol.ext4")).unwrap().uid(),
                1_000_123
            );
        }
        // The host's sockets point into the jail.
        assert_eq!(
            std::fs::read_link(dir.join("firecracker.sock")).unwrap(),
            Path::new("jail/firecracker/abc123/root/firecracker.sock")
        );
        remove(&dir);
        assert!(root_of(&dir).is_none());
        assert!(store.join("image.ext4").exists(), "the store is untouched");
    }
}
