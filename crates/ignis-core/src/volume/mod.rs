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
mod prune;
mod remove;

use ignis_api::VolumeRecord;
use ignis_state::ObjectRow;

use crate::{Error, ErrorKind, Ignis};

pub(crate) const KIND: &str = "volume";
/// The label of an anonymous volume while its VM exists: the VM's ID.
/// Removing the VM without `-v` drops it (the volume is then dangling, kept
/// as Docker keeps it); one that still names a VM without a record was
/// made by a create that died before recording its VM, and `system prune`
/// removes it.
pub(crate) const VM_LABEL: &str = "ignis.vm";
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

/// In the transaction that deletes `vm`'s record: its anonymous volumes
/// stop naming it (they are dangling from now on).
pub(crate) fn release_anonymous(
    tx: &ignis_state::Tx<'_>,
    vm: &ignis_api::VmRecord,
) -> Result<(), Error> {
    for m in &vm.spec.volumes {
        let Some(id) = &m.volume_id else { continue };
        let Some(row) = tx.get_object(KIND, id)? else {
            continue;
        };
        let mut v = parse(&row)?;
        if v.anonymous && v.labels.get(VM_LABEL) == Some(&vm.id) {
            v.labels.remove(VM_LABEL);
            tx.update_record(KIND, id, &serde_json::to_string(&v).expect("json"))?;
        }
    }
    Ok(())
}

impl Ignis {
    /// Anonymous volumes that name a VM without a record: a create died
    /// after making them and before recording its VM.
    pub(crate) fn orphan_volumes(&self) -> Result<Vec<VolumeRecord>, Error> {
        self.store.db().read(|tx| {
            let mut out = Vec::new();
            for row in tx.list_objects(KIND)? {
                let v = parse(&row)?;
                if let Some(vm) = v.labels.get(VM_LABEL) {
                    if v.anonymous && tx.get_object(crate::vm::KIND, vm)?.is_none() {
                        out.push(v);
                    }
                }
            }
            Ok::<_, Error>(out)
        })
    }

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
