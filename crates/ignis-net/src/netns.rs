//! A VM's network namespace and the TAP joined to what the CNI plugins made
//! there. Through iproute2's `ip` and `tc` (Debian's `iproute2`, on every
//! host): rtnetlink would need a netlink socket opened inside each
//! namespace (a thread that `setns`es and back), and has no mirred action
//! builder; these are a handful of calls per VM start, off the hot path.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::NetError;

fn run(program: &str, args: &[&str]) -> Result<(), NetError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NetError::Command {
            cmd: format!("{program} {}", args.join(" ")),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NetError::Command {
            cmd: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn exists(ns: &str) -> bool {
    std::path::Path::new("/run/netns").join(ns).exists()
}

pub(crate) fn create(ns: &str) -> Result<(), NetError> {
    if !exists(ns) {
        run("ip", &["netns", "add", ns])?;
    }
    run("ip", &["-n", ns, "link", "set", "lo", "up"])
}

pub(crate) fn delete(ns: &str) -> Result<(), NetError> {
    if exists(ns) {
        run("ip", &["netns", "delete", ns])?;
    }
    Ok(())
}

/// A persistent TAP `tap` owned by `owner` in `ns`, up, and tc redirecting
/// every frame that arrives on `ifname` out of `tap` and back (the
/// tc-redirect-tap scheme): the namespace's own stack never sees the
/// VM's traffic, so `ifname` keeps the IPAM address (CNI CHECK looks for
/// it) while the VM answers for it.
pub(crate) fn redirect_tap(
    ns: &str,
    ifname: &str,
    tap: &str,
    owner: (u32, u32),
) -> Result<(), NetError> {
    let (uid, gid) = (owner.0.to_string(), owner.1.to_string());
    run(
        "ip",
        &[
            "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr", "user", &uid,
            "group", &gid,
        ],
    )?;
    run("ip", &["-n", ns, "link", "set", tap, "up"])?;
    for (from, to) in [(ifname, tap), (tap, ifname)] {
        run("tc", &["-n", ns, "qdisc", "add", "dev", from, "ingress"])?;
        run(
            "tc",
            &[
                "-n", ns, "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all",
                "u32", "match", "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev",
                to,
            ],
        )?;
    }
    Ok(())
}

/// Waits for `link` in `ns` (the VMM creates it), then moves it into this
/// process's namespace.
pub(crate) fn move_to_host(ns: &str, link: &str, timeout: Duration) -> Result<(), NetError> {
    let start = Instant::now();
    let pid = std::process::id().to_string();
    loop {
        match run("ip", &["-n", ns, "link", "set", link, "netns", &pid]) {
            Ok(()) => return Ok(()),
            Err(_) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return Err(NetError::NoTap(link.to_string())),
        }
    }
}
