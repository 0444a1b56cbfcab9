//! A VM's NIC straight on a host interface's L2 segment: a macvtap (bridge
//! mode, the VM's MAC) on the host interface, by rtnetlink, and the
//! character device `/dev/tapN` the kernel gives it, made as a node in the
//! VM's directory (udev may not make `/dev/tapN` for a link in another
//! network namespace, and the VMM needs it only once). QEMU gets it as an
//! open descriptor (`-netdev tap,fd=`); Firecracker opens TAPs by name
//! only, so a macvtap is refused there.

use std::path::Path;

use crate::NetError;

/// The macvtap of NIC `index` of VM `vm_id` (at most 15 bytes, as
/// IFNAMSIZ allows).
pub fn macvtap_name(vm_id: &str, index: usize) -> String {
    format!("mv{}{index}", &vm_id[..vm_id.len().min(11)])
}

/// The MAC of macvtap NIC `index` of VM `vm_id`: the VM's bridge MAC
/// ([`crate::mac_for`]) with another locally administered first byte
/// (0x06, 0x0a, ...), so it differs from every bridge MAC and per NIC.
pub fn mac_for(vm_id: &str, index: usize) -> String {
    let bridge = crate::mac_for(vm_id);
    #[allow(clippy::cast_possible_truncation)] // index < 63: a VM has a few NICs
    let first = 0x02u8.wrapping_add(4 * ((index % 63) as u8 + 1));
    format!("{first:02x}{}", &bridge[2..])
}

/// Whether a name is one of ours (for `system check`).
pub fn is_macvtap_name(name: &str) -> bool {
    name.starts_with("mv") && name.len() > 3 && name[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// `"02:00:00:aa:bb:cc"` as six bytes.
pub(crate) fn mac_bytes(mac: &str) -> Option<Vec<u8>> {
    let v: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    (v.len() == 6).then_some(v)
}

/// The `major:minor` of `/dev/tapN` of macvtap `name`, from sysfs.
fn tap_dev(name: &str) -> Result<rustix::fs::Dev, NetError> {
    let base = Path::new("/sys/class/net").join(name);
    let index = std::fs::read_to_string(base.join("ifindex"))
        .map_err(|e| NetError::Netlink(format!("{name}: ifindex: {e}")))?;
    let dev = base.join(format!("macvtap/tap{}/dev", index.trim()));
    let s = std::fs::read_to_string(&dev)
        .map_err(|e| NetError::Netlink(format!("{}: {e}", dev.display())))?;
    let (maj, min) = s
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| NetError::Netlink(format!("{}: {s:?}", dev.display())))?;
    Ok(rustix::fs::makedev(maj, min))
}

/// Makes `node` (mode 0600, root's) the character device of macvtap
/// `name`, replacing what is there.
pub(crate) fn make_node(name: &str, node: &Path) -> Result<(), NetError> {
    let dev = tap_dev(name)?;
    let _ = std::fs::remove_file(node);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        node,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        dev,
    )
    .map_err(|e| NetError::Netlink(format!("mknod {}: {e}", node.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz_and_are_recognised() {
        let n = macvtap_name("0123456789abcdef0123", 9);
        assert_eq!(n, "mv0123456789a9");
        assert!(n.len() <= 15);
        assert!(macvtap_name("0123456789abcdef", 15).len() <= 15);
        assert!(is_macvtap_name(&n));
        assert!(!is_macvtap_name("ig-0123456789ab"));
        assert!(!is_macvtap_name("mvp0"));
    }

    #[test]
    fn macs_are_unicast_local_and_per_nic() {
        let id = "0123456789abcdef";
        let a = mac_for(id, 0);
        let b = mac_for(id, 1);
        assert_ne!(a, b);
        assert_ne!(a, crate::mac_for(id));
        assert_eq!(&a[2..], &crate::mac_for(id)[2..]);
        for m in [&a, &b] {
            let first = mac_bytes(m).unwrap()[0];
            assert_eq!(first & 0b11, 0b10, "{m}: locally administered unicast");
        }
    }

    #[test]
    fn macs_parse() {
        assert_eq!(
            mac_bytes("02:00:0a:ff:10:01"),
            Some(vec![2, 0, 10, 255, 16, 1])
        );
        assert_eq!(mac_bytes("02:00:0a:ff:10"), None);
        assert_eq!(mac_bytes("zz:00:0a:ff:10:01"), None);
    }
}
