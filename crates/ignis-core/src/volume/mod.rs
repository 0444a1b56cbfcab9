//! Volumes (`ignis volume`, `-v`): ext4 disk files in the state root
//! (`volumes/<id>.ext4`) that outlive the VMs that mount them, and what a
//! VM mounts besides them (host disk image files, host block devices).
//! One file per operation; `attach` is what VM create and start need.
//!
//! Policy: a volume can be mounted by one running VM when either side
//! mounts it read-write (`start` refuses a second with a conflict naming
//! the first); read-only by any number. `snapshot` and `fork` refuse a VM
//! with volumes: a snapshot would capture the guest's view of a disk that
//! it does not contain.

mod attach;
mod create;

pub use create::MAX_VOLUME_SIZE;
mod inspect;
mod list;
mod remove;

use ignis_api::VolumeRecord;
use ignis_state::ObjectRow;

use crate::{Error, ErrorKind, Ignis};

pub(crate) const KIND: &str = "volume";
/// Size of a volume made without `--volume-size`.
pub const DEFAULT_VOLUME_SIZE: u64 = 1 << 30;

pub(crate) fn parse(row: &ObjectRow) -> Result<VolumeRecord, Error> {
    serde_json::from_str(&row.record).map_err(|e| {
        Error::with_source(
            ErrorKind::Internal,
            format!("volume record {} is unreadable", row.id),
            e,
        )
    })
}

impl Ignis {
    pub(crate) fn volumes_dir(&self) -> std::path::PathBuf {
        self.store.root().join("volumes")
    }

    /// The record with the VMs whose spec mounts it (by name).
    pub(crate) fn volume_with_users(&self, mut v: VolumeRecord) -> Result<VolumeRecord, Error> {
        let users = self.store.db().read(|tx| tx.users_of(KIND, &v.id))?;
        let mut names = Vec::new();
        for (kind, id) in users {
            if kind == crate::vm::KIND {
                if let Some(vm) = self.load_vm(&id)? {
                    names.push(vm.name);
                }
            }
        }
        v.used_by = names;
        Ok(v)
    }
}
