//! API object types of ignis.
//!
//! These are the records that the core library stores and returns and that
//! the CLI prints (`-o json`). They live in their own crate so that every
//! front end (CLI, REST daemon, GitOps reconciler) shares one definition and
//! can treat server errors as typed data rather than strings.

mod event;
mod exec;
mod image;
mod kernel;
pub mod manifest;
pub mod node;
mod progress;
mod prune;
mod restart;
mod size;
mod snapshot;
mod ssh;
pub mod state;
mod stats;
pub mod time;
mod vm;
mod volume;

pub use event::{Event, EventFilter};
pub use exec::ExecOutput;
pub use image::{ImageConfig, ImageRecord, LayerInfo};
pub use kernel::{KernelRecord, KernelSource};
pub use progress::{ProgressEnd, ProgressEvent, ProgressLine, NDJSON};
pub use prune::PruneReport;
pub use restart::{BadRestartPolicy, RestartPolicy};
pub use size::{parse_size, SizeError};
pub use snapshot::{BlobRef, SnapshotRecord};
pub use ssh::SshAccess;
pub use state::{
    Accel, BackendKind, BackendRequest, Health, IllegalTransition, NetworkMode, RunState, Started,
    VmState,
};
pub use stats::VmStats;
pub use vm::{
    CgroupLimits, Confinement, CopyFileSpec, NetworkSpec, NicSpec, PhaseTiming, PortSpec, RunMode,
    SnapshotOrigin, SshSpec, VmRecord, VmSpec, VmStatus,
};
pub use volume::{VolumeKind, VolumeMount, VolumePruneReport, VolumeRecord};

/// Prefix of every content digest ignis produces or accepts.
pub const SHA256_PREFIX: &str = "sha256:";

/// The short form of an ID shown in tables: 12 hex digits, no algorithm.
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix(SHA256_PREFIX).unwrap_or(id);
    &hex[..hex.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_id_strips_algorithm_and_truncates() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
    }
}
