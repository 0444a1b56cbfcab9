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
