//! The remote engine: an `ignis daemon` through `ignis-client`. A daemon's
//! problem comes back as the service-layer error it was (its kind from the
//! problem's `code`, its field from `field`), so messages and exit codes
//! match the in-process path.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use ignis_agent_proto::client::Client as AgentClient;
use ignis_api::manifest::{Manifest, VmManifest};
use ignis_api::{EventFilter, ImageRecord, KernelRecord, PruneReport, SnapshotRecord, VmRecord};
use ignis_client::{enc, Client, CreateParams};
use ignis_core::image::RemoveOutcome;
use ignis_core::manifest::Applied;
use ignis_core::snapshot::{ForkOptions, TreeLine};
use ignis_core::system::Problem;
use ignis_core::timing::Timeline;
use ignis_core::vm::{Field, Info, LogOptions, NetworkInfo, VmSettings};
use ignis_core::{Error, ErrorKind};

use super::{Engine, EventSink, Result, Stream};

/// The client, and whether pulls and imports draw the daemon's progress
/// (stderr a terminal, no `--no-progress`).
pub struct Remote(pub Client, pub bool);

impl Remote {
    pub fn new(host: &str, progress: bool) -> Result<Self> {
        Client::new(host, std::env::var("IGNIS_TOKEN").ok())
            .map(|c| Self(c, progress))
            .map_err(convert)
    }

    /// Runs a pull or import with its progress drawn here as the daemon
    /// reports it (the same bars as in-process), or without a stream.
    fn with_progress<T>(
        &self,
        plain: impl FnOnce() -> ignis_client::Result<T>,
        streamed: impl FnOnce(&mut ignis_client::OnProgress<'_>) -> ignis_client::Result<T>,
    ) -> Result<T> {
        if !self.1 {
            return plain().c();
        }
        let mut shown = ignis_core::Progress::show(true);
        streamed(&mut |e| shown.event(e)).c()
    }
}

/// A client error as the service-layer error the daemon raised.
pub fn convert(e: ignis_client::Error) -> Error {
    match e {
        ignis_client::Error::Api {
            status,
            detail,
            field,
            code,
            ..
        } => {
            let kind = match code.as_deref() {
                Some("not-found") => ErrorKind::NotFound,
                Some("ambiguous") => ErrorKind::Ambiguous,
                Some("conflict") => ErrorKind::Conflict,
                Some("invalid") => ErrorKind::Invalid,
                Some("unavailable") => ErrorKind::Unavailable,
                Some(_) => ErrorKind::Internal,
                None => match status {
                    404 => ErrorKind::NotFound,
                    409 => ErrorKind::Conflict,
                    400 | 413 | 422 => ErrorKind::Invalid,
                    401 | 403 | 503 => ErrorKind::Unavailable,
                    _ => ErrorKind::Internal,
                },
            };
            let mut err = Error::new(kind, detail);
            err.field = field.as_deref().and_then(Field::from_name);
            err
        }
        e @ ignis_client::Error::Connect { .. } => Error::wrap(ErrorKind::Unavailable, e),
        e @ ignis_client::Error::Protocol(_) => Error::wrap(ErrorKind::Internal, e),
    }
}

trait Converted<T> {
    fn c(self) -> Result<T>;
}

impl<T> Converted<T> for ignis_client::Result<T> {
    fn c(self) -> Result<T> {
        self.map_err(convert)
    }
}

/// `ssh -o ProxyCommand=...`: `ignis --host HOST system ssh-proxy ID`,
/// each word quoted for the shell ssh runs it with (`exec` prepended by
/// ssh), `%` doubled (ssh's own escapes).
fn proxy_command(exe: &str, host: &str, id: &str) -> String {
    let q = |w: &str| format!("'{}'", w.replace('\'', r"'\''"));
    format!("{} --host {} system ssh-proxy {}", q(exe), q(host), q(id)).replace('%', "%%")
}

/// A multi-document YAML body of manifests.
fn yaml(manifests: &[Manifest]) -> Result<Vec<u8>> {
    let mut docs = Vec::new();
    for m in manifests {
        docs.push(
            serde_yaml::to_string(m).map_err(|e| {
                Error::with_source(ErrorKind::Internal, "cannot encode a manifest", e)
            })?,
        );
    }
    Ok(docs.join("---\n").into_bytes())
}

impl Engine for Remote {
    fn vm_list(&self, all: bool) -> Result<Vec<VmRecord>> {
        self.0.vm_list(all).c()
    }
    fn vm_inspect(&self, vm: &str) -> Result<VmRecord> {
        self.0.vm_inspect(vm).c()
    }
    fn vm_stats(&self, vm: &str) -> Result<ignis_api::VmStats> {
        self.0.vm_stats(vm).c()
    }
    fn vm_create(&self, settings: &VmSettings, _timeline: &Timeline) -> Result<VmRecord> {
        // `--ssh PUBKEY-FILE` names a file on this machine: its key travels.
        let mut settings = settings.clone();
        if let Some(k) = &settings.ssh {
            if !k.is_empty() && Path::new(k).is_file() {
                let key = std::fs::read_to_string(k).map_err(|e| {
                    Error::with_source(ErrorKind::Invalid, format!("cannot read {k}"), e)
                        .about(Field::Ssh)
                })?;
                settings.ssh = Some(key.trim().to_string());
            }
        }
        // `-v ./disk.ext4:/data`: relative to this directory, not the daemon's.
        for v in &mut settings.volumes {
            if v.starts_with('.') {
                if let Some((src, rest)) = v.split_once(':') {
                    if let Ok(abs) = std::path::absolute(src) {
                        *v = format!("{}:{rest}", abs.display());
                    }
                }
            }
        }
        self.0
            .vm_create(
                &settings.to_manifest(),
                &CreateParams {
                    start: false,
                    wait: false,
                    auto_remove: settings.auto_remove,
                },
            )
            .c()
    }
    fn vm_start(&self, vm: &str, wait: bool, _timeline: &Timeline) -> Result<VmRecord> {
        self.0.vm_start(vm, wait).c()
    }
    fn vm_stop(&self, vm: &str, timeout: Option<Duration>) -> Result<VmRecord> {
        self.0.vm_stop(vm, timeout.map(|t| t.as_secs())).c()
    }
    fn vm_kill(&self, vm: &str) -> Result<VmRecord> {
        self.0.vm_kill(vm).c()
    }
    fn vm_pause(&self, vm: &str, pause: bool) -> Result<VmRecord> {
        self.0.vm_pause(vm, pause).c()
    }
    fn vm_remove(&self, vm: &str, force: bool) -> Result<String> {
        self.0.vm_remove(vm, force).c()
    }
    fn vm_logs(
        &self,
        vm: &str,
        follow: bool,
        opts: &LogOptions,
        out: &mut dyn Write,
    ) -> Result<()> {
        let mut r = self
            .0
            .vm_logs_with(vm, follow, opts.tail, opts.since_ns, opts.timestamps)
            .c()?;
        // A closed output (`| head`) ends it quietly, as in-process.
        let _ = std::io::copy(&mut r, out);
        let _ = out.flush();
        Ok(())
    }
    fn vm_attach(&self, vm: &str) -> Result<(String, Stream)> {
        let rec = self.0.vm_inspect(vm).c()?;
        let s = self.0.vm_attach(&rec.id).c()?;
        Ok((
            rec.id,
            Stream {
                reader: s.reader,
                writer: s.writer,
            },
        ))
    }
    fn vm_agent(&self, vm: &str) -> Result<(VmRecord, AgentClient)> {
        let rec = self.0.vm_inspect(vm).c()?;
        let client = self.0.vm_agent(&rec.id).c()?;
        Ok((rec, client))
    }
    fn vm_ssh(&self, vm: &str) -> Result<ignis_core::vm::SshPlan> {
        let access = self.0.vm_ssh_access(vm).c()?;
        // The keys of this session only, in a private directory removed
        // once ssh ends.
        let dir = tempfile::Builder::new()
            .prefix("ignis-ssh-")
            .tempdir()
            .map_err(|e| Error::internal("create a temporary directory", e))?
            .keep();
        let mut plan = match ignis_core::vm::SshPlan::write(&access, &dir) {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        plan.temporary = Some(dir);
        // ssh reaches the VM through this program, which reaches it
        // through the daemon (the token and CA travel in the environment).
        let exe =
            std::env::current_exe().map_err(|e| Error::internal("find this program's path", e))?;
        plan.proxy_command = Some(proxy_command(
            &exe.display().to_string(),
            self.0.host(),
            &access.id,
        ));
        Ok(plan)
    }
    fn vm_ssh_connect(&self, vm: &str) -> Result<Stream> {
        let s = self.0.vm_ssh_connect(vm).c()?;
        Ok(Stream {
            reader: s.reader,
            writer: s.writer,
        })
    }
    fn vm_boot_plan(&self, vm: &str) -> Result<ignis_core::vm::BootPlan> {
        self.0.get(&format!("/v1/vms/{}/boot-plan", enc(vm))).c()
    }
    fn vm_manifest(&self, vm: &str) -> Result<VmManifest> {
        self.0.vm_manifest(vm).c()
    }
    fn apply(&self, manifests: &[Manifest]) -> Result<Vec<Applied>> {
        let b = self
            .0
            .call(
                "POST",
                "/v1/apply",
                Some((yaml(manifests)?, "application/yaml")),
            )
            .c()?;
        serde_json::from_slice(&b).map_err(|e| {
            Error::with_source(ErrorKind::Internal, "a reply the API does not document", e)
        })
    }
    fn delete_manifests(&self, manifests: &[Manifest]) -> Result<Vec<Applied>> {
        let b = self
            .0
            .call(
                "POST",
                "/v1/delete",
                Some((yaml(manifests)?, "application/yaml")),
            )
            .c()?;
        serde_json::from_slice(&b).map_err(|e| {
            Error::with_source(ErrorKind::Internal, "a reply the API does not document", e)
        })
    }
    fn snapshot_create(
        &self,
        vm: &str,
        name: Option<&str>,
        _timeline: &Timeline,
    ) -> Result<SnapshotRecord> {
        self.0.snapshot_create(vm, name).c()
    }
    fn snapshot_list(&self) -> Result<Vec<SnapshotRecord>> {
        self.0.snapshot_list().c()
    }
    fn snapshot_tree(&self) -> Result<Vec<TreeLine>> {
        self.0.get("/v1/snapshot-tree").c()
    }
    fn snapshot_inspect(&self, s: &str) -> Result<SnapshotRecord> {
        self.0.snapshot_inspect(s).c()
    }
    fn snapshot_remove(&self, s: &str) -> Result<SnapshotRecord> {
        self.0.snapshot_remove(s).c()
    }
    fn snapshot_export(&self, s: &str, out: &Path) -> Result<SnapshotRecord> {
        let rec = self.0.snapshot_inspect(s).c()?;
        // Written beside the target and renamed: a failed export leaves
        // nothing behind.
        let tmp = out.with_extension("ignis-partial");
        let io = |e: std::io::Error| {
            Error::with_source(
                ErrorKind::Internal,
                format!("cannot write {}", out.display()),
                e,
            )
        };
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        let r = self.0.snapshot_export(&rec.id, &mut f).c();
        if let Err(e) = r.and_then(|_| f.sync_all().map_err(io)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, out).map_err(io)?;
        Ok(rec)
    }
    fn snapshot_import(&self, file: &Path) -> Result<SnapshotRecord> {
        self.0.snapshot_import(file).c()
    }
    fn snapshot_push(&self, s: &str, reference: &str) -> Result<String> {
        self.0.snapshot_push(s, reference).c()
    }
    fn snapshot_pull(&self, reference: &str) -> Result<SnapshotRecord> {
        self.with_progress(
            || self.0.snapshot_pull(reference),
            |on| self.0.snapshot_pull_progress(reference, on),
        )
    }
    fn fork(&self, source: &str, opts: &ForkOptions) -> Result<(SnapshotRecord, Vec<VmRecord>)> {
        let f = self
            .0
            .snapshot_fork(
                source,
                opts.count,
                opts.name_prefix.as_deref(),
                opts.name.as_deref(),
                opts.auto_remove,
            )
            .c()?;
        Ok((f.snapshot, f.clones))
    }
    fn image_pull(&self, reference: &str) -> Result<ImageRecord> {
        self.with_progress(
            || self.0.image_pull(reference),
            |on| self.0.image_pull_progress(reference, on),
        )
    }
    fn image_import(&self, path: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>> {
        if path.is_dir() {
            // An OCI layout directory travels as a tar of itself.
            let tmp = tempfile::NamedTempFile::new()
                .map_err(|e| Error::internal("create a temporary file", e))?;
            let mut b = tar::Builder::new(tmp.as_file());
            b.follow_symlinks(false);
            b.append_dir_all(".", path)
                .and_then(|()| b.finish())
                .map_err(|e| {
                    Error::with_source(
                        ErrorKind::Invalid,
                        format!("cannot read {}", path.display()),
                        e,
                    )
                })?;
            drop(b);
            return self.with_progress(
                || self.0.image_import(tmp.path(), name),
                |on| self.0.image_import_progress(tmp.path(), name, on),
            );
        }
        if !path.exists() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "{} does not exist; give a docker-save tarball or an OCI layout (dir or tar)",
                    path.display()
                ),
            ));
        }
        self.with_progress(
            || self.0.image_import(path, name),
            |on| self.0.image_import_progress(path, name, on),
        )
    }
    fn image_list(&self) -> Result<Vec<ImageRecord>> {
        self.0.image_list().c()
    }
    fn image_inspect(&self, image: &str) -> Result<ImageRecord> {
        self.0.image_inspect(image).c()
    }
    fn image_remove(&self, image: &str, force: bool) -> Result<RemoveOutcome> {
        self.0
            .delete(&format!("/v1/images/{}?force={force}", enc(image)))
            .c()
    }
    fn kernel_import(
        &self,
        source: &str,
        name: Option<&str>,
        default: bool,
    ) -> Result<KernelRecord> {
        use ignis_client::KernelSourceArg;
        let p = Path::new(source);
        if p.exists() {
            return self.with_progress(
                || self.0.kernel_upload(p, name, default),
                |on| {
                    self.0
                        .kernel_import_progress(KernelSourceArg::File(p), name, default, on)
                },
            );
        }
        if source.starts_with('/') || source.starts_with('.') {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("kernel file {source} does not exist"),
            ));
        }
        self.with_progress(
            || self.0.kernel_import(source, name, default),
            |on| {
                self.0
                    .kernel_import_progress(KernelSourceArg::Fetched(source), name, default, on)
            },
        )
    }
    fn kernel_list(&self) -> Result<Vec<KernelRecord>> {
        self.0.kernel_list().c()
    }
    fn kernel_inspect(&self, kernel: &str) -> Result<KernelRecord> {
        self.0.kernel_inspect(kernel).c()
    }
    fn kernel_remove(&self, kernel: &str, force: bool) -> Result<String> {
        self.0.kernel_remove(kernel, force).c()
    }
    fn vm_remove_with_volumes(&self, vm: &str, force: bool) -> Result<String> {
        self.0.vm_remove_volumes(vm, force).c()
    }
    fn volume_create(
        &self,
        name: Option<&str>,
        size: u64,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<ignis_api::VolumeRecord> {
        self.0.volume_create(name, size, labels).c()
    }
    fn volume_list(&self) -> Result<Vec<ignis_api::VolumeRecord>> {
        self.0.volume_list().c()
    }
    fn volume_inspect(&self, volume: &str) -> Result<ignis_api::VolumeRecord> {
        self.0.volume_inspect(volume).c()
    }
    fn volume_remove(&self, volume: &str) -> Result<ignis_api::VolumeRecord> {
        self.0.volume_remove(volume).c()
    }
    fn volume_prune(&self, all: bool) -> Result<ignis_api::VolumePruneReport> {
        self.0.volume_prune(all).c()
    }
    fn network_inspect(&self) -> Result<NetworkInfo> {
        self.0.get("/v1/networks/bridge").c()
    }
    fn info(&self) -> Result<Info> {
        self.0.get("/v1/info").c()
    }
    fn system_check(&self) -> Result<Vec<Problem>> {
        self.0.get("/v1/system/check").c()
    }
    fn system_prune(&self) -> Result<(PruneReport, Vec<String>)> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Pruned {
            images_deleted: Vec<String>,
            report: PruneReport,
        }
        let p: Pruned = self.0.post("/v1/system/prune").c()?;
        Ok((p.report, p.images_deleted))
    }

    fn events(&self, filter: &EventFilter, sink: &mut EventSink<'_>) -> Result<()> {
        for e in self.0.events(filter).c()? {
            sink(&e.c()?).map_err(|e| Error::internal("write an event", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_proxy_command_is_quoted_for_the_shell_and_ssh() {
        assert_eq!(
            super::proxy_command("/opt/my ignis/ignis", "unix:///run/a'b%.sock", "0123"),
            r"'/opt/my ignis/ignis' --host 'unix:///run/a'\''b%%.sock' system ssh-proxy '0123'"
        );
    }
}
