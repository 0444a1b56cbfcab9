//! Static network configuration of the guest (no DHCP wait): lo and each
//! NIC up (found by MAC), its address, the default route on the first.
//! Plain ioctls; with several NICs, each NIC's own routing table and rule
//! (source routing, [`crate::policy`]) over netlink.

use std::net::{Ipv4Addr, Ipv6Addr};

use ignis_guest_config::{GuestNet, GuestNic};

/// Why configuring the guest's network failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("bad guest IP {0}")]
    Ip(String),
    #[error("bad gateway {0}")]
    Gateway(String),
    #[error("bad MAC address {0}")]
    Mac(String),
    #[error("no network interface has MAC {0}")]
    NoInterface(String),
    #[error("socket")]
    Socket(#[source] std::io::Error),
    /// An interface ioctl; `what` says which.
    #[error("{what}")]
    Ioctl {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("add the default route")]
    Route(#[source] std::io::Error),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("the guest kernel has no IPv6, but the VM has an IPv6 address ({0})")]
    NoIpv6(String),
    #[error("{what}")]
    Ipv6 {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

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

fn ioctl(fd: i32, req: libc::c_ulong, arg: *mut libc::c_void, what: &str) -> Result<(), NetError> {
    // SAFETY: `arg` points to a live ifreq/rtentry of the type `req` expects.
    if unsafe { libc::ioctl(fd, req, arg) } < 0 {
        return Err(NetError::Ioctl {
            what: what.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn up(fd: i32, name: &str) -> Result<(), NetError> {
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

/// The first NIC, with the main table's default route; `table`: the VM
/// has several NICs, and this one is source-routed through that table too.
pub fn configure(net: &GuestNet, table: Option<u32>) -> Result<(), NetError> {
    let ip: Ipv4Addr = net.ip.parse().map_err(|_| NetError::Ip(net.ip.clone()))?;
    let gw: Ipv4Addr = net
        .gateway
        .parse()
        .map_err(|_| NetError::Gateway(net.gateway.clone()))?;
    let name = match &net.mac {
        Some(mac) => find_by_mac(mac)?,
        None => {
            // eth0 appears once virtio_net has probed.
            wait_for(|| std::path::Path::new("/sys/class/net/eth0").exists());
            "eth0".to_string()
        }
    };
    configure_link(&name, Some((ip, net.prefix)), Some(gw))?;
    if let Some(ip6) = &net.ip6 {
        configure_ipv6(&name, ip6, net.prefix6, net.gateway6.as_deref())?;
    }
    match table {
        Some(t) => source_route(
            &name,
            t,
            Some((net.ip.as_str(), net.prefix, net.gateway.as_str())),
            net.ip6
                .as_deref()
                .map(|a| (a, net.prefix6, net.gateway6.as_deref())),
        ),
        None => Ok(()),
    }
}

/// Source routing of `name` through `table` for each family it has an
/// address and a gateway in (see [`crate::policy`]).
fn source_route(
    name: &str,
    table: u32,
    v4: Option<(&str, u8, &str)>,
    v6: Option<(&str, u8, Option<&str>)>,
) -> Result<(), NetError> {
    let v6 = v6.and_then(|(ip, p, gw)| Some((ip, p, gw?)));
    let sources = [v4, v6]
        .into_iter()
        .flatten()
        .map(|(ip, prefix, gw)| {
            Ok(crate::policy::Source {
                ip: ip.parse().map_err(|_| NetError::Ip(ip.to_string()))?,
                prefix,
                gateway: gw.parse().map_err(|_| NetError::Gateway(gw.to_string()))?,
            })
        })
        .collect::<Result<Vec<_>, NetError>>()?;
    if sources.is_empty() {
        return Ok(());
    }
    let cname = std::ffi::CString::new(name).map_err(|_| NetError::NoInterface(name.into()))?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(NetError::NoInterface(name.into()));
    }
    for s in &sources {
        crate::policy::apply(name, index, table, s)?;
    }
    Ok(())
}

/// A NIC after the first: found by its MAC, its address (with the subnet
/// route the kernel adds), up; no default route in the main table (the
/// first NIC has it) but, with a gateway, source routing through `table`.
pub fn configure_nic(nic: &GuestNic, table: u32) -> Result<(), NetError> {
    let addr = match &nic.ip {
        Some(ip) => Some((
            ip.parse::<Ipv4Addr>()
                .map_err(|_| NetError::Ip(ip.clone()))?,
            nic.prefix,
        )),
        None => None,
    };
    let name = find_by_mac(&nic.mac)?;
    configure_link(&name, addr, None)?;
    if let Some(ip6) = &nic.ip6 {
        configure_ipv6(&name, ip6, nic.prefix6, nic.gateway6.as_deref())?;
    }
    let v4 = match (&nic.ip, &nic.gateway) {
        (Some(ip), Some(gw)) => Some((ip.as_str(), nic.prefix, gw.as_str())),
        _ => None,
    };
    source_route(
        &name,
        table,
        v4,
        nic.ip6
            .as_deref()
            .map(|a| (a, nic.prefix6, nic.gateway6.as_deref())),
    )
}

/// A fork's IPv6 identity: the global addresses `name` has (its source's)
/// removed, `ip/prefix` and the default route set.
pub fn replace_ipv6(
    name: &str,
    ip: &str,
    prefix: u8,
    gateway: Option<&str>,
) -> Result<(), NetError> {
    let new: Ipv6Addr = ip.parse().map_err(|_| NetError::Ip(ip.to_string()))?;
    // /proc/net/if_inet6: ADDR(32 hex) IFINDEX PREFIXLEN SCOPE FLAGS NAME.
    let table = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    for line in table.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [hex, _, plen, scope, _, dev] = f.as_slice() else {
            continue;
        };
        let (Ok(old), Ok(plen)) = (u128::from_str_radix(hex, 16), u8::from_str_radix(plen, 16))
        else {
            continue;
        };
        let old = Ipv6Addr::from(old);
        if *dev == name && *scope == "00" && old != new {
            ipv6_ioctl(name, old, plen, libc::SIOCDIFADDR, "remove")?;
        }
    }
    configure_ipv6(name, ip, prefix, gateway)
}

/// An AF_INET6 socket for ioctls about `name` (closed when dropped), and
/// the interface's index.
fn ipv6_ctl(name: &str) -> Result<(std::os::fd::OwnedFd, libc::c_int), NetError> {
    let cname = std::ffi::CString::new(name).map_err(|_| NetError::NoInterface(name.into()))?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        let source = std::io::Error::last_os_error();
        return Err(NetError::Ipv6 {
            what: format!("find {name}'s index"),
            source,
        });
    }
    // SAFETY: a plain socket for IPv6 ioctls.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(NetError::Socket(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let sock = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    Ok((sock, libc::c_int::try_from(index).unwrap_or(0)))
}

/// SIOCSIFADDR / SIOCDIFADDR of one IPv6 address of `name`.
fn ipv6_ioctl(
    name: &str,
    addr: Ipv6Addr,
    prefix: u8,
    req: libc::c_ulong,
    what: &str,
) -> Result<(), NetError> {
    let fail = |what: String| {
        let source = std::io::Error::last_os_error();
        NetError::Ipv6 { what, source }
    };
    let (sock, index) = ipv6_ctl(name)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    let mut r = libc::in6_ifreq {
        ifr6_addr: in6(addr),
        ifr6_prefixlen: u32::from(prefix),
        ifr6_ifindex: index,
    };
    // SAFETY: `r` is a live in6_ifreq, what the request takes on an
    // AF_INET6 socket.
    let rc = unsafe {
        libc::ioctl(
            fd,
            req,
            (&mut r as *mut libc::in6_ifreq).cast::<libc::c_void>(),
        )
    };
    let result = if rc < 0 {
        Err(fail(format!(
            "{what} {name}'s IPv6 address {addr}/{prefix}"
        )))
    } else {
        Ok(())
    };
    result
}

/// `struct in6_rtmsg` of <linux/ipv6_route.h> (libc's has private fields).
#[repr(C)]
struct In6Rtmsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

fn in6(ip: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: ip.octets(),
    }
}

/// IPv6 on an interface that is up: the address (no duplicate address
/// detection: ignis leased it, and it is usable at once) and, with a
/// gateway, the default route. Ioctls on an AF_INET6 socket, as for IPv4.
fn configure_ipv6(name: &str, ip: &str, prefix: u8, gateway: Option<&str>) -> Result<(), NetError> {
    let addr: Ipv6Addr = ip.parse().map_err(|_| NetError::Ip(ip.to_string()))?;
    let gw: Option<Ipv6Addr> = gateway
        .map(|g| g.parse().map_err(|_| NetError::Gateway(g.to_string())))
        .transpose()?;
    let conf = format!("/proc/sys/net/ipv6/conf/{name}");
    if !std::path::Path::new(&conf).exists() {
        return Err(NetError::NoIpv6(ip.to_string()));
    }
    let _ = std::fs::write(format!("{conf}/accept_dad"), "0");
    let _ = std::fs::write(format!("{conf}/disable_ipv6"), "0");
    let fail = |what: String| {
        let source = std::io::Error::last_os_error();
        NetError::Ipv6 { what, source }
    };
    let (sock, index) = ipv6_ctl(name)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    let result = (|| {
        let mut req = libc::in6_ifreq {
            ifr6_addr: in6(addr),
            ifr6_prefixlen: u32::from(prefix),
            ifr6_ifindex: index,
        };
        // SAFETY: `req` is a live in6_ifreq, what SIOCSIFADDR takes on an
        // AF_INET6 socket.
        if unsafe {
            libc::ioctl(
                fd,
                libc::SIOCSIFADDR,
                (&mut req as *mut libc::in6_ifreq).cast::<libc::c_void>(),
            )
        } < 0
            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
        {
            return Err(fail(format!("set {name}'s IPv6 address {addr}/{prefix}")));
        }
        let Some(gw) = gw else {
            return Ok(());
        };
        let mut rt = In6Rtmsg {
            dst: in6(Ipv6Addr::UNSPECIFIED),
            src: in6(Ipv6Addr::UNSPECIFIED),
            gateway: in6(gw),
            kind: 0,
            dst_len: 0,
            src_len: 0,
            metric: 1,
            info: 0,
            flags: u32::from(libc::RTF_UP | libc::RTF_GATEWAY),
            ifindex: index,
        };
        // SAFETY: `rt` is a live in6_rtmsg, what SIOCADDRT takes on an
        // AF_INET6 socket.
        if unsafe {
            libc::ioctl(
                fd,
                libc::SIOCADDRT,
                (&mut rt as *mut In6Rtmsg).cast::<libc::c_void>(),
            )
        } < 0
            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
        {
            return Err(fail(format!("add the IPv6 default route via {gw}")));
        }
        Ok(())
    })();
    result
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// The interface with MAC `mac`, once virtio_net has probed it.
fn find_by_mac(mac: &str) -> Result<String, NetError> {
    let want = mac.to_ascii_lowercase();
    let mut found = None;
    wait_for(|| {
        found = std::fs::read_dir("/sys/class/net").ok().and_then(|d| {
            d.filter_map(Result::ok).find_map(|e| {
                let a = std::fs::read_to_string(e.path().join("address")).ok()?;
                (a.trim() == want).then(|| e.file_name().to_string_lossy().into_owned())
            })
        });
        found.is_some()
    });
    found.ok_or_else(|| NetError::NoInterface(mac.to_string()))
}

fn configure_link(
    name: &str,
    addr: Option<(Ipv4Addr, u8)>,
    gateway: Option<Ipv4Addr>,
) -> Result<(), NetError> {
    // SAFETY: a plain socket for interface ioctls, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(NetError::Socket(std::io::Error::last_os_error()));
    }
    let result = (|| {
        up(fd, "lo")?;
        if let Some((ip, prefix)) = addr {
            let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0));
            let mut r = ifreq(name);
            r.ifr_ifru.ifru_addr = sockaddr(ip);
            ioctl(
                fd,
                libc::SIOCSIFADDR,
                (&mut r as *mut libc::ifreq).cast(),
                &format!("set {name}'s address"),
            )?;
            let mut r = ifreq(name);
            r.ifr_ifru.ifru_netmask = sockaddr(mask);
            ioctl(
                fd,
                libc::SIOCSIFNETMASK,
                (&mut r as *mut libc::ifreq).cast(),
                &format!("set {name}'s netmask"),
            )?;
        }
        up(fd, name)?;
        let Some(gw) = gateway else {
            return Ok(());
        };
        // SAFETY: rtentry is plain old data; all-zero is valid.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr(gw);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        // SAFETY: `rt` is a live rtentry, the type SIOCADDRT expects.
        if unsafe {
            libc::ioctl(
                fd,
                libc::SIOCADDRT,
                (&mut rt as *mut libc::rtentry).cast::<libc::c_void>(),
            )
        } < 0
        {
            let e = std::io::Error::last_os_error();
            // Reconfiguring (a fork): the route is there already.
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(NetError::Route(e));
            }
        }
        Ok(())
    })();
    // SAFETY: closing the socket opened above.
    unsafe {
        libc::close(fd);
    }
    result
}

/// Sets eth0's MAC address (the link goes down for the change).
pub fn set_mac(mac: &str) -> Result<(), NetError> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .ok()
        .filter(|b: &Vec<u8>| b.len() == 6)
        .ok_or_else(|| NetError::Mac(mac.into()))?;
    // SAFETY: a plain socket for interface ioctls, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(NetError::Socket(std::io::Error::last_os_error()));
    }
    let hwaddr = || {
        let mut m = ifreq("eth0");
        // SAFETY: writing the hwaddr member of the union (plain data).
        unsafe {
            m.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
            for (d, b) in m.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(&bytes) {
                *d = *b as libc::c_char;
            }
        }
        m
    };
    let result = (|| {
        // virtio-net with a control queue changes the MAC of a link that
        // is up (IFF_LIVE_ADDR_CHANGE): no down/up, which re-fills the
        // receive ring (slow under emulation). Other NICs say EBUSY.
        let mut live = hwaddr();
        match ioctl(
            fd,
            libc::SIOCSIFHWADDR,
            (&mut live as *mut libc::ifreq).cast(),
            "set eth0's MAC",
        ) {
            Ok(()) => return Ok(()),
            Err(NetError::Ioctl { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        let mut r = ifreq("eth0");
        ioctl(
            fd,
            libc::SIOCGIFFLAGS,
            (&mut r as *mut libc::ifreq).cast(),
            "get eth0's flags",
        )?;
        // SAFETY: the union member written by SIOCGIFFLAGS.
        let flags = unsafe { r.ifr_ifru.ifru_flags };
        r.ifr_ifru.ifru_flags = flags & !(libc::IFF_UP as libc::c_short);
        ioctl(
            fd,
            libc::SIOCSIFFLAGS,
            (&mut r as *mut libc::ifreq).cast(),
            "bring eth0 down",
        )?;
        let mut m = hwaddr();
        let set = ioctl(
            fd,
            libc::SIOCSIFHWADDR,
            (&mut m as *mut libc::ifreq).cast(),
            "set eth0's MAC",
        );
        r.ifr_ifru.ifru_flags = flags;
        ioctl(
            fd,
            libc::SIOCSIFFLAGS,
            (&mut r as *mut libc::ifreq).cast(),
            "bring eth0 up",
        )?;
        set
    })();
    // SAFETY: closing the socket opened above.
    unsafe {
        libc::close(fd);
    }
    result
}
