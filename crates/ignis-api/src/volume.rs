//! Volumes: disks a VM mounts besides its own (a named volume in the state
//! root, an anonymous one made for one VM, a host disk image file or a
//! host block device).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A volume ignis made: an ext4 disk file in the state root that outlives
/// the VMs that mount it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeRecord {
    pub id: String,
    pub name: String,
    /// Unix seconds.
    pub created: i64,
    /// Bytes (the file is sparse).
    pub size: u64,
    /// The disk file on the host.
    pub path: String,
    /// Made for one VM (`-v /path`): `rm -v` removes it with the VM.
    #[serde(default)]
    pub anonymous: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The VMs whose spec mounts it (filled when read, not stored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
}

/// What backs a VM's volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// A volume ignis made (named or anonymous).
    Volume,
    /// A disk image file on the host.
    File,
    /// A block device of the host.
    Block,
}

/// One volume of a VM: what backs it and where the guest mounts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMount {
    pub kind: VolumeKind,
    /// The volume's name (kind `volume`) or the host path (file, block).
    pub source: String,
    /// The volume's ID (kind `volume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
    /// The disk the VMM opens.
    pub path: String,
    /// Absolute path in the guest.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

impl VolumeMount {
    /// What two VMs share when they mount the same volume: the volume's ID
    /// or the host path.
    pub fn identity(&self) -> &str {
        self.volume_id.as_deref().unwrap_or(&self.path)
    }
}

/// What `volume prune` removed (Docker's `VolumesDeleted`,
/// `SpaceReclaimed`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumePruneReport {
    /// The names of the volumes removed.
    pub volumes_deleted: Vec<String>,
    /// Bytes of disk the removed volume files held (they are sparse).
    pub space_reclaimed: u64,
}
