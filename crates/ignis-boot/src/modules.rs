//! Choosing kernel modules for the guest and ordering them by dependency.
//! Debian's packages ship no `modules.dep` (depmod makes it at install), so
//! dependencies are read from each module's `.modinfo` `depends=` string.

use std::collections::{BTreeMap, BTreeSet};

/// Modules the ignis guest needs, where the kernel has them as modules
/// (built-in ones are simply absent from the tree).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "overlay",
    "virtio_net",
    "vmw_vsock_virtio_transport",
    "virtio_console",
    // ACPI power button (QEMU's graceful stop) and its input events.
    "button",
    "evdev",
];

/// Modules in the initramfs that the init loads only when a VM needs them
/// (`GuestConfig::seed`, or volumes): vfat and the character sets its
/// mount loads (Debian's defaults: codepage 437, iocharset ascii) for
/// cloud-init's `cidata` seed and vfat volumes. The image's own userspace
/// cannot load them: it has no modules for ignis's kernel.
pub const VFAT_MODULES: &[&str] = &["vfat", "nls_cp437", "nls_ascii", "nls_utf8"];

/// `foo-bar.ko` → `foo_bar` (the kernel treats `-` and `_` alike).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.trim_end_matches(".ko").replace('-', "_")
}

/// The `depends=` list of a module's `.modinfo`.
pub fn depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(pos) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return vec![];
    };
    let rest = &ko[pos + KEY.len()..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('-', "_"))
        .collect()
}

/// Given all modules (name → (path, depends)), returns the paths needed for
/// `roots`, dependencies first. Unknown roots are skipped (built in).
pub fn load_order(all: &BTreeMap<String, (String, Vec<String>)>, roots: &[&str]) -> Vec<String> {
    fn visit(
        name: &str,
        all: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(name.to_string()) {
            return;
        }
        let Some((path, deps)) = all.get(name) else {
            return;
        };
        for d in deps {
            visit(d, all, seen, out);
        }
        out.push(path.clone());
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for r in roots {
        visit(r, all, &mut seen, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first_and_once() {
        let mut all = BTreeMap::new();
        let mut add = |n: &str, deps: &[&str]| {
            all.insert(
                n.to_string(),
                (
                    format!("k/{n}.ko"),
                    deps.iter().map(|s| s.to_string()).collect(),
                ),
            );
        };
        add("virtio", &[]);
        add("virtio_ring", &[]);
        add("virtio_mmio", &["virtio", "virtio_ring"]);
        add("virtio_blk", &["virtio", "virtio_ring"]);
        add("ext4", &["jbd2", "mbcache"]);
        add("jbd2", &[]);
        add("mbcache", &[]);
        let order = load_order(
            &all,
            &["virtio_mmio", "virtio_blk", "ext4", "builtin_thing"],
        );
        assert_eq!(
            order,
            [
                "k/virtio.ko",
                "k/virtio_ring.ko",
                "k/virtio_mmio.ko",
                "k/virtio_blk.ko",
                "k/jbd2.ko",
                "k/mbcache.ko",
                "k/ext4.ko"
            ]
        );
    }

    #[test]
    fn modinfo_depends_is_parsed() {
        let ko = b"\x7fELF....\0license=GPL\0depends=virtio,virtio-ring\0name=virtio_blk\0";
        assert_eq!(depends(ko), ["virtio", "virtio_ring"]);
        assert!(depends(b"\0depends=\0").is_empty());
        assert_eq!(
            module_name("kernel/drivers/block/virtio-blk.ko"),
            "virtio_blk"
        );
    }
}
