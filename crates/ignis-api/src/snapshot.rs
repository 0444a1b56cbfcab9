use serde::{Deserialize, Serialize};

use crate::VmSpec;

/// One content-addressed file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
}

/// A snapshot of a running VM: VMM device state, guest memory and the
/// writable disk, each a blob shared with every snapshot that has the same
/// content, plus what is needed to resume it elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotRecord {
    /// 16 hex digits.
    pub id: String,
    pub name: String,
    #[serde(with = "crate::time::rfc3339")]
    pub created: i64,
    /// The VM it was taken from (it may be gone since).
    pub vm_id: String,
    pub vm_name: String,
    /// Lineage: the snapshot the source VM was itself restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub image_id: String,
    pub image: String,
    pub kernel_id: String,
    /// `qemu` or `firecracker` (a snapshot resumes only on its own VMM).
    pub backend: crate::BackendKind,
    /// The VMM's `--version` line when it was taken.
    pub vmm_version: String,
    /// The source VM's spec (resources, command, network mode, SSH key).
    pub spec: VmSpec,
    pub state: BlobRef,
    pub memory: BlobRef,
    pub disk: BlobRef,
    /// How long the source VM's vCPUs were paused.
    pub pause_ms: u64,
    /// The guest ran the ignis agent (a restored clone waits for it).
    #[serde(default = "yes")]
    pub agent: bool,
    /// Where the snapshot's time went (pause and save, copies, resume,
    /// store), as a VM's start timings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timings: Vec<crate::PhaseTiming>,
}

fn yes() -> bool {
    true
}
