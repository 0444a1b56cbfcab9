//! Shutdown and the fork-time identity hooks.

use ignis_agent_proto::NetConfig;

use crate::net::NetError;

/// Why a fork's new identity could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error("bad hostname {0:?}")]
    Hostname(String),
    #[error("sethostname")]
    SetHostname(#[source] std::io::Error),
    #[error("ip must be ADDR/PREFIX, got {0}")]
    Ip(String),
    #[error("bad prefix in {0}")]
    Prefix(String),
    #[error("a new ip needs its gateway")]
    NoGateway,
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("entropy must be at most 512 bytes of hex")]
    EntropySize,
    #[error("entropy is not hex")]
    EntropyNotHex,
    #[error("open /dev/urandom")]
    OpenUrandom(#[source] std::io::Error),
    #[error("RNDADDENTROPY")]
    AddEntropy(#[source] std::io::Error),
    #[error("RNDRESEEDCRNG")]
    Reseed(#[source] std::io::Error),
    #[error("clock out of range")]
    ClockRange,
    #[error("clock_settime")]
    SetClock(#[source] std::io::Error),
}

/// Clean shutdown: flush, then the signal that makes PID 1 stop the
/// workload (app images) or power off (the image's init). PID 1 unmounts
/// and powers off; the agent dies with everything else.
pub fn shutdown(signal: i32) {
    // SAFETY: sync and kill take no pointers.
    unsafe {
        libc::sync();
        libc::kill(1, signal);
    }
}

/// RNDADDENTROPY: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// RNDRESEEDCRNG: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

fn add_entropy(bytes: &[u8]) -> Result<(), ConfigureError> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(ConfigureError::OpenUrandom)?;
    // struct rand_pool_info { int entropy_count; int buf_size; u8 buf[]; }
    let len = i32::try_from(bytes.len()).map_err(|_| ConfigureError::EntropySize)?;
    let mut info = Vec::with_capacity(8 + bytes.len());
    info.extend_from_slice(&(len * 8).to_ne_bytes());
    info.extend_from_slice(&len.to_ne_bytes());
    info.extend_from_slice(bytes);
    // SAFETY: `info` is a complete rand_pool_info of the size it declares.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) } != 0 {
        return Err(ConfigureError::AddEntropy(std::io::Error::last_os_error()));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG) } != 0 {
        return Err(ConfigureError::Reseed(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_clock(ns: u64) -> Result<(), ConfigureError> {
    let ts = libc::timespec {
        tv_sec: i64::try_from(ns / 1_000_000_000).map_err(|_| ConfigureError::ClockRange)?,
        tv_nsec: i64::try_from(ns % 1_000_000_000).unwrap_or(0),
    };
    // SAFETY: clock_settime with a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(ConfigureError::SetClock(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_hostname(name: &str) -> Result<(), ConfigureError> {
    if name.is_empty() || name.len() > 64 || name.contains(['/', '\0', '\n']) {
        return Err(ConfigureError::Hostname(name.into()));
    }
    // SAFETY: sethostname with a pointer/length pair of a live string.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
        return Err(ConfigureError::SetHostname(std::io::Error::last_os_error()));
    }
    let _ = std::fs::remove_file("/etc/hostname");
    let _ = std::fs::write("/etc/hostname", format!("{name}\n"));
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        let fixed: String = hosts
            .lines()
            .map(|l| {
                if l.starts_with("127.0.1.1") {
                    format!("127.0.1.1\t{name}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let _ = std::fs::remove_file("/etc/hosts");
        let _ = std::fs::write("/etc/hosts", fixed);
    }
    Ok(())
}

fn hex(s: &str) -> Result<Vec<u8>, ConfigureError> {
    if !s.len().is_multiple_of(2) || s.len() > 1024 {
        return Err(ConfigureError::EntropySize);
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or(ConfigureError::EntropyNotHex)
        })
        .collect()
}

/// Applies a fork's new identity: hostname, MAC, address, entropy, clock.
pub fn configure(n: &NetConfig) -> Result<(), ConfigureError> {
    if let Some(h) = &n.hostname {
        set_hostname(h)?;
    }
    if let Some(m) = &n.mac {
        crate::net::set_mac(m)?;
    }
    if let Some(ip) = &n.ip {
        let (addr, prefix) = ip
            .split_once('/')
            .ok_or_else(|| ConfigureError::Ip(ip.clone()))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| ConfigureError::Prefix(ip.clone()))?;
        let gw = n.gateway.clone().ok_or(ConfigureError::NoGateway)?;
        crate::net::configure(
            &ignis_guest_config::GuestNet {
                ip: addr.to_string(),
                prefix,
                gateway: gw,
                // A fork's first NIC is eth0 (its MAC was just changed).
                mac: None,
                ip6: None,
                prefix6: 0,
                gateway6: None,
            },
            None,
        )?;
    }
    if let Some(ip6) = &n.ip6 {
        let (addr, prefix) = ip6
            .split_once('/')
            .ok_or_else(|| ConfigureError::Ip(ip6.clone()))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| ConfigureError::Prefix(ip6.clone()))?;
        crate::net::replace_ipv6("eth0", addr, prefix, n.gateway6.as_deref())?;
    }
    if let Some(e) = &n.entropy {
        add_entropy(&hex(e)?)?;
    }
    if let Some(ns) = n.clock_ns {
        set_clock(ns)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refused before any system call: nothing of the host running the
    /// test is touched.
    #[test]
    fn bad_requests_are_refused_by_variant() {
        let req = |f: fn(&mut NetConfig)| {
            let mut n = NetConfig::default();
            f(&mut n);
            configure(&n).unwrap_err()
        };
        let e = req(|n| n.ip = Some("10.0.0.2".into()));
        assert!(matches!(e, ConfigureError::Ip(_)), "{e:?}");
        assert_eq!(e.to_string(), "ip must be ADDR/PREFIX, got 10.0.0.2");
        let e = req(|n| n.ip = Some("10.0.0.2/24".into()));
        assert!(matches!(e, ConfigureError::NoGateway), "{e:?}");
        let e = req(|n| n.entropy = Some("zz".into()));
        assert!(matches!(e, ConfigureError::EntropyNotHex), "{e:?}");
        // Not ASCII: refused, not a panic on a char boundary.
        let e = req(|n| n.entropy = Some("0é0".into()));
        assert!(matches!(e, ConfigureError::EntropyNotHex), "{e:?}");
        let e = req(|n| n.hostname = Some("a/b".into()));
        assert!(matches!(e, ConfigureError::Hostname(_)), "{e:?}");
    }
}
