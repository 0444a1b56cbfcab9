//! Skipping a ruleset that is already in place: nftables counts every
//! change to a network namespace's ruleset in a generation number
//! (`NFT_MSG_GETGEN`). After ignis applies its table it records the
//! ruleset's hash and the generation that resulted; the next apply of the
//! same ruleset is skipped when the generation has not moved since (no
//! one, ignis or not, changed any table of that namespace). Spawning
//! `nft` costs 15 to 20 ms; asking the generation costs one netlink round
//! trip.
//!
//! Hand-written: one request and one attribute; the netfilter crates wrap
//! libnftnl or the whole object model for it.

use std::path::PathBuf;

/// The ruleset generation of the calling thread's network namespace.
pub fn generation() -> Option<u32> {
    use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFT_MSG_GETGEN: u16 = 16;
    // The answer is a NEWGEN message.
    const NFT_MSG_NEWGEN: u16 = 15;
    const NLM_F_REQUEST: u16 = 1;
    const NFTA_GEN_ID: u16 = 1;
    let mut sock = Socket::new(NETLINK_NETFILTER).ok()?;
    sock.bind_auto().ok()?;
    sock.connect(&SocketAddr::new(0, 0)).ok()?;
    let ty = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN;
    let mut req = Vec::with_capacity(20);
    req.extend_from_slice(&20u32.to_ne_bytes()); // length
    req.extend_from_slice(&ty.to_ne_bytes());
    req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    req.extend_from_slice(&[0, 0, 0, 0]); // nfgenmsg: AF_UNSPEC, v0, res_id 0
    sock.send(&req, 0).ok()?;
    let mut buf = Vec::with_capacity(4096);
    let n = sock.recv(&mut buf, 0).ok()?;
    let reply = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN;
    parse_gen(&buf[..n.min(buf.len())], reply, NFTA_GEN_ID)
}

/// The NFTA_GEN_ID attribute of a GETGEN reply (a NEWGEN message) (`None` for an error reply
/// or anything unexpected).
fn parse_gen(msg: &[u8], ty: u16, attr: u16) -> Option<u32> {
    let u16_at = |o: usize| Some(u16::from_ne_bytes(msg.get(o..o + 2)?.try_into().ok()?));
    if u16_at(4)? != ty {
        return None;
    }
    let len = usize::try_from(u32::from_ne_bytes(msg.get(0..4)?.try_into().ok()?)).ok()?;
    let msg = msg.get(..len)?;
    let mut at = 16 + 4; // nlmsghdr + nfgenmsg
    while at + 4 <= msg.len() {
        let alen = usize::from(u16::from_ne_bytes(msg[at..at + 2].try_into().ok()?));
        let atype = u16::from_ne_bytes(msg[at + 2..at + 4].try_into().ok()?) & 0x3fff;
        if alen < 4 {
            return None;
        }
        if atype == attr && alen >= 8 {
            return Some(u32::from_be_bytes(msg[at + 4..at + 8].try_into().ok()?));
        }
        at += (alen + 3) & !3;
    }
    None
}

/// Where the last apply is recorded: per network namespace (its inode),
/// on tmpfs (rules and record both end with a reboot).
fn record_path() -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata("/proc/thread-self/ns/net").ok()?.ino();
    Some(PathBuf::from(format!("/run/ignis/nft-{ns}")))
}

fn digest(ruleset: &str) -> String {
    // Not for security: equality of two rulesets written by ignis.
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ruleset.hash(&mut h);
    format!("{:016x}:{}", h.finish(), ruleset.len())
}

/// Whether `ruleset` is what ignis last applied in this namespace and
/// nothing changed since.
pub fn unchanged(ruleset: &str) -> bool {
    let Some(path) = record_path() else {
        return false;
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let Some((hash, gen)) = text.trim().rsplit_once(' ') else {
        return false;
    };
    hash == digest(ruleset) && generation().is_some_and(|g| g.to_string() == gen)
}

/// Records that `ruleset` was just applied (best effort).
pub fn record(ruleset: &str) {
    let (Some(path), Some(gen)) = (record_path(), generation()) else {
        return;
    };
    let _ = std::fs::create_dir_all(path.parent().unwrap_or(&path));
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, format!("{} {gen}\n", digest(ruleset))).is_ok()
        && std::fs::rename(&tmp, &path).is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn a_getgen_reply_is_parsed() {
        let ty = (10u16 << 8) | 15;
        let mut m = Vec::new();
        m.extend_from_slice(&28u32.to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&1u16.to_ne_bytes());
        m.extend_from_slice(&4242u32.to_be_bytes());
        assert_eq!(parse_gen(&m, ty, 1), Some(4242));
        // An error reply (NLMSG_ERROR = 2) is not a generation.
        let mut e = m.clone();
        e[4..6].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(parse_gen(&e, ty, 1), None);
        assert_eq!(parse_gen(&m[..10], ty, 1), None);
    }

    /// As root: the kernel answers, and the generation stays put while
    /// nothing changes (the live networking tests apply real rulesets in
    /// their own namespaces, where a changed one must be applied).
    #[test]
    fn the_generation_is_read_and_stable() {
        let Some(before) = generation() else {
            eprintln!("skipped: no nftables netlink here (not root?)");
            return;
        };
        assert_eq!(generation(), Some(before), "nothing changed");
    }
}
