//! Snapshots of running VMs (`ignis snapshot`), their store (records whose
//! memory, state and disk are content-addressed blobs, shared between
//! snapshots with the same content and reference-counted by the blob GC),
//! lineage, and forks (`ignis fork`, `ignis run --snapshot`).

mod create;
mod export;
mod fork;
mod list;
mod registry;

pub use fork::ForkOptions;
pub use list::TreeLine;

use ignis_api::SnapshotRecord;
use ignis_state::ObjectRow;

use crate::{Error, ErrorKind, Ignis};

pub(crate) const KIND: &str = "snapshot";

pub(crate) fn parse(row: &ObjectRow) -> Result<SnapshotRecord, Error> {
    serde_json::from_str(&row.record).map_err(|e| {
        Error::with_source(
            ErrorKind::Internal,
            format!("snapshot record {} is unreadable", row.id),
            e,
        )
    })
}

impl Ignis {
    /// A snapshot by name or ID prefix.
    pub fn snapshot_inspect(&self, query: &str) -> Result<SnapshotRecord, Error> {
        let rows = self.store.db().read(|tx| tx.list_objects(KIND))?;
        parse(crate::resolve(KIND, query, None, &rows)?)
    }

    /// `ignis snapshot rm`: the record goes; its blobs go with the next GC
    /// once no other snapshot or forked VM references them.
    pub fn snapshot_remove(&self, query: &str) -> Result<SnapshotRecord, Error> {
        let snap = self.snapshot_inspect(query)?;
        self.store.db().tx(|tx| tx.delete_object(KIND, &snap.id))?;
        self.gc_quietly();
        Ok(snap)
    }

    /// Verifies every blob of a snapshot against its digest (re-hashes:
    /// for bytes leaving the store, export and push).
    pub(crate) fn snapshot_verify(&self, snap: &SnapshotRecord) -> Result<(), Error> {
        self.snapshot_blobs(snap, |d| self.store.blobs().verify(d).map_err(Into::into))
    }

    /// Checks every blob of a snapshot before use (fork, restore): the
    /// seal each got when it entered the store, re-hashing only a blob
    /// whose file changed since (and refusing one that no longer matches).
    pub(crate) fn snapshot_check(&self, snap: &SnapshotRecord) -> Result<(), Error> {
        self.snapshot_blobs(snap, |d| self.store.check_blob(d).map(drop))
    }

    fn snapshot_blobs(
        &self,
        snap: &SnapshotRecord,
        check: impl Fn(&str) -> Result<(), ignis_state::SealError>,
    ) -> Result<(), Error> {
        for (what, b) in [
            ("state", &snap.state),
            ("memory", &snap.memory),
            ("disk", &snap.disk),
        ] {
            check(&b.digest).map_err(|e| match e {
                ignis_state::SealError::Db(e) => Error::internal("read a blob's seal", e),
                ignis_state::SealError::Blob(e) => Error::with_source(
                    ErrorKind::Invalid,
                    format!(
                        "snapshot {}: the {what} blob {} is missing or corrupted; remove the snapshot (`ignis snapshot rm {}`) or import it again",
                        snap.name, b.digest, snap.name
                    ),
                    e,
                ),
            })?;
        }
        Ok(())
    }
}
