//! Shutdown and the fork-time identity hooks.

use ignis_agent_proto::NetConfig;

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

fn add_entropy(bytes: &[u8]) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| format!("open /dev/urandom: {e}"))?;
    // struct rand_pool_info { int entropy_count; int buf_size; u8 buf[]; }
    let len = i32::try_from(bytes.len()).map_err(|_| "too much entropy")?;
    let mut info = Vec::with_capacity(8 + bytes.len());
    info.extend_from_slice(&(len * 8).to_ne_bytes());
    info.extend_from_slice(&len.to_ne_bytes());
    info.extend_from_slice(bytes);
    // SAFETY: `info` is a complete rand_pool_info of the size it declares.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) } != 0 {
        return Err(format!(
            "RNDADDENTROPY: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG) } != 0 {
        return Err(format!(
            "RNDRESEEDCRNG: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn set_clock(ns: u64) -> Result<(), String> {
    let ts = libc::timespec {
        tv_sec: i64::try_from(ns / 1_000_000_000).map_err(|_| "clock out of range")?,
        tv_nsec: i64::try_from(ns % 1_000_000_000).unwrap_or(0),
    };
    // SAFETY: clock_settime with a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(format!(
            "clock_settime: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn set_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || name.contains(['/', '\0', '\n']) {
        return Err(format!("bad hostname {name:?}"));
    }
    // SAFETY: sethostname with a pointer/length pair of a live string.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
        return Err(format!("sethostname: {}", std::io::Error::last_os_error()));
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

fn hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) || s.len() > 1024 {
        return Err("entropy must be at most 512 bytes of hex".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| "entropy is not hex".to_string()))
        .collect()
}

/// Applies a fork's new identity: hostname, MAC, address, entropy, clock.
pub fn configure(n: &NetConfig) -> Result<(), String> {
    if let Some(h) = &n.hostname {
        set_hostname(h)?;
    }
    if let Some(m) = &n.mac {
        crate::net::set_mac(m)?;
    }
    if let Some(ip) = &n.ip {
        let (addr, prefix) = ip
            .split_once('/')
            .ok_or_else(|| format!("ip must be ADDR/PREFIX, got {ip}"))?;
        let prefix: u8 = prefix.parse().map_err(|_| format!("bad prefix in {ip}"))?;
        let gw = n.gateway.clone().ok_or("a new ip needs its gateway")?;
        crate::net::configure(&ignis_guest_config::GuestNet {
            ip: addr.to_string(),
            prefix,
            gateway: gw,
        })?;
    }
    if let Some(e) = &n.entropy {
        add_entropy(&hex(e)?)?;
    }
    if let Some(ns) = n.clock_ns {
        set_clock(ns)?;
    }
    Ok(())
}
