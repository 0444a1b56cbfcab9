//! What the commands drive: an [`Engine`], either this host's state
//! in-process ([`Local`]) or an `ignis daemon` over its API ([`Remote`],
//! `--host`/`IGNIS_HOST`). Commands print what it returns with one output
//! layer, so a command prints the same bytes and exits with the same code
//! either way (`tests/equivalence.rs` runs the same list both ways).

mod local;
mod remote;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use ignis_agent_proto::client::Client as AgentClient;
use ignis_api::manifest::{Manifest, VmManifest};
use std::collections::BTreeMap;

use ignis_api::{
    EventFilter, ImageRecord, KernelRecord, PruneReport, SnapshotRecord, VmRecord, VolumeRecord,
};
use ignis_core::image::RemoveOutcome;
use ignis_core::manifest::Applied;
use ignis_core::snapshot::{ForkOptions, TreeLine};
use ignis_core::system::Problem;
use ignis_core::timing::Timeline;
use ignis_core::vm::{Info, LogOptions, NetworkInfo, VmSettings};
use ignis_core::Error;

pub use local::Local;
pub use remote::Remote;

pub type Result<T> = std::result::Result<T, Error>;

/// A two-way byte stream to a VM (its console), and how to end it.
pub struct Stream {
    pub reader: Box<dyn Read + Send>,
    pub writer: Box<dyn Write + Send>,
}

/// Every operation a command needs. Errors are the service layer's, so
/// exit codes are the same in-process and remote.
pub trait Engine {
    fn vm_list(&self, all: bool) -> Result<Vec<VmRecord>>;
    fn vm_inspect(&self, vm: &str) -> Result<VmRecord>;
    fn vm_stats(&self, vm: &str) -> Result<ignis_api::VmStats>;
    fn vm_create(&self, settings: &VmSettings, timeline: &Timeline) -> Result<VmRecord>;
    fn vm_start(&self, vm: &str, wait: bool, timeline: &Timeline) -> Result<VmRecord>;
    fn vm_stop(&self, vm: &str, timeout: Option<Duration>) -> Result<VmRecord>;
    fn vm_kill(&self, vm: &str) -> Result<VmRecord>;
    fn vm_pause(&self, vm: &str, pause: bool) -> Result<VmRecord>;
    /// Removes a VM; its ID.
    fn vm_remove(&self, vm: &str, force: bool) -> Result<String>;
    /// The console log into `out` (the lines `opts` chooses); with
    /// `follow`, until the VM stops.
    fn vm_logs(&self, vm: &str, follow: bool, opts: &LogOptions, out: &mut dyn Write)
        -> Result<()>;
    /// The serial console of a running VM: its ID and the stream.
    fn vm_attach(&self, vm: &str) -> Result<(String, Stream)>;
    /// A session with a running VM's guest agent.
    fn vm_agent(&self, vm: &str) -> Result<(VmRecord, AgentClient)>;
    fn vm_ssh(&self, vm: &str) -> Result<ignis_core::vm::SshPlan>;
    /// A TCP connection to the VM's sshd (`ignis ssh`'s `ProxyCommand`
    /// over `--host`: the daemon connects, this machine need not reach
    /// the VM's address).
    fn vm_ssh_connect(&self, vm: &str) -> Result<Stream>;
    fn vm_boot_plan(&self, vm: &str) -> Result<ignis_core::vm::BootPlan>;
    fn vm_manifest(&self, vm: &str) -> Result<VmManifest>;
    fn apply(&self, manifests: &[Manifest]) -> Result<Vec<Applied>>;
    fn delete_manifests(&self, manifests: &[Manifest]) -> Result<Vec<Applied>>;

    fn snapshot_create(
        &self,
        vm: &str,
        name: Option<&str>,
        timeline: &Timeline,
    ) -> Result<SnapshotRecord>;
    fn snapshot_list(&self) -> Result<Vec<SnapshotRecord>>;
    fn snapshot_tree(&self) -> Result<Vec<TreeLine>>;
    fn snapshot_inspect(&self, s: &str) -> Result<SnapshotRecord>;
    fn snapshot_remove(&self, s: &str) -> Result<SnapshotRecord>;
    fn snapshot_export(&self, s: &str, out: &Path) -> Result<SnapshotRecord>;
    fn snapshot_import(&self, file: &Path) -> Result<SnapshotRecord>;
    fn snapshot_push(&self, s: &str, reference: &str) -> Result<String>;
    fn snapshot_pull(&self, reference: &str) -> Result<SnapshotRecord>;
    fn fork(&self, source: &str, opts: &ForkOptions) -> Result<(SnapshotRecord, Vec<VmRecord>)>;

    fn image_pull(&self, reference: &str) -> Result<ImageRecord>;
    fn image_import(&self, path: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>>;
    fn image_list(&self) -> Result<Vec<ImageRecord>>;
    fn image_inspect(&self, image: &str) -> Result<ImageRecord>;
    fn image_remove(&self, image: &str, force: bool) -> Result<RemoveOutcome>;

    fn kernel_import(
        &self,
        source: &str,
        name: Option<&str>,
        default: bool,
    ) -> Result<KernelRecord>;
    fn kernel_list(&self) -> Result<Vec<KernelRecord>>;
    fn kernel_inspect(&self, kernel: &str) -> Result<KernelRecord>;
    fn kernel_remove(&self, kernel: &str, force: bool) -> Result<String>;

    fn network_inspect(&self) -> Result<NetworkInfo>;

    /// `rm -v`: removes a VM and its anonymous volumes; its name.
    fn vm_remove_with_volumes(&self, vm: &str, force: bool) -> Result<String>;
    fn volume_create(
        &self,
        name: Option<&str>,
        size: u64,
        labels: &BTreeMap<String, String>,
    ) -> Result<VolumeRecord>;
    fn volume_list(&self) -> Result<Vec<VolumeRecord>>;
    fn volume_inspect(&self, volume: &str) -> Result<VolumeRecord>;
    fn volume_remove(&self, volume: &str) -> Result<VolumeRecord>;
    fn volume_prune(&self, all: bool) -> Result<ignis_api::VolumePruneReport>;
    fn info(&self) -> Result<Info>;
    fn system_check(&self) -> Result<Vec<Problem>>;
    fn system_prune(&self) -> Result<(PruneReport, Vec<String>)>;

    /// Events matching `filter`, each handed to `sink` as it happens,
    /// until `filter.until` (or forever; a sink error ends it, e.g. a
    /// closed pipe).
    fn events(&self, filter: &EventFilter, sink: &mut EventSink<'_>) -> Result<()>;
}

/// Where [`Engine::events`] hands each event.
pub type EventSink<'a> = dyn FnMut(&ignis_api::Event) -> std::io::Result<()> + 'a;
