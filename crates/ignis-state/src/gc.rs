use ignis_api::PruneReport;

use crate::{DbError, DigestError, FileLock, LockError, Store};

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("cannot take the garbage-collection lock")]
    Lock(#[from] LockError),
    #[error("cannot read references")]
    Db(#[from] DbError),
    #[error("cannot remove a blob")]
    Blob(#[from] DigestError),
    #[error("cannot clean {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Store {
    /// Removes blobs no record references, derived files no record owns and
    /// every scratch directory. With `wait`, blocks until running operations
    /// finish; without, returns `None` when one is running.
    pub fn gc(&self, wait: bool) -> Result<Option<PruneReport>, GcError> {
        let lock_path = self.root().join("locks/gc.lock");
        let _lock = if wait {
            FileLock::exclusive(&lock_path)?
        } else {
            match FileLock::try_exclusive(&lock_path)? {
                Some(l) => l,
                None => return Ok(None),
            }
        };
        let mut report = PruneReport::default();
        let (referenced, owned) = self
            .db()
            .tx(|tx| Ok::<_, DbError>((tx.referenced_blobs()?, tx.owned_files()?)))?;

        let io = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |source| GcError::Io { path, source }
        };
        for (digest, size) in self.blobs().list().map_err(io(self.root()))? {
            if !referenced.contains(&digest) {
                self.blobs().remove(&digest)?;
                self.db().tx(|tx| tx.remove_seal(&digest))?;
                tracing::debug!(%digest, "gc: removed unreferenced blob");
                report.blobs_removed += 1;
                report.bytes_freed += size;
            }
        }
        for disks in [self.disks_dir(), self.root().join("vms")] {
            for entry in std::fs::read_dir(&disks).map_err(io(&disks))? {
                let entry = entry.map_err(io(&disks))?;
                let path = entry.path();
                if !owned.contains(&path.display().to_string()) {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    remove_any(&path).map_err(io(&path))?;
                    tracing::debug!(path = %path.display(), "gc: removed unowned file");
                    report.disks_removed += 1;
                    report.bytes_freed += size;
                }
            }
        }
        let tmp = self.root().join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(io(&tmp))? {
            let path = entry.map_err(io(&tmp))?.path();
            report.bytes_freed += du(&path);
            remove_any(&path).map_err(io(&path))?;
            report.temp_removed += 1;
        }
        Ok(Some(report))
    }
}

fn remove_any(path: &std::path::Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path)?.is_dir() {
        crate::fsutil::remove_tree(path)
    } else {
        std::fs::remove_file(path)
    }
}

fn du(path: &std::path::Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.len()
    }
}

#[cfg(test)]
mod tests {
    use crate::{DbError, Store};

    #[test]
    fn gc_keeps_referenced_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kept = store.blobs().put(b"kept", None).unwrap();
        let orphan = store.blobs().put(b"orphan", None).unwrap();
        let disk = store.disks_dir().join("owned.ext4");
        std::fs::write(&disk, b"x").unwrap();
        std::fs::write(store.disks_dir().join("stray.ext4"), b"x").unwrap();
        std::fs::create_dir_all(store.root().join("tmp/import-1/rootfs")).unwrap();
        store
            .db()
            .tx(|tx| {
                tx.insert_object("image", "i", 0, "{}")?;
                tx.add_blob_ref(&kept, "image", "i")?;
                tx.add_file(&disk.display().to_string(), "image", "i")?;
                Ok::<_, DbError>(())
            })
            .unwrap();
        let report = store.gc(true).unwrap().unwrap();
        assert_eq!(
            (
                report.blobs_removed,
                report.disks_removed,
                report.temp_removed
            ),
            (1, 1, 1)
        );
        assert!(store.blobs().contains(&kept));
        assert!(!store.blobs().contains(&orphan));
        assert!(disk.exists());
        assert_eq!(
            std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn gc_without_wait_gives_way_to_a_running_operation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let orphan = store.blobs().put(b"in flight", None).unwrap();
        let guard = store.operation_guard().unwrap();
        assert!(store.gc(false).unwrap().is_none());
        assert!(
            store.blobs().contains(&orphan),
            "a live operation's blob survives"
        );
        drop(guard);
        assert_eq!(store.gc(false).unwrap().unwrap().blobs_removed, 1);
    }
}
