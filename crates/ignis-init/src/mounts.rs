use std::path::Path;

use ignis_guest_config::GuestConfig;
use rustix::io::Errno;
use rustix::mount::{mount, mount_move, unmount, MountFlags, UnmountFlags};

const LOWER: &str = "/mnt/lower";
const UPPER: &str = "/mnt/upper";
pub const NEWROOT: &str = "/newroot";

/// Why preparing the guest's root filesystem failed.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("mkdir {path}")]
    Mkdir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("mount options for {0} contain NUL")]
    Options(String),
    #[error("mount {src} on {target} ({fstype})")]
    Mount {
        src: String,
        target: String,
        fstype: String,
        #[source]
        source: Errno,
    },
    #[error("disk {0} did not appear within 5 s (is the virtio_blk module missing?)")]
    NoDisk(String),
    #[error("sethostname")]
    Hostname(#[source] Errno),
    #[error("write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("mkdir for {dest}")]
    MkdirFor {
        dest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("copy {from} to {dest}")]
    Copy {
        from: String,
        dest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("chmod {dest}")]
    Chmod {
        dest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("chdir {path}")]
    Chdir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("move {NEWROOT} to /")]
    Move(#[source] Errno),
    #[error("chroot")]
    Chroot(#[source] Errno),
    #[error("the disk of volume {0} did not appear within 5 s")]
    NoVolume(String),
    #[error("volume {target}: no filesystem mountable from {dev} (tried {tried})")]
    VolumeFs {
        target: String,
        dev: String,
        tried: String,
        #[source]
        source: Errno,
    },
    #[error("volume {0}: the path must be absolute and without '..'")]
    VolumePath(String),
}

fn mkdir(p: &str) -> Result<(), RootError> {
    std::fs::create_dir_all(p).map_err(|source| RootError::Mkdir {
        path: p.into(),
        source,
    })
}

fn mnt(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MountFlags,
    data: &str,
) -> Result<(), RootError> {
    mkdir(target)?;
    let data = std::ffi::CString::new(data).map_err(|_| RootError::Options(target.into()))?;
    mount(src, target, fstype, flags, Some(data.as_c_str())).map_err(|source| RootError::Mount {
        src: src.into(),
        target: target.into(),
        fstype: fstype.into(),
        source,
    })
}

/// /proc, /sys and /dev of the initramfs.
pub fn early() -> Result<(), RootError> {
    mnt("proc", "/proc", "proc", MountFlags::empty(), "")?;
    mnt("sysfs", "/sys", "sysfs", MountFlags::empty(), "")?;
    mnt("devtmpfs", "/dev", "devtmpfs", MountFlags::empty(), "")?;
    Ok(())
}

/// The ext4 volume label of a block device (superblock at 1024,
/// `s_volume_name` at offset 120, 16 bytes).
fn ext4_label(dev: &str) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(dev).ok()?;
    f.seek(SeekFrom::Start(1024 + 120)).ok()?;
    let mut buf = [0u8; 16];
    f.read_exact(&mut buf).ok()?;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(16);
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// Resolves `/dev/vdX` or `LABEL=name` (device order differs between VMMs,
/// labels do not), waiting up to 5 s for the device to appear.
fn wait_for(spec: &str) -> Result<String, RootError> {
    for _ in 0..500 {
        if let Some(label) = spec.strip_prefix("LABEL=") {
            if let Ok(rd) = std::fs::read_dir("/sys/block") {
                for e in rd.flatten() {
                    let dev = format!("/dev/{}", e.file_name().to_string_lossy());
                    if dev.starts_with("/dev/vd") && ext4_label(&dev).as_deref() == Some(label) {
                        return Ok(dev);
                    }
                }
            }
        } else if Path::new(spec).exists() {
            return Ok(spec.to_string());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(RootError::NoDisk(spec.into()))
}

/// The image disk (read-only) under the writable disk, as an overlay.
pub fn root(cfg: &GuestConfig) -> Result<(), RootError> {
    let image = wait_for(&cfg.image_disk)?;
    let data = wait_for(&cfg.data_disk)?;
    mnt(&image, LOWER, "ext4", MountFlags::RDONLY, "")?;
    mnt(&data, UPPER, "ext4", MountFlags::NOATIME, "")?;
    mkdir(&format!("{UPPER}/upper"))?;
    mkdir(&format!("{UPPER}/work"))?;
    mnt(
        "overlay",
        NEWROOT,
        "overlay",
        MountFlags::empty(),
        &format!("lowerdir={LOWER},upperdir={UPPER}/upper,workdir={UPPER}/work"),
    )?;
    mnt("proc", "/newroot/proc", "proc", MountFlags::empty(), "")?;
    mnt("sysfs", "/newroot/sys", "sysfs", MountFlags::empty(), "")?;
    mnt(
        "devtmpfs",
        "/newroot/dev",
        "devtmpfs",
        MountFlags::empty(),
        "",
    )?;
    mnt(
        "devpts",
        "/newroot/dev/pts",
        "devpts",
        MountFlags::empty(),
        "gid=5,mode=620,ptmxmode=666",
    )?;
    mnt(
        "tmpfs",
        "/newroot/dev/shm",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        "mode=1777",
    )?;
    mnt(
        "tmpfs",
        "/newroot/run",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        "mode=755",
    )?;
    Ok(())
}

/// Filesystems tried on a volume, in order, when its superblock names
/// none of them.
const VOLUME_FS: [&str; 4] = ["ext4", "xfs", "btrfs", "vfat"];

/// The filesystem a superblock says (ext2/3/4 magic at 1080, XFS at 0,
/// btrfs at 64 KiB + 64).
fn probe_fs(dev: &str) -> Option<&'static str> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(dev).ok()?;
    let mut at = |off: u64, n: usize| -> Option<Vec<u8>> {
        f.seek(SeekFrom::Start(off)).ok()?;
        let mut b = vec![0u8; n];
        f.read_exact(&mut b).ok()?;
        Some(b)
    };
    if at(1080, 2)? == [0x53, 0xef] {
        return Some("ext4");
    }
    if at(0, 4)? == *b"XFSB" {
        return Some("xfs");
    }
    if at(65536 + 64, 8).as_deref() == Some(b"_BHRfS_M") {
        return Some("btrfs");
    }
    None
}

/// The `vd*` disks in device order (vda, ..., vdz, vdaa, ...).
fn virtio_disks() -> Vec<String> {
    let mut d: Vec<String> = std::fs::read_dir("/sys/block")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("vd"))
                .collect()
        })
        .unwrap_or_default();
    d.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    d
}

/// The disk of the `index`th volume: by serial, else by position after
/// the image and writable disks; waits up to 5 s for every disk.
fn volume_disk(cfg: &GuestConfig, index: usize) -> Result<String, RootError> {
    let want = &cfg.volumes[index];
    let total = 2 + cfg.volumes.len();
    for _ in 0..500 {
        let disks = virtio_disks();
        for d in &disks {
            let serial =
                std::fs::read_to_string(format!("/sys/block/{d}/serial")).unwrap_or_default();
            if serial.trim_end_matches(['\n', '\0']) == want.serial {
                return Ok(format!("/dev/{d}"));
            }
        }
        if disks.len() >= total {
            let others: Vec<&String> = disks
                .iter()
                .filter(|d| {
                    let label = ext4_label(&format!("/dev/{d}"));
                    label.as_deref() != Some("ignis-image")
                        && label.as_deref() != Some("ignis-data")
                })
                .collect();
            if let Some(d) = others.get(index) {
                return Ok(format!("/dev/{d}"));
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(RootError::NoVolume(want.target.clone()))
}

/// Mounts each volume at its path under the new root (made if missing),
/// read-only where asked; the filesystem is probed (ext4 by default).
pub fn volumes(cfg: &GuestConfig) -> Result<(), RootError> {
    for (i, v) in cfg.volumes.iter().enumerate() {
        if !v.target.starts_with('/') || v.target.split('/').any(|c| c == "..") {
            return Err(RootError::VolumePath(v.target.clone()));
        }
        let dev = volume_disk(cfg, i)?;
        let target = format!("{NEWROOT}{}", v.target);
        mkdir(&target)?;
        let mut flags = MountFlags::NOATIME;
        if v.read_only {
            flags |= MountFlags::RDONLY;
        }
        let order: Vec<&str> = match probe_fs(&dev) {
            Some(fs) => vec![fs],
            None => VOLUME_FS.to_vec(),
        };
        let mut last = Errno::NODEV;
        let mut mounted = false;
        for fs in &order {
            // A read-only ext4 with a dirty journal would be replayed:
            // `noload` keeps the disk untouched.
            let data = if v.read_only && *fs == "ext4" {
                c"noload"
            } else {
                c""
            };
            match mount(dev.as_str(), target.as_str(), *fs, flags, Some(data)) {
                Ok(()) => {
                    mounted = true;
                    break;
                }
                Err(e) => last = e,
            }
        }
        if !mounted {
            return Err(RootError::VolumeFs {
                target: v.target.clone(),
                dev,
                tried: order.join(", "),
                source: last,
            });
        }
        if let Ok(mut m) = MOUNTED.lock() {
            m.push(target);
        }
    }
    Ok(())
}

/// The volumes mounted, for [`teardown`].
static MOUNTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Hostname, /etc/hosts, resolv.conf and copied files.
pub fn configure(cfg: &GuestConfig) -> Result<(), RootError> {
    rustix::system::sethostname(cfg.hostname.as_bytes()).map_err(RootError::Hostname)?;
    let etc = format!("{NEWROOT}/etc");
    mkdir(&etc)?;
    let write = |name: &str, data: String| {
        let p = format!("{etc}/{name}");
        // Replace, never write through a symlink the image may have there.
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, data).map_err(|source| RootError::Write { path: p, source })
    };
    write("hostname", format!("{}\n", cfg.hostname))?;
    let extra: String = cfg
        .hosts
        .iter()
        .map(|(ip, name)| format!("{ip}\t{name}\n"))
        .collect();
    write(
        "hosts",
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n{extra}",
            cfg.hostname
        ),
    )?;
    if !cfg.nameservers.is_empty() || !cfg.search.is_empty() {
        let mut conf: String = cfg
            .nameservers
            .iter()
            .map(|n| format!("nameserver {n}\n"))
            .collect();
        if !cfg.search.is_empty() {
            conf.push_str(&format!("search {}\n", cfg.search.join(" ")));
        }
        write("resolv.conf", conf)?;
    }
    for f in &cfg.files {
        let dest = format!("{NEWROOT}/{}", f.dest.trim_start_matches('/'));
        if let Some(parent) = Path::new(&dest).parent() {
            std::fs::create_dir_all(parent).map_err(|source| RootError::MkdirFor {
                dest: f.dest.clone(),
                source,
            })?;
        }
        let _ = std::fs::remove_file(&dest);
        std::fs::copy(&f.source, &dest).map_err(|source| RootError::Copy {
            from: f.source.clone(),
            dest: f.dest.clone(),
            source,
        })?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(f.mode)).map_err(
            |source| RootError::Chmod {
                dest: f.dest.clone(),
                source,
            },
        )?;
    }
    Ok(())
}

/// Unmounts the guest's filesystems so both ext4 disks are clean; errors
/// are ignored (we are powering off either way).
pub fn teardown() {
    rustix::fs::sync();
    let volumes = MOUNTED.lock().map(|m| m.clone()).unwrap_or_default();
    for m in volumes.iter().rev() {
        if unmount(m.as_str(), UnmountFlags::empty()).is_err() {
            let _ = rustix::mount::mount_remount(m.as_str(), MountFlags::RDONLY, "");
        }
    }
    for m in [
        "/newroot/run",
        "/newroot/dev/shm",
        "/newroot/dev/pts",
        "/newroot/dev",
        "/newroot/sys",
        "/newroot/proc",
    ] {
        let _ = unmount(m, UnmountFlags::DETACH);
    }
    for m in [NEWROOT, UPPER, LOWER] {
        if unmount(m, UnmountFlags::empty()).is_err() {
            // Still busy: at least stop writes.
            let _ = rustix::mount::mount_remount(m, MountFlags::RDONLY, "");
        }
    }
    rustix::fs::sync();
}

/// System mode: /newroot becomes / (switch_root: the initramfs cannot be
/// pivoted away from).
pub fn switch_root() -> Result<(), RootError> {
    let chdir = |path: &str| {
        std::env::set_current_dir(path).map_err(|source| RootError::Chdir {
            path: path.into(),
            source,
        })
    };
    chdir(NEWROOT)?;
    mount_move(".", "/").map_err(RootError::Move)?;
    rustix::process::chroot(".").map_err(RootError::Chroot)?;
    chdir("/")
}
