use serde::{Deserialize, Serialize};

/// Where a kernel was imported from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "from")]
pub enum KernelSource {
    /// An OCI image with `/boot/vmlinux` (Ignite's kernel image layout).
    Image(String),
    /// A file: an ELF vmlinux, a bzImage or a Debian `linux-image` package.
    File(String),
}

/// A kernel ignis can boot: an uncompressed x86_64 ELF `vmlinux` (what
/// Firecracker loads), optionally the bzImage it came from (what QEMU loads
/// fastest) and the kernel's module tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelRecord {
    /// `sha256:<hex>` of the ELF vmlinux.
    pub id: String,
    pub names: Vec<String>,
    /// Kernel release (`6.1.0-27-amd64`), read from the modules tree, the
    /// bzImage header or the ELF's `Linux version` banner.
    pub version: String,
    pub source: KernelSource,
    #[serde(with = "crate::time::rfc3339")]
    pub created: i64,
    pub vmlinux_digest: String,
    pub vmlinux_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bzimage_digest: Option<String>,
    /// Digest of a tar of `lib/modules/<version>` when the kernel has modules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules_digest: Option<String>,
    pub modules_size: u64,
}
