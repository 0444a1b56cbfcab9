//! The in-process engine: this host's state through `ignis_core::Ignis`.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use ignis_agent_proto::client::Client as AgentClient;
use ignis_api::manifest::{Manifest, VmManifest};
use ignis_api::{EventFilter, ImageRecord, KernelRecord, PruneReport, SnapshotRecord, VmRecord};
use ignis_core::image::RemoveOutcome;
use ignis_core::manifest::Applied;
use ignis_core::snapshot::{ForkOptions, TreeLine};
use ignis_core::system::Problem;
use ignis_core::timing::Timeline;
use ignis_core::vm::{Info, LogOptions, NetworkInfo, VmSettings};
use ignis_core::{Error, ErrorKind, Ignis};

use super::{Engine, EventSink, Result, Stream};

pub struct Local(pub Ignis);

impl Engine for Local {
    fn vm_list(&self, all: bool) -> Result<Vec<VmRecord>> {
        self.0.vm_list(all)
    }
    fn vm_inspect(&self, vm: &str) -> Result<VmRecord> {
        self.0.vm_inspect(vm)
    }
    fn vm_stats(&self, vm: &str) -> Result<ignis_api::VmStats> {
        self.0.vm_stats(vm)
    }
    fn vm_create(&self, settings: &VmSettings, timeline: &Timeline) -> Result<VmRecord> {
        self.0.vm_create_timed(&settings.clone().parse()?, timeline)
    }
    fn vm_start(&self, vm: &str, wait: bool, timeline: &Timeline) -> Result<VmRecord> {
        self.0.vm_start_timed(vm, wait, timeline)
    }
    fn vm_stop(&self, vm: &str, timeout: Option<Duration>) -> Result<VmRecord> {
        self.0.vm_stop(vm, timeout)
    }
    fn vm_kill(&self, vm: &str) -> Result<VmRecord> {
        self.0.vm_kill(vm)
    }
    fn vm_pause(&self, vm: &str, pause: bool) -> Result<VmRecord> {
        self.0.vm_pause(vm, pause)
    }
    fn vm_remove(&self, vm: &str, force: bool) -> Result<String> {
        self.0.vm_remove(vm, force)
    }
    fn vm_logs(
        &self,
        vm: &str,
        follow: bool,
        opts: &LogOptions,
        out: &mut dyn Write,
    ) -> Result<()> {
        self.0.vm_logs_with(vm, follow, opts, out)
    }
    fn vm_attach(&self, vm: &str) -> Result<(String, Stream)> {
        let (id, sock) = self.0.vm_attach_socket(vm)?;
        let io = |e: std::io::Error| {
            Error::with_source(ErrorKind::Unavailable, format!("cannot attach to {vm}"), e)
        };
        let s = UnixStream::connect(&sock).map_err(io)?;
        let w = s.try_clone().map_err(io)?;
        Ok((
            id,
            Stream {
                reader: Box::new(s),
                writer: Box::new(ShutdownOnDrop(w)),
            },
        ))
    }
    fn vm_agent(&self, vm: &str) -> Result<(VmRecord, AgentClient)> {
        self.0.vm_agent(vm)
    }
    fn vm_ssh(&self, vm: &str) -> Result<ignis_core::vm::SshPlan> {
        self.0.vm_ssh(vm)
    }
    fn vm_ssh_connect(&self, vm: &str) -> Result<Stream> {
        let (_, addr) = self.0.vm_ssh_address(vm)?;
        let io = |e: std::io::Error| {
            Error::with_source(
                ErrorKind::Unavailable,
                format!("cannot connect to the sshd of {vm} at {addr}"),
                e,
            )
        };
        let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(io)?;
        let w = s.try_clone().map_err(io)?;
        Ok(Stream {
            reader: Box::new(s),
            writer: Box::new(TcpShutdownOnDrop(w)),
        })
    }
    fn vm_boot_plan(&self, vm: &str) -> Result<ignis_core::vm::BootPlan> {
        self.0.vm_boot_plan(vm)
    }
    fn vm_manifest(&self, vm: &str) -> Result<VmManifest> {
        self.0.vm_manifest(vm)
    }
    fn apply(&self, manifests: &[Manifest]) -> Result<Vec<Applied>> {
        Ok(self.0.apply(manifests, "cli"))
    }
    fn delete_manifests(&self, manifests: &[Manifest]) -> Result<Vec<Applied>> {
        Ok(self.0.delete_manifests(manifests))
    }
    fn snapshot_create(
        &self,
        vm: &str,
        name: Option<&str>,
        timeline: &Timeline,
    ) -> Result<SnapshotRecord> {
        self.0.vm_snapshot_timed(vm, name, timeline)
    }
    fn snapshot_list(&self) -> Result<Vec<SnapshotRecord>> {
        self.0.snapshot_list()
    }
    fn snapshot_tree(&self) -> Result<Vec<TreeLine>> {
        self.0.snapshot_tree()
    }
    fn snapshot_inspect(&self, s: &str) -> Result<SnapshotRecord> {
        self.0.snapshot_inspect(s)
    }
    fn snapshot_remove(&self, s: &str) -> Result<SnapshotRecord> {
        self.0.snapshot_remove(s)
    }
    fn snapshot_export(&self, s: &str, out: &Path) -> Result<SnapshotRecord> {
        self.0.snapshot_export(s, out)
    }
    fn snapshot_import(&self, file: &Path) -> Result<SnapshotRecord> {
        self.0.snapshot_import(file)
    }
    fn snapshot_push(&self, s: &str, reference: &str) -> Result<String> {
        self.0.snapshot_push(s, reference)
    }
    fn snapshot_pull(&self, reference: &str) -> Result<SnapshotRecord> {
        self.0.snapshot_pull(reference)
    }
    fn fork(&self, source: &str, opts: &ForkOptions) -> Result<(SnapshotRecord, Vec<VmRecord>)> {
        self.0
            .vm_fork_timed(source, opts, crate::output::started_ns())
    }
    fn image_pull(&self, reference: &str) -> Result<ImageRecord> {
        self.0.image_pull(reference)
    }
    fn image_import(&self, path: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>> {
        self.0.image_import(path, name)
    }
    fn image_list(&self) -> Result<Vec<ImageRecord>> {
        self.0.image_list()
    }
    fn image_inspect(&self, image: &str) -> Result<ImageRecord> {
        self.0.image_inspect(image)
    }
    fn image_remove(&self, image: &str, force: bool) -> Result<RemoveOutcome> {
        self.0.image_remove(image, force)
    }
    fn kernel_import(
        &self,
        source: &str,
        name: Option<&str>,
        default: bool,
    ) -> Result<KernelRecord> {
        self.0.kernel_import(source, name, default)
    }
    fn kernel_list(&self) -> Result<Vec<KernelRecord>> {
        self.0.kernel_list()
    }
    fn kernel_inspect(&self, kernel: &str) -> Result<KernelRecord> {
        self.0.kernel_inspect(kernel)
    }
    fn kernel_remove(&self, kernel: &str, force: bool) -> Result<String> {
        self.0.kernel_remove(kernel, force)
    }
    fn vm_remove_with_volumes(&self, vm: &str, force: bool) -> Result<String> {
        self.0.vm_remove_with(vm, force, true)
    }
    fn volume_create(
        &self,
        name: Option<&str>,
        size: u64,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<ignis_api::VolumeRecord> {
        self.0.volume_create(name, Some(size), labels.clone())
    }
    fn volume_list(&self) -> Result<Vec<ignis_api::VolumeRecord>> {
        self.0.volume_list()
    }
    fn volume_inspect(&self, volume: &str) -> Result<ignis_api::VolumeRecord> {
        self.0.volume_inspect(volume)
    }
    fn volume_remove(&self, volume: &str) -> Result<ignis_api::VolumeRecord> {
        self.0.volume_remove(volume)
    }
    fn volume_prune(&self, all: bool) -> Result<ignis_api::VolumePruneReport> {
        self.0.volume_prune(all)
    }
    fn network_inspect(&self) -> Result<NetworkInfo> {
        self.0.network_inspect()
    }
    /// Without a daemon there is no history: the VM records are watched
    /// from now on (as the daemon does), every half second.
    fn events(&self, filter: &EventFilter, sink: &mut EventSink<'_>) -> Result<()> {
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
                .unwrap_or(0)
        };
        if filter.since.is_some_and(|t| t < now()) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "past events are kept by `ignis daemon`: use --host (or IGNIS_HOST) for --since, or drop it",
            ));
        }
        let mut watcher = ignis_core::vm::VmWatcher::new();
        loop {
            let t = now();
            if filter.until.is_some_and(|u| t > u) {
                return Ok(());
            }
            for e in watcher.diff(&self.0.vm_list(true)?, t) {
                if filter.matches(&e) {
                    sink(&e).map_err(|e| Error::internal("write an event", e))?;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }

    fn info(&self) -> Result<Info> {
        self.0.info()
    }
    fn system_check(&self) -> Result<Vec<Problem>> {
        self.0.system_check()
    }
    fn system_prune(&self) -> Result<(PruneReport, Vec<String>)> {
        self.0.system_prune()
    }
}

/// The console's write half: dropping it (detach) ends the whole
/// connection, so the read half returns too.
struct ShutdownOnDrop(UnixStream);

impl Write for ShutdownOnDrop {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// The writing half of a TCP stream: dropping it tells the peer no more
/// comes (a half close), as the remote stream does.
struct TcpShutdownOnDrop(std::net::TcpStream);

impl Write for TcpShutdownOnDrop {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Drop for TcpShutdownOnDrop {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Write);
    }
}
