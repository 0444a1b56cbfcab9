//! A node of a fleet: one host running `ignis daemon --gitops`, as it
//! describes itself in the repository (`.ignis/nodes/NAME.yaml`, written
//! with `--write-status`). The record is also the heartbeat: its
//! `heartbeat` is refreshed every `heartbeatSeconds` (and with every status
//! commit of the node), so readers tell a live node from a dead one
//! without asking it. Unknown fields are accepted: nodes of a fleet may run
//! different versions of ignis.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `kind` of a node record.
pub const NODE_KIND: &str = "Node";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub api_version: String,
    pub kind: String,
    pub metadata: NodeMetadata,
    pub status: NodeStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeMetadata {
    pub name: String,
    /// `--node-label` pairs: what `spec.nodeSelector` matches.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub capacity: NodeCapacity,
    /// Backends this host can run Linux guests with (`firecracker`,
    /// `qemu`, `qemu (tcg)`).
    #[serde(default)]
    pub backends: Vec<String>,
    /// KVM on this host: `usable`, `cannotRunLinux` (e.g. PVM nested
    /// virtualization), `noAccess` or `missing`.
    #[serde(default)]
    pub kvm: String,
    /// What `kvm` is based on, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvm_detail: Option<String>,
    #[serde(default)]
    pub ignis_version: String,
    /// When the node last wrote this record (RFC 3339, UTC).
    #[serde(with = "crate::time::rfc3339")]
    pub heartbeat: i64,
    /// How often the node refreshes `heartbeat` at most.
    pub heartbeat_seconds: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCapacity {
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Free space of the node's state root.
    pub disk_free_bytes: u64,
}

impl NodeRecord {
    /// Seconds since the last heartbeat, as of `now` (Unix seconds).
    pub fn heartbeat_age(&self, now: i64) -> i64 {
        (now - self.status.heartbeat).max(0)
    }

    /// Whether the node missed more than `intervals` heartbeats: its VMs'
    /// status is no longer confirmed (the host died, or lost the
    /// repository).
    pub fn is_stale(&self, now: i64, intervals: u32) -> bool {
        let period = self.status.heartbeat_seconds.max(1);
        let age = u64::try_from(self.heartbeat_age(now)).unwrap_or(0);
        age > period.saturating_mul(u64::from(intervals.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(heartbeat: i64, every: u64) -> NodeRecord {
        NodeRecord {
            api_version: crate::manifest::API_VERSION.into(),
            kind: NODE_KIND.into(),
            metadata: NodeMetadata {
                name: "a".into(),
                labels: [("zone".to_string(), "x".to_string())].into(),
            },
            status: NodeStatus {
                heartbeat,
                heartbeat_seconds: every,
                ..Default::default()
            },
        }
    }

    #[test]
    fn stale_after_n_missed_heartbeats() {
        let n = node(1000, 10);
        assert!(!n.is_stale(1030, 3), "exactly three periods: not yet");
        assert!(n.is_stale(1031, 3));
        assert!(!n.is_stale(990, 3), "a clock behind the writer's");
        assert_eq!(n.heartbeat_age(990), 0);
    }

    #[test]
    fn round_trips_as_yaml_with_an_rfc3339_heartbeat() {
        let n = node(1_796_070_196, 60);
        let y = serde_yaml::to_string(&n).unwrap();
        assert!(y.contains("heartbeat: 2026-11-30T20:23:16Z"), "{y}");
        assert!(y.contains("heartbeatSeconds: 60"), "{y}");
        assert_eq!(serde_yaml::from_str::<NodeRecord>(&y).unwrap(), n);
        // A newer node's extra field does not make the record unreadable.
        let newer = y.replace("kvm:", "gpus: 2\n  kvm:");
        assert_eq!(serde_yaml::from_str::<NodeRecord>(&newer).unwrap(), n);
    }
}
