use serde::{Deserialize, Serialize};

/// What `ignis system prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    pub blobs_removed: u64,
    pub disks_removed: u64,
    pub temp_removed: u64,
    pub bytes_freed: u64,
    /// Cgroups, jails, RAM files, TAPs, lock files and supervisors that
    /// crashed operations left behind.
    #[serde(default)]
    pub host_resources_released: u64,
}
