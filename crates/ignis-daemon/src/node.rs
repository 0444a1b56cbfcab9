//! This daemon as a node of a fleet: its name and labels (`--node`,
//! `--node-label`), and the record it publishes in the repository with
//! `--write-status` (`.ignis/nodes/NAME.yaml`): capacity, backends, KVM,
//! version, heartbeat.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ignis_api::node::{NodeCapacity, NodeMetadata, NodeRecord, NodeStatus, NODE_KIND};

/// Who this daemon is in a fleet.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// `--node` (default: the hostname).
    pub name: String,
    /// `--node-label`: what manifests' `spec.nodeSelector` matches.
    pub labels: BTreeMap<String, String>,
    /// How often the node record is refreshed at most (`--heartbeat`);
    /// every status commit refreshes it too.
    pub heartbeat: Duration,
    /// The state root, whose free space the record reports.
    pub root: PathBuf,
}

/// The host's name (`/proc/sys/kernel/hostname`), the default `--node`.
pub fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_string())
}

/// What this host is made of; detected once (the VMM binaries are run for
/// their versions), so the heartbeat only re-reads the free space.
#[derive(Debug, Clone)]
pub struct Host {
    cpus: u32,
    memory_bytes: u64,
    backends: Vec<String>,
    kvm: String,
    kvm_detail: String,
}

impl Host {
    pub fn detect() -> Self {
        let host = ignis_vmm::detect();
        let backends = ignis_vmm::drivers()
            .iter()
            .filter_map(|d| {
                let accel = d.host_check(&host, true).ok()?;
                Some(match accel {
                    ignis_api::Accel::Tcg => format!("{} (tcg)", d.kind()),
                    _ => d.kind().to_string(),
                })
            })
            .collect();
        use ignis_vmm::detect::Kvm;
        let kvm = match &host.kvm {
            Kvm::Missing => "missing",
            Kvm::NoAccess(_) => "noAccess",
            Kvm::CannotRunLinux(_) => "cannotRunLinux",
            Kvm::Usable(_) => "usable",
        };
        Self {
            cpus: std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                .unwrap_or(1),
            memory_bytes: mem_total(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default()),
            backends,
            kvm: kvm.to_string(),
            kvm_detail: host.kvm.describe(),
        }
    }

    /// The node record as of `now` (Unix seconds).
    pub fn record(&self, node: &NodeOptions, every: Duration, now: i64) -> NodeRecord {
        NodeRecord {
            api_version: ignis_api::manifest::API_VERSION.into(),
            kind: NODE_KIND.into(),
            metadata: NodeMetadata {
                name: node.name.clone(),
                labels: node.labels.clone(),
            },
            status: NodeStatus {
                capacity: NodeCapacity {
                    cpus: self.cpus,
                    memory_bytes: self.memory_bytes,
                    disk_free_bytes: disk_free(&node.root),
                },
                backends: self.backends.clone(),
                kvm: self.kvm.clone(),
                kvm_detail: Some(self.kvm_detail.clone()),
                ignis_version: env!("CARGO_PKG_VERSION").into(),
                heartbeat: now,
                heartbeat_seconds: every.as_secs().max(1),
            },
        }
    }
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Free bytes (for unprivileged users) of the filesystem holding `root`
/// (or its nearest existing parent).
fn disk_free(root: &Path) -> u64 {
    let mut p = root;
    loop {
        if let Ok(s) = rustix::fs::statvfs(p) {
            return s.f_bavail.saturating_mul(s.f_frsize);
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return 0,
        }
    }
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_describes_this_host() {
        assert_eq!(
            mem_total("MemTotal:       24000 kB\nMemFree: 1 kB\n"),
            24000 * 1024
        );
        assert_eq!(mem_total("garbage"), 0);
        let dir = tempfile::tempdir().unwrap();
        let node = NodeOptions {
            name: "n1".into(),
            labels: [("zone".to_string(), "a".to_string())].into(),
            heartbeat: Duration::from_secs(5),
            root: dir.path().join("not/yet/there"),
        };
        let r = Host::detect().record(&node, Duration::from_secs(5), 1_796_070_196);
        assert_eq!(r.metadata.name, "n1");
        assert_eq!(r.status.heartbeat_seconds, 5);
        assert!(r.status.capacity.cpus >= 1);
        assert!(r.status.capacity.memory_bytes > 0);
        assert!(
            r.status.capacity.disk_free_bytes > 0,
            "the nearest existing parent's filesystem"
        );
        assert!(!r.status.kvm.is_empty());
        let y = serde_yaml::to_string(&r).unwrap();
        assert!(y.contains("kind: Node"), "{y}");
    }
}
