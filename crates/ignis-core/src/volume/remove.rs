use ignis_api::VolumeRecord;

use super::KIND;
use crate::{Error, ErrorKind, Ignis};

impl Ignis {
    /// `ignis volume rm`: refused while a VM mounts it (remove the VM
    /// first); the record and the disk file go.
    pub fn volume_remove(&self, query: &str) -> Result<VolumeRecord, Error> {
        let v = self.volume_inspect(query)?;
        if !v.used_by.is_empty() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "volume {} is used by VM {}; remove the VM first",
                    v.name,
                    v.used_by.join(", ")
                ),
            ));
        }
        self.volume_delete(&v)?;
        Ok(v)
    }

    /// Deletes a volume's record and file (its users are checked by the
    /// caller).
    pub(crate) fn volume_delete(&self, v: &VolumeRecord) -> Result<(), Error> {
        self.store.db().tx(|tx| tx.delete_object(KIND, &v.id))?;
        if let Err(e) = std::fs::remove_file(&v.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %v.path, error = %e, "cannot remove the volume's file");
            }
        }
        Ok(())
    }
}
