use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The parts of an OCI image configuration the VM layer needs to run the
/// image's workload (Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Ports as in the OCI config: `80/tcp`, `53/udp`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One layer of an image, in application order (base first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LayerInfo {
    /// Digest of the blob as stored (compressed or not).
    pub digest: String,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    pub media_type: String,
    pub size: u64,
}

/// An image known to ignis: its identity, names, the runtime config and the
/// read-only ext4 disk built from its layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageRecord {
    /// `sha256:<hex>` of the image config blob, as Docker's image ID.
    pub id: String,
    /// Normalized references (`docker.io/library/busybox:latest`) that name it.
    pub names: Vec<String>,
    /// Digest of the manifest it was pulled or imported from.
    pub manifest_digest: String,
    /// Where it came from: a registry reference or an imported file.
    pub source: String,
    pub os: String,
    pub architecture: String,
    /// Unix seconds when ignis first stored it.
    #[serde(with = "crate::time::rfc3339")]
    pub created: i64,
    /// Sum of the stored layer blobs in bytes.
    pub content_size: u64,
    /// Bytes of the unpacked root filesystem.
    pub rootfs_size: u64,
    /// Allocated size of the ext4 image disk in bytes.
    pub disk_size: u64,
    /// Path of the read-only ext4 image disk.
    pub disk_path: String,
    pub config: ImageConfig,
    pub layers: Vec<LayerInfo>,
    /// Whether the image has `/sbin/init` (a system image: it boots its own
    /// init unless a command is given).
    #[serde(default)]
    pub has_init: bool,
}
