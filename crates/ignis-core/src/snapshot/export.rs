//! `ignis snapshot export|import`: a snapshot as one file (a zstd tar of
//! `snapshot.json` and its blobs), verified by digest on the way in.

use std::io::Read;
use std::path::Path;

use ignis_api::SnapshotRecord;

use super::KIND;
use crate::{Error, ErrorKind, Ignis};

const MANIFEST: &str = "snapshot.json";

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::Invalid, msg)
}

impl Ignis {
    /// Writes the snapshot to `out` (atomically: a partial file never
    /// carries the final name).
    pub fn snapshot_export(&self, query: &str, out: &Path) -> Result<SnapshotRecord, Error> {
        let snap = self.snapshot_inspect(query)?;
        self.snapshot_verify(&snap)?;
        let tmp = out.with_extension("partial");
        let write = || -> std::io::Result<()> {
            let f = std::fs::File::create(&tmp)?;
            let z = zstd::Encoder::new(f, 3)?;
            let mut b = tar::Builder::new(z);
            let manifest = serde_json::to_vec_pretty(&snap).expect("json");
            let mut h = tar::Header::new_gnu();
            h.set_size(manifest.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, MANIFEST, &manifest[..])?;
            for blob in [&snap.state, &snap.memory, &snap.disk] {
                let hex = ignis_state::parse_digest(&blob.digest)
                    .map_err(|e| std::io::Error::other(e.to_string()))?
                    .1;
                let mut f = self
                    .store
                    .blobs()
                    .open(&blob.digest)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                b.append_file(format!("blobs/{hex}"), &mut f)?;
            }
            b.into_inner()?.finish()?.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::with_source(
                ErrorKind::Internal,
                format!("cannot write {}", out.display()),
                e,
            ));
        }
        std::fs::rename(&tmp, out).map_err(|e| Error::internal("rename the export", e))?;
        Ok(snap)
    }

    /// Reads a file written by `snapshot export`. Every blob must match
    /// its digest and size from the manifest; unknown entries, a missing
    /// blob, or an image/kernel this host lacks are errors, and nothing is
    /// recorded unless everything checked out.
    pub fn snapshot_import(&self, path: &Path) -> Result<SnapshotRecord, Error> {
        let f = std::fs::File::open(path).map_err(|e| {
            Error::with_source(
                ErrorKind::NotFound,
                format!("cannot open {}", path.display()),
                e,
            )
        })?;
        let z = zstd::Decoder::new(f).map_err(|e| Error::internal("read the snapshot file", e))?;
        let mut ar = tar::Archive::new(z);
        let bad = |e: std::io::Error| {
            invalid(format!("{} is not a snapshot export: {e}", path.display()))
        };
        let _guard = self.operation_guard()?;
        let mut snap: Option<SnapshotRecord> = None;
        let mut stored = std::collections::BTreeSet::new();
        for entry in ar.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let name = entry.path().map_err(bad)?.display().to_string();
            if name == MANIFEST {
                if entry.size() > 1 << 20 {
                    return Err(invalid(format!(
                        "{}: manifest larger than 1 MiB",
                        path.display()
                    )));
                }
                let mut text = Vec::new();
                entry.read_to_end(&mut text).map_err(bad)?;
                let s: SnapshotRecord = serde_json::from_slice(&text)
                    .map_err(|e| invalid(format!("{}: bad manifest: {e}", path.display())))?;
                if !crate::vm::valid_name(&s.name)
                    || s.id.len() != 16
                    || !s.id.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(invalid(format!(
                        "{}: bad snapshot name or ID",
                        path.display()
                    )));
                }
                snap = Some(s);
                continue;
            }
            let Some(s) = &snap else {
                return Err(invalid(format!(
                    "{}: the manifest must come first",
                    path.display()
                )));
            };
            let hex = name.strip_prefix("blobs/").unwrap_or("");
            let Some((blob, algo)) = [&s.state, &s.memory, &s.disk].into_iter().find_map(|b| {
                match ignis_state::parse_digest(&b.digest) {
                    Ok((algo, h)) if h == hex => Some((b, algo)),
                    _ => None,
                }
            }) else {
                return Err(invalid(format!(
                    "{}: unexpected entry {name}",
                    path.display()
                )));
            };
            if entry.size() != blob.size {
                return Err(invalid(format!(
                    "{}: {name} is {} bytes, the manifest says {}",
                    path.display(),
                    entry.size(),
                    blob.size
                )));
            }
            let mut w = self
                .store
                .blobs()
                .writer_for(algo)
                .map_err(|e| Error::internal("store a blob", e))?;
            std::io::copy(&mut entry.by_ref().take(blob.size), &mut w).map_err(bad)?;
            w.commit(Some(&blob.digest)).map_err(|e| {
                Error::with_source(
                    ErrorKind::Invalid,
                    format!(
                        "{}: {name} does not match its digest (corrupted file)",
                        path.display()
                    ),
                    e,
                )
            })?;
            self.store
                .seal_blob(&blob.digest)
                .map_err(|e| Error::internal("seal a snapshot blob", e))?;
            stored.insert(blob.digest.clone());
        }
        let snap = snap.ok_or_else(|| invalid(format!("{}: no {MANIFEST}", path.display())))?;
        for b in [&snap.state, &snap.memory, &snap.disk] {
            if !stored.contains(&b.digest) {
                return Err(invalid(format!(
                    "{}: blob {} is missing",
                    path.display(),
                    b.digest
                )));
            }
        }
        self.register_snapshot(&snap)?;
        Ok(snap)
    }

    /// Records a snapshot whose blobs are in the store (import, pull):
    /// refused when this host lacks its image or kernel, or has it already.
    pub(crate) fn register_snapshot(&self, snap: &SnapshotRecord) -> Result<(), Error> {
        self.image_inspect(&snap.image_id).map_err(|_| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "snapshot {} needs image {} ({}): pull or import it first",
                    snap.name,
                    snap.image,
                    ignis_api::short_id(&snap.image_id)
                ),
            )
        })?;
        self.kernel_inspect(&snap.kernel_id).map_err(|_| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "snapshot {} needs kernel {}: import it first",
                    snap.name,
                    ignis_api::short_id(&snap.kernel_id)
                ),
            )
        })?;
        self.store.db().tx(|tx| {
            if tx.get_object(KIND, &snap.id)?.is_some() {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("snapshot {} is already here", snap.id),
                ));
            }
            if tx.lookup_name(KIND, &snap.name)?.is_some() {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "a snapshot named '{}' exists; remove or rename it first",
                        snap.name
                    ),
                ));
            }
            tx.insert_object(
                KIND,
                &snap.id,
                snap.created,
                &serde_json::to_string(&snap).expect("json"),
            )?;
            tx.set_name(KIND, &snap.name, &snap.id)?;
            for b in [&snap.state, &snap.memory, &snap.disk] {
                tx.add_blob_ref(&b.digest, KIND, &snap.id)?;
            }
            tx.add_use(KIND, &snap.id, crate::image::KIND, &snap.image_id)?;
            tx.add_use(KIND, &snap.id, crate::kernel::KIND, &snap.kernel_id)?;
            Ok::<_, Error>(())
        })?;
        Ok(())
    }
}
