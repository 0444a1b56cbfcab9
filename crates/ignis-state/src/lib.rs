//! The ignis state root (`/var/lib/ignis`, `--root`, `IGNIS_ROOT`).
//!
//! ```text
//! <root>/
//!   state.db            SQLite, WAL; records and blob references (schema.rs)
//!   blobs/sha256/<hex>  content-addressed blobs, verified on the way in
//!   blobs/sha256-chunked/<hex>  VM-sized blobs (snapshots), see chunked.rs
//!   disks/              derived files owned by a record (image ext4 disks)
//!   vms/<id>/           a VM's writable disk, console log, runtime files
//!   tmp/<op>/           per-operation scratch; removed by the operation or GC
//!   locks/              advisory flock files (gc.lock, per-object locks)
//!   cache/              derived, rebuildable, owned by no record: empty
//!                       writable-disk templates, VMM `--version` answers
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
pub mod chunked;
mod db;
pub mod fsutil;
mod gc;
mod lock;
mod schema;

pub use blob::{digest_hex, parse_digest, Algorithm, BlobStore, BlobWriter, DigestError};
pub use db::{Db, DbError, ForwardRow, ObjectRow, Tx};
pub use fsutil::{fsync_dir, write_atomic};
pub use gc::GcError;

/// A blob could not be sealed or checked.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("blob check")]
    Blob(#[from] DigestError),
    #[error("blob seal record")]
    Db(#[from] DbError),
}
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
        for dir in [
            "",
            "blobs/sha256",
            "blobs/sha256-chunked",
            "disks",
            "vms",
            "tmp",
            "locks",
            "cache",
        ] {
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

    /// The identity of a blob's file: inode, size, mtime (ns).
    fn blob_identity(&self, digest: &str) -> Result<(u64, u64, i64), DigestError> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(self.blobs.path(digest)?).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DigestError::Missing {
                digest: digest.to_string(),
            },
            _ => DigestError::Io(e),
        })?;
        Ok((
            m.ino(),
            m.size(),
            m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ))
    }

    /// Seals a blob that was just verified (it entered the store, or was
    /// re-hashed): later uses check the seal instead of re-hashing.
    pub fn seal_blob(&self, digest: &str) -> Result<(), SealError> {
        let id = self.blob_identity(digest)?;
        self.db.tx(|tx| tx.set_seal(digest, id))?;
        Ok(())
    }

    /// Checks a blob before use: a stat when its file is as it was sealed;
    /// otherwise (written to, replaced, never sealed) a full re-hash, which
    /// refuses a blob that no longer matches its digest and re-seals one
    /// that does. Returns whether it had to re-hash.
    pub fn check_blob(&self, digest: &str) -> Result<bool, SealError> {
        let id = self.blob_identity(digest)?;
        if self.db.read(|tx| tx.seal(digest))? == Some(id) {
            return Ok(false);
        }
        self.blobs.verify(digest)?;
        self.db.tx(|tx| tx.set_seal(digest, id))?;
        Ok(true)
    }

    /// Derived files that any process may rebuild (never collected).
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
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
