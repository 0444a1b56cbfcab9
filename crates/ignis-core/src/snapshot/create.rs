//! `ignis snapshot VM`: pause, save device state + memory + writable disk,
//! resume; then store the three files as blobs (after the VM runs again).

use std::time::Instant;

use ignis_api::{BlobRef, SnapshotRecord, VmState};

use super::KIND;
use crate::{Error, ErrorKind, Ignis};

impl Ignis {
    /// Snapshots a running VM. The VM is paused only while the VMM writes
    /// its state and the memory and disk are copied (sparse); hashing and
    /// storing happen after it resumed. Returns the record (with the pause).
    pub fn vm_snapshot(&self, query: &str, name: Option<&str>) -> Result<SnapshotRecord, Error> {
        self.vm_snapshot_timed(query, name, &crate::timing::Timeline::new())
    }

    /// [`Ignis::vm_snapshot`] recording its phases on `timeline`.
    pub fn vm_snapshot_timed(
        &self,
        query: &str,
        name: Option<&str>,
        timeline: &crate::timing::Timeline,
    ) -> Result<SnapshotRecord, Error> {
        let rec = self.reconcile(self.find_vm(query)?)?;
        if rec.state() != VmState::Running {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "VM {} is not running: only a running VM can be snapshotted (start it with `ignis start {}`)",
                    rec.name, rec.name
                ),
            ));
        }
        if !rec.spec.volumes.is_empty() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "VM {} has volumes ({}): a snapshot (and a fork) cannot capture them; ignis refuses VMs with volumes",
                    rec.name,
                    rec.spec
                        .volumes
                        .iter()
                        .map(|v| v.target.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if !rec.run_state().can_snapshot() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "VM {} is paused by `ignis pause`; unpause it first",
                    rec.name
                ),
            ));
        }
        if let Some(n) = name {
            if !crate::vm::valid_name(n) {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    format!("invalid snapshot name '{n}': use letters, digits, '_', '.', '-'"),
                ));
            }
            if self
                .store
                .db()
                .read(|tx| tx.lookup_name(KIND, n))?
                .is_some()
            {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("a snapshot named '{n}' exists; remove it or pick another --name"),
                ));
            }
        }
        let driver = crate::vm::driver(rec.spec.backend)?;
        let vmm_version = driver.version().ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!("cannot read the version of {}", rec.spec.backend),
            )
        })?;
        let dir = self.vm_dir(&rec.id);
        check_space(self.root(), &dir, u64::from(rec.spec.memory_mib) << 20)?;
        let _guard = self.operation_guard()?;
        let scratch = self
            .store
            .scratch("snapshot")
            .map_err(|e| Error::internal("create a scratch directory", e))?;
        let control = driver.control(&dir);
        let paused_at = Instant::now();
        let pause = timeline.phase("paused");
        // While paused: the VMM's state and memory, and the writable disk.
        // Copies cost what the files hold (their data extents, in the
        // kernel), never their apparent size.
        let saved = (|| -> Result<(), Error> {
            let phase = timeline.phase("vmm-snapshot");
            let files = control.snapshot(scratch.path()).map_err(|e| {
                Error::with_source(
                    ErrorKind::Internal,
                    format!("the VMM could not snapshot VM {}", rec.name),
                    e,
                )
            })?;
            phase.end();
            crate::fault::point("snapshot:state-saved");
            let phase = timeline.phase("copy-memory");
            for (from, to) in [(&files.memory, "memory"), (&files.state, "vmstate")] {
                if *from != scratch.path().join(to) {
                    ignis_state::fsutil::clone_or_copy(from, &scratch.path().join(to))
                        .map_err(|e| Error::internal(&format!("copy the VM's {to}"), e))?;
                }
            }
            phase.end();
            let _phase = timeline.phase("copy-disk");
            ignis_state::fsutil::clone_or_copy(
                &dir.join("data.ext4"),
                &scratch.path().join("disk"),
            )
            .map_err(|e| Error::internal("copy the writable disk", e))?;
            Ok(())
        })();
        // Resume whatever happened: a failed snapshot must not leave the
        // VM frozen.
        let resumed = timeline.time("resume", || control.resume());
        pause.end();
        let pause_ms = u64::try_from(paused_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        saved?;
        resumed.map_err(|e| {
            Error::with_source(
                ErrorKind::Internal,
                format!("VM {} could not be resumed after the snapshot", rec.name),
                e,
            )
        })?;
        crate::fault::point("snapshot:resumed");
        // Into the store (moved, not copied), hashed as they enter it
        // (sha256-chunked: only data is read, on every core), and sealed:
        // forks check the seal instead of re-hashing.
        let put = |file: &str| -> Result<BlobRef, Error> {
            let (digest, size) = self
                .store
                .blobs()
                .adopt(&scratch.path().join(file))
                .map_err(|e| Error::internal("store a snapshot blob", e))?;
            self.store
                .seal_blob(&digest)
                .map_err(|e| Error::internal("seal a snapshot blob", e))?;
            Ok(BlobRef { digest, size })
        };
        let store = timeline.phase("store");
        let (state, memory, disk) = (put("vmstate")?, put("memory")?, put("disk")?);
        store.end();
        crate::fault::point("snapshot:blobs-stored");
        let id = crate::vm::new_id();
        let snap = SnapshotRecord {
            id: id.clone(),
            name: name
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}-{}", rec.name, &id[..6])),
            created: crate::now(),
            vm_id: rec.id.clone(),
            vm_name: rec.name.clone(),
            parent: rec.spec.snapshot.as_ref().map(|o| o.id.clone()),
            image_id: rec.image_id.clone(),
            image: rec.image.clone(),
            kernel_id: rec.kernel_id.clone(),
            backend: rec.spec.backend,
            vmm_version,
            spec: rec.spec.clone(),
            state,
            memory,
            disk,
            pause_ms,
            agent: rec.status.health.is_some(),
            timings: timeline.phases(),
        };
        self.register_snapshot(&snap)?;
        tracing::info!(vm = %rec.name, snapshot = %snap.name, pause_ms, "snapshot taken");
        Ok(snap)
    }

    pub(crate) fn gc_quietly(&self) {
        if let Err(e) = self.store.gc(false) {
            tracing::warn!(error = %e, "garbage collection failed; run ignis system prune");
        }
    }
}

/// The copies of the disk and memory (scratch, then blobs) must fit: a
/// snapshot that runs out of space midway fails with the VM resumed, but
/// says so up front when it can.
fn check_space(root: &std::path::Path, vm_dir: &std::path::Path, memory: u64) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let disk = std::fs::metadata(vm_dir.join("data.ext4"))
        .map(|m| m.blocks() * 512)
        .unwrap_or(0);
    let need = 2 * (disk + memory);
    let Ok(st) = rustix::fs::statvfs(root) else {
        return Ok(());
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < need {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "not enough disk space for the snapshot in {}: about {} MiB needed, {} MiB free; free some space or run `ignis system prune`",
                root.display(),
                need >> 20,
                free >> 20
            ),
        ));
    }
    Ok(())
}
