//! A persistent TAP owned by a user: what an unprivileged VMM (Firecracker
//! under its jailer) opens, since it may not create one. Hand-written: four
//! ioctls on /dev/net/tun; rtnetlink cannot create a TAP with an owner.

use std::os::fd::AsRawFd;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const TUNSETGROUP: libc::c_ulong = 0x4004_54ce;

/// Creates TAP `name` (the flags Firecracker opens it with: IFF_TAP,
/// IFF_NO_PI, IFF_VNET_HDR), owned by `uid`/`gid`, persisting after this
/// descriptor closes. Delete it with netlink (`ip link del`).
#[allow(unsafe_code)]
pub fn create_persistent(name: &str, uid: u32, gid: u32) -> std::io::Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // The three flags fit the 16-bit field (0x0002 | 0x1000 | 0x4000).
    req.ifr_ifru.ifru_flags =
        libc::c_short::try_from(libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR)
            .expect("TAP flags fit in 16 bits");
    let fd = tun.as_raw_fd();
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: valid descriptor; TUNSETIFF reads and writes the ifreq we own;
    // the others take an integer argument.
    unsafe {
        check(libc::ioctl(fd, TUNSETIFF, &mut req))?;
        check(libc::ioctl(fd, TUNSETOWNER, libc::c_ulong::from(uid)))?;
        check(libc::ioctl(fd, TUNSETGROUP, libc::c_ulong::from(gid)))?;
        check(libc::ioctl(fd, TUNSETPERSIST, 1 as libc::c_ulong))?;
    }
    Ok(())
}
