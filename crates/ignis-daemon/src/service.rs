//! What the API and the reconcilers need from ignis, as a trait: the real
//! service is `ignis_core::Ignis`; the HTTP layer's tests drive a fake, so
//! they check what the layer parses and maps (paths, queries, bodies,
//! errors to problem+json) and nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ignis_agent_proto::ExecRequest;
use ignis_api::manifest::{Manifest, VmManifest};
use ignis_api::{
    ExecOutput, ImageRecord, KernelRecord, PruneReport, SnapshotRecord, VmRecord, VolumeRecord,
};
use ignis_core::image::RemoveOutcome;
use ignis_core::manifest::Applied;
use ignis_core::snapshot::{ForkOptions, TreeLine};
use ignis_core::system::Problem as CheckProblem;
use ignis_core::vm::{Info, LogOptions, NetworkInfo};
use ignis_core::{Error, ErrorKind};

/// What a service without an operation answers (the API tests' fake
/// implements only what they exercise).
fn unsupported<T>(op: &str) -> Result<T, Error> {
    Err(Error::new(
        ErrorKind::Unavailable,
        format!("{op} is not available from this service"),
    ))
}

pub trait Service: Send + Sync + 'static {
    fn vm_list(&self, all: bool) -> Result<Vec<VmRecord>, Error>;
    fn vm_inspect(&self, query: &str) -> Result<VmRecord, Error>;
    fn vm_remove(&self, query: &str, force: bool) -> Result<String, Error>;
    fn vm_start(&self, query: &str, wait_ready: bool) -> Result<VmRecord, Error>;
    fn vm_stop(&self, query: &str, timeout: Option<Duration>) -> Result<VmRecord, Error>;
    fn vm_manifest(&self, query: &str) -> Result<VmManifest, Error>;
    fn apply(&self, manifests: &[Manifest], owner: &str) -> Vec<Applied>;
    fn converge(&self, manifests: &[Manifest], owner: &str) -> Vec<Applied>;
    fn delete_manifests(&self, manifests: &[Manifest]) -> Vec<Applied>;
    fn snapshot_list(&self) -> Result<Vec<SnapshotRecord>, Error>;
    fn image_list(&self) -> Result<Vec<ImageRecord>, Error>;
    fn vm_kill(&self, query: &str) -> Result<VmRecord, Error>;
    /// The console log so far (the lines `opts` chooses).
    fn vm_logs(&self, query: &str, opts: &LogOptions) -> Result<Vec<u8>, Error>;
    fn vm_snapshot(&self, query: &str, name: Option<&str>) -> Result<SnapshotRecord, Error>;
    fn vm_fork(
        &self,
        source: &str,
        opts: &ForkOptions,
    ) -> Result<(SnapshotRecord, Vec<VmRecord>), Error>;

    // Every other verb of the CLI. Defaults refuse (see `unsupported`).

    /// Creates a VM from a manifest (the flags of `ignis create` travel as
    /// one); `auto_remove` is `--rm`.
    fn vm_create(&self, _m: &VmManifest, _auto_remove: bool) -> Result<VmRecord, Error> {
        unsupported("create")
    }
    fn vm_pause(&self, _query: &str, _pause: bool) -> Result<VmRecord, Error> {
        unsupported("pause")
    }
    /// One sample of a VM's resource counters (`stats`).
    fn vm_stats(&self, _query: &str) -> Result<ignis_api::VmStats, Error> {
        unsupported("stats")
    }
    /// `logs -f`: writes the log into `out` until the VM stops (or `out`
    /// fails: the client went away).
    fn vm_follow_logs(
        &self,
        _query: &str,
        _opts: &LogOptions,
        _out: &mut dyn std::io::Write,
    ) -> Result<(), Error> {
        unsupported("logs -f")
    }
    /// The console socket of a running VM (`attach`).
    fn vm_console_socket(&self, _query: &str) -> Result<PathBuf, Error> {
        unsupported("attach")
    }
    /// The agent socket of a running VM (exec, cp).
    fn vm_agent_socket(&self, _query: &str) -> Result<PathBuf, Error> {
        unsupported("the agent")
    }
    fn vm_exec(&self, _query: &str, _req: ExecRequest) -> Result<ExecOutput, Error> {
        unsupported("exec")
    }
    /// What `ignis ssh` needs from afar: address, pinned host keys, key.
    fn vm_ssh_access(&self, _query: &str) -> Result<ignis_api::SshAccess, Error> {
        unsupported("ssh")
    }
    /// Where a running VM's sshd listens, from this host.
    fn vm_ssh_address(&self, _query: &str) -> Result<std::net::SocketAddr, Error> {
        unsupported("ssh")
    }
    /// How the VM would be booted by hand (`ignis __boot-plan`).
    fn vm_boot_plan(&self, _query: &str) -> Result<ignis_core::vm::BootPlan, Error> {
        unsupported("boot-plan")
    }
    fn snapshot_inspect(&self, _query: &str) -> Result<SnapshotRecord, Error> {
        unsupported("snapshot inspect")
    }
    fn snapshot_remove(&self, _query: &str) -> Result<SnapshotRecord, Error> {
        unsupported("snapshot rm")
    }
    fn snapshot_tree(&self) -> Result<Vec<TreeLine>, Error> {
        unsupported("snapshot ls --tree")
    }
    fn snapshot_export(&self, _query: &str, _out: &Path) -> Result<SnapshotRecord, Error> {
        unsupported("snapshot export")
    }
    fn snapshot_import(&self, _file: &Path) -> Result<SnapshotRecord, Error> {
        unsupported("snapshot import")
    }
    fn snapshot_push(&self, _query: &str, _reference: &str) -> Result<String, Error> {
        unsupported("snapshot push")
    }
    fn snapshot_pull(&self, _reference: &str) -> Result<SnapshotRecord, Error> {
        unsupported("snapshot pull")
    }
    fn image_inspect(&self, _query: &str) -> Result<ImageRecord, Error> {
        unsupported("image inspect")
    }
    fn image_pull(&self, _reference: &str) -> Result<ImageRecord, Error> {
        unsupported("image pull")
    }
    fn image_import(&self, _file: &Path, _name: Option<&str>) -> Result<Vec<ImageRecord>, Error> {
        unsupported("image import")
    }
    fn image_remove(&self, _query: &str, _force: bool) -> Result<RemoveOutcome, Error> {
        unsupported("image rm")
    }
    fn kernel_list(&self) -> Result<Vec<KernelRecord>, Error> {
        unsupported("kernel ls")
    }
    fn kernel_inspect(&self, _query: &str) -> Result<KernelRecord, Error> {
        unsupported("kernel inspect")
    }
    fn kernel_import(
        &self,
        _source: &str,
        _name: Option<&str>,
        _default: bool,
    ) -> Result<KernelRecord, Error> {
        unsupported("kernel import")
    }
    fn kernel_remove(&self, _query: &str, _force: bool) -> Result<String, Error> {
        unsupported("kernel rm")
    }
    fn network_inspect(&self) -> Result<NetworkInfo, Error> {
        unsupported("network inspect")
    }
    /// `rm -v`: the VM and its anonymous volumes.
    fn vm_remove_with_volumes(&self, _query: &str, _force: bool) -> Result<String, Error> {
        unsupported("rm -v")
    }
    fn volume_list(&self) -> Result<Vec<VolumeRecord>, Error> {
        unsupported("volume ls")
    }
    fn volume_create(
        &self,
        _name: Option<&str>,
        _size: u64,
        _labels: BTreeMap<String, String>,
    ) -> Result<VolumeRecord, Error> {
        unsupported("volume create")
    }
    fn volume_inspect(&self, _query: &str) -> Result<VolumeRecord, Error> {
        unsupported("volume inspect")
    }
    fn volume_remove(&self, _query: &str) -> Result<VolumeRecord, Error> {
        unsupported("volume rm")
    }
    fn volume_prune(&self, _all: bool) -> Result<ignis_api::VolumePruneReport, Error> {
        unsupported("volume prune")
    }
    fn info(&self) -> Result<Info, Error> {
        unsupported("info")
    }
    fn system_check(&self) -> Result<Vec<CheckProblem>, Error> {
        unsupported("system check")
    }
    fn system_prune(&self) -> Result<(PruneReport, Vec<String>), Error> {
        unsupported("system prune")
    }
    /// Where uploaded files wait for their import (same filesystem as the
    /// state, cleaned by `system prune` if left behind).
    fn upload_dir(&self) -> PathBuf {
        std::env::temp_dir()
    }
    /// The VMM's own counters of a running VM (Firecracker), if any.
    fn vmm_metrics(&self, _vm: &VmRecord) -> Option<ignis_core::vm::VmmTotals> {
        None
    }
}

impl Service for ignis_core::Ignis {
    fn vm_list(&self, all: bool) -> Result<Vec<VmRecord>, Error> {
        ignis_core::Ignis::vm_list(self, all)
    }
    fn vm_inspect(&self, query: &str) -> Result<VmRecord, Error> {
        ignis_core::Ignis::vm_inspect(self, query)
    }
    fn vm_remove(&self, query: &str, force: bool) -> Result<String, Error> {
        ignis_core::Ignis::vm_remove(self, query, force)
    }
    fn vm_start(&self, query: &str, wait_ready: bool) -> Result<VmRecord, Error> {
        ignis_core::Ignis::vm_start(self, query, wait_ready)
    }
    fn vm_stop(&self, query: &str, timeout: Option<Duration>) -> Result<VmRecord, Error> {
        ignis_core::Ignis::vm_stop(self, query, timeout)
    }
    fn vm_manifest(&self, query: &str) -> Result<VmManifest, Error> {
        ignis_core::Ignis::vm_manifest(self, query)
    }
    fn apply(&self, manifests: &[Manifest], owner: &str) -> Vec<Applied> {
        ignis_core::Ignis::apply(self, manifests, owner)
    }
    fn converge(&self, manifests: &[Manifest], owner: &str) -> Vec<Applied> {
        ignis_core::Ignis::converge(self, manifests, owner)
    }
    fn delete_manifests(&self, manifests: &[Manifest]) -> Vec<Applied> {
        ignis_core::Ignis::delete_manifests(self, manifests)
    }
    fn snapshot_list(&self) -> Result<Vec<SnapshotRecord>, Error> {
        ignis_core::Ignis::snapshot_list(self)
    }
    fn image_list(&self) -> Result<Vec<ImageRecord>, Error> {
        ignis_core::Ignis::image_list(self)
    }
    fn vm_kill(&self, query: &str) -> Result<VmRecord, Error> {
        ignis_core::Ignis::vm_kill(self, query)
    }
    fn vm_logs(&self, query: &str, opts: &LogOptions) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        ignis_core::Ignis::vm_logs_with(self, query, false, opts, &mut out)?;
        Ok(out)
    }
    fn vm_snapshot(&self, query: &str, name: Option<&str>) -> Result<SnapshotRecord, Error> {
        ignis_core::Ignis::vm_snapshot(self, query, name)
    }
    fn vm_fork(
        &self,
        source: &str,
        opts: &ForkOptions,
    ) -> Result<(SnapshotRecord, Vec<VmRecord>), Error> {
        ignis_core::Ignis::vm_fork(self, source, opts)
    }

    fn vm_create(&self, m: &VmManifest, auto_remove: bool) -> Result<VmRecord, Error> {
        use ignis_core::vm::VmSettings;
        let settings = VmSettings::from_environment()
            .overlay(VmSettings::from_manifest(m))
            .overlay(VmSettings {
                auto_remove,
                ..Default::default()
            });
        ignis_core::Ignis::vm_create(self, &settings.parse()?)
    }
    fn vm_pause(&self, query: &str, pause: bool) -> Result<VmRecord, Error> {
        ignis_core::Ignis::vm_pause(self, query, pause)
    }
    fn vm_stats(&self, query: &str) -> Result<ignis_api::VmStats, Error> {
        ignis_core::Ignis::vm_stats(self, query)
    }
    fn vm_follow_logs(
        &self,
        query: &str,
        opts: &LogOptions,
        out: &mut dyn std::io::Write,
    ) -> Result<(), Error> {
        ignis_core::Ignis::vm_logs_with(self, query, true, opts, out)
    }
    fn vm_console_socket(&self, query: &str) -> Result<PathBuf, Error> {
        Ok(ignis_core::Ignis::vm_attach_socket(self, query)?.1)
    }
    fn vm_agent_socket(&self, query: &str) -> Result<PathBuf, Error> {
        Ok(ignis_core::Ignis::vm_agent_socket(self, query)?.1)
    }
    fn vm_exec(&self, query: &str, req: ExecRequest) -> Result<ExecOutput, Error> {
        ignis_core::Ignis::vm_exec_output(self, query, req, 16 << 20)
    }
    fn vm_ssh_access(&self, query: &str) -> Result<ignis_api::SshAccess, Error> {
        ignis_core::Ignis::vm_ssh_access(self, query)
    }
    fn vm_ssh_address(&self, query: &str) -> Result<std::net::SocketAddr, Error> {
        Ok(ignis_core::Ignis::vm_ssh_address(self, query)?.1)
    }
    fn vm_boot_plan(&self, query: &str) -> Result<ignis_core::vm::BootPlan, Error> {
        ignis_core::Ignis::vm_boot_plan(self, query)
    }
    fn snapshot_inspect(&self, query: &str) -> Result<SnapshotRecord, Error> {
        ignis_core::Ignis::snapshot_inspect(self, query)
    }
    fn snapshot_remove(&self, query: &str) -> Result<SnapshotRecord, Error> {
        ignis_core::Ignis::snapshot_remove(self, query)
    }
    fn snapshot_tree(&self) -> Result<Vec<TreeLine>, Error> {
        ignis_core::Ignis::snapshot_tree(self)
    }
    fn snapshot_export(&self, query: &str, out: &Path) -> Result<SnapshotRecord, Error> {
        ignis_core::Ignis::snapshot_export(self, query, out)
    }
    fn snapshot_import(&self, file: &Path) -> Result<SnapshotRecord, Error> {
        ignis_core::Ignis::snapshot_import(self, file)
    }
    fn snapshot_push(&self, query: &str, reference: &str) -> Result<String, Error> {
        ignis_core::Ignis::snapshot_push(self, query, reference)
    }
    fn snapshot_pull(&self, reference: &str) -> Result<SnapshotRecord, Error> {
        ignis_core::Ignis::snapshot_pull(self, reference)
    }
    fn image_inspect(&self, query: &str) -> Result<ImageRecord, Error> {
        ignis_core::Ignis::image_inspect(self, query)
    }
    fn image_pull(&self, reference: &str) -> Result<ImageRecord, Error> {
        ignis_core::Ignis::image_pull(self, reference)
    }
    fn image_import(&self, file: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>, Error> {
        ignis_core::Ignis::image_import(self, file, name)
    }
    fn image_remove(&self, query: &str, force: bool) -> Result<RemoveOutcome, Error> {
        ignis_core::Ignis::image_remove(self, query, force)
    }
    fn kernel_list(&self) -> Result<Vec<KernelRecord>, Error> {
        ignis_core::Ignis::kernel_list(self)
    }
    fn kernel_inspect(&self, query: &str) -> Result<KernelRecord, Error> {
        ignis_core::Ignis::kernel_inspect(self, query)
    }
    fn kernel_import(
        &self,
        source: &str,
        name: Option<&str>,
        default: bool,
    ) -> Result<KernelRecord, Error> {
        ignis_core::Ignis::kernel_import(self, source, name, default)
    }
    fn kernel_remove(&self, query: &str, force: bool) -> Result<String, Error> {
        ignis_core::Ignis::kernel_remove(self, query, force)
    }
    fn network_inspect(&self) -> Result<NetworkInfo, Error> {
        ignis_core::Ignis::network_inspect(self)
    }
    fn vm_remove_with_volumes(&self, query: &str, force: bool) -> Result<String, Error> {
        ignis_core::Ignis::vm_remove_with(self, query, force, true)
    }
    fn volume_list(&self) -> Result<Vec<VolumeRecord>, Error> {
        ignis_core::Ignis::volume_list(self)
    }
    fn volume_create(
        &self,
        name: Option<&str>,
        size: u64,
        labels: BTreeMap<String, String>,
    ) -> Result<VolumeRecord, Error> {
        ignis_core::Ignis::volume_create(self, name, Some(size), labels)
    }
    fn volume_inspect(&self, query: &str) -> Result<VolumeRecord, Error> {
        ignis_core::Ignis::volume_inspect(self, query)
    }
    fn volume_remove(&self, query: &str) -> Result<VolumeRecord, Error> {
        ignis_core::Ignis::volume_remove(self, query)
    }
    fn volume_prune(&self, all: bool) -> Result<ignis_api::VolumePruneReport, Error> {
        ignis_core::Ignis::volume_prune(self, all)
    }
    fn info(&self) -> Result<Info, Error> {
        ignis_core::Ignis::info(self)
    }
    fn system_check(&self) -> Result<Vec<CheckProblem>, Error> {
        ignis_core::Ignis::system_check(self)
    }
    fn system_prune(&self) -> Result<(PruneReport, Vec<String>), Error> {
        ignis_core::Ignis::system_prune(self)
    }
    fn upload_dir(&self) -> PathBuf {
        self.root().join("tmp")
    }
    fn vmm_metrics(&self, vm: &VmRecord) -> Option<ignis_core::vm::VmmTotals> {
        ignis_core::Ignis::vm_vmm_metrics(self, vm)
    }
}
