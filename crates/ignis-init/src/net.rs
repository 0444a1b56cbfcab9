//! Static network configuration of the guest (no DHCP wait): lo and eth0
//! up, eth0's address, the default route. Plain ioctls: the init has no
//! netlink library and needs three calls.

use std::net::Ipv4Addr;

use ignis_guest_config::GuestNet;

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    r
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; this is
    // how the socket API passes IPv4 addresses.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(fd: i32, req: libc::c_ulong, arg: *mut libc::c_void, what: &str) -> Result<(), String> {
    // SAFETY: `arg` points to a live ifreq/rtentry of the type `req` expects.
    if unsafe { libc::ioctl(fd, req, arg) } < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn up(fd: i32, name: &str) -> Result<(), String> {
    let mut r = ifreq(name);
    ioctl(
        fd,
        libc::SIOCGIFFLAGS,
        (&mut r as *mut libc::ifreq).cast(),
        &format!("get flags of {name}"),
    )?;
    // SAFETY: the union member written by SIOCGIFFLAGS.
    unsafe {
        r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    ioctl(
        fd,
        libc::SIOCSIFFLAGS,
        (&mut r as *mut libc::ifreq).cast(),
        &format!("bring {name} up"),
    )
}

pub fn configure(net: &GuestNet) -> Result<(), String> {
    let ip: Ipv4Addr = net
        .ip
        .parse()
        .map_err(|_| format!("bad guest IP {}", net.ip))?;
    let gw: Ipv4Addr = net
        .gateway
        .parse()
        .map_err(|_| format!("bad gateway {}", net.gateway))?;
    let mask = Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(net.prefix))
            .unwrap_or(0),
    );
    // eth0 appears once virtio_net has probed.
    for _ in 0..500 {
        if std::path::Path::new("/sys/class/net/eth0").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: a plain socket for interface ioctls, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    let result = (|| {
        up(fd, "lo")?;
        let mut r = ifreq("eth0");
        r.ifr_ifru.ifru_addr = sockaddr(ip);
        ioctl(
            fd,
            libc::SIOCSIFADDR,
            (&mut r as *mut libc::ifreq).cast(),
            "set eth0's address",
        )?;
        let mut r = ifreq("eth0");
        r.ifr_ifru.ifru_netmask = sockaddr(mask);
        ioctl(
            fd,
            libc::SIOCSIFNETMASK,
            (&mut r as *mut libc::ifreq).cast(),
            "set eth0's netmask",
        )?;
        up(fd, "eth0")?;
        // SAFETY: rtentry is plain old data; all-zero is valid.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr(gw);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        ioctl(
            fd,
            libc::SIOCADDRT,
            (&mut rt as *mut libc::rtentry).cast(),
            "add the default route",
        )
    })();
    // SAFETY: closing the socket opened above.
    unsafe {
        libc::close(fd);
    }
    result
}
