//! `ignis stats`: one sample of a VM's resource use.

use serde::{Deserialize, Serialize};

/// Cumulative counters of a VM at one instant; rates (CPU %) come from two
/// samples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmStats {
    pub id: String,
    pub name: String,
    pub running: bool,
    /// When the sample was taken (Unix nanoseconds).
    pub at_ns: i64,
    /// CPU time used by the VM (its cgroup, else its VMM process), in
    /// nanoseconds.
    pub cpu_ns: u64,
    /// vCPUs (100 % each).
    pub cpus: u32,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    /// Resident memory of the VMM process alone (its guest RAM as touched,
    /// and its own), whatever `source` is.
    #[serde(default)]
    pub vmm_resident_bytes: u64,
    /// Bytes the VM received and sent on its bridge NIC (its TAP).
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    /// Bytes read from and written to storage by the VM's VMM.
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    /// `cgroup` or `process` (where CPU and memory were read).
    pub source: String,
}
