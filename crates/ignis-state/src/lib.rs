//! The ignis state root (`/var/lib/ignis`, `--root`, `IGNIS_ROOT`).
//!
//! ```text
//! <root>/
//!   state.db            SQLite, WAL; records and blob references (schema.rs)
//!   blobs/sha256/<hex>  content-addressed blobs, verified on the way in
//!   disks/              derived files owned by a record (image ext4 disks)
//!   vms/<id>/           a VM's writable disk, console log, runtime files
//!   tmp/<op>/           per-operation scratch; removed by the operation or GC
//!   locks/              advisory flock files (gc.lock, per-object locks)
//! ```
//!
//! Concurrency: several ignis processes may run at once. SQLite serialises
//! record changes. Every operation that writes blobs holds `gc.lock` shared
//! for its whole life; garbage collection holds it exclusive, so it never
//! sees a blob that a live operation wrote but has not referenced yet. A
//! killed operation's shared lock goes away with its process, and the next
//! GC removes what it left (unreferenced blobs, disks without a record,
//! scratch dirs).
//!
//! Crash safety: files are written to `tmp/`, fsynced, then renamed into
//! place (and the directory fsynced); a record is committed only after the
//! files it names exist.

mod blob;
mod db;
pub mod fsutil;
mod gc;
mod lock;
mod schema;

pub use blob::{digest_hex, BlobStore, BlobWriter, DigestError};
pub use db::{Db, DbError, ForwardRow, ObjectRow, Tx};
pub use fsutil::{fsync_dir, write_atomic};
pub use gc::GcError;
pub use lock::{FileLock, LockError};

use std::path::{Path, PathBuf};

/// Errors opening the state root.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the state database")]
    Db(#[source] DbError),
}

/// Handle on a state root.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    blobs: BlobStore,
    db: Db,
}

impl Store {
    /// Opens (creating if needed) the state root and migrates the database.
    pub fn open(root: &Path) -> Result<Self, OpenError> {
        for dir in ["", "blobs/sha256", "disks", "vms", "tmp", "locks"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).map_err(|source| OpenError::CreateDir {
                path: path.clone(),
                source,
            })?;
        }
        let db = Db::open(&root.join("state.db")).map_err(OpenError::Db)?;
        Ok(Self {
            root: root.to_path_buf(),
            blobs: BlobStore::new(root),
            db,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Directory for derived files owned by records.
    pub fn disks_dir(&self) -> PathBuf {
        self.root.join("disks")
    }

    /// Creates a fresh scratch directory for one operation.
    pub fn scratch(&self, what: &str) -> std::io::Result<Scratch> {
        let base = self.root.join("tmp");
        let mut n = 0u32;
        loop {
            let name = format!("{what}-{}-{n}", std::process::id());
            let path = base.join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Scratch { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes `gc.lock` shared: hold it while writing blobs or disks that are
    /// not yet referenced by a committed record.
    pub fn operation_guard(&self) -> Result<FileLock, LockError> {
        FileLock::shared(&self.root.join("locks/gc.lock"))
    }

    /// Takes an exclusive lock named after an object (e.g. an image ID), so
    /// two processes do not build the same derived file twice.
    pub fn object_lock(&self, kind: &str, id: &str) -> Result<FileLock, LockError> {
        let safe: String = id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        FileLock::exclusive(&self.root.join(format!("locks/{kind}-{safe}.lock")))
    }

    /// As [`Self::object_lock`], without waiting: `None` while someone
    /// else holds it.
    pub fn try_object_lock(&self, kind: &str, id: &str) -> Result<Option<FileLock>, LockError> {
        FileLock::try_exclusive(&self.object_lock_path(kind, id))
    }

    /// Removes an object's lock file once the object is gone (a lock file
    /// per removed VM would otherwise pile up).
    pub fn remove_object_lock(&self, kind: &str, id: &str) {
        let _ = std::fs::remove_file(self.object_lock_path(kind, id));
    }

    fn object_lock_path(&self, kind: &str, id: &str) -> PathBuf {
        let safe: String = id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.root.join(format!("locks/{kind}-{safe}.lock"))
    }
}

/// A scratch directory removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = fsutil::remove_tree(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove scratch dir");
        }
    }
}
