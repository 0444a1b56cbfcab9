use std::collections::BTreeMap;

use ignis_api::VolumeRecord;

use super::KIND;
use crate::{Error, ErrorKind, Ignis};

/// The largest volume: 8 TiB (ext4 files, the volume and its file on an
/// ext4 state root, end just below 16 TiB).
pub const MAX_VOLUME_SIZE: u64 = 8 << 40;

impl Ignis {
    /// `ignis volume create`: an empty ext4 disk file of `size` bytes
    /// (sparse), labelled `ignis-volume`. Nothing is left when it fails.
    pub fn volume_create(
        &self,
        name: Option<&str>,
        size: Option<u64>,
        labels: BTreeMap<String, String>,
    ) -> Result<VolumeRecord, Error> {
        self.volume_make(name, size, labels, false)
    }

    pub(crate) fn volume_make(
        &self,
        name: Option<&str>,
        size: Option<u64>,
        labels: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<VolumeRecord, Error> {
        let id = crate::vm::new_id();
        let name = match name {
            Some(n) if !crate::vm::valid_name(n) => {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    format!("invalid volume name '{n}': use letters, digits, '_', '.', '-', starting with a letter or digit"),
                ))
            }
            Some(n) => n.to_string(),
            None => id[..12].to_string(),
        };
        let size = size.unwrap_or(super::DEFAULT_VOLUME_SIZE);
        if size < crate::vm::MIN_VOLUME_SIZE {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("{size} bytes is too small for a volume (at least 16MB)"),
            ));
        }
        if size > MAX_VOLUME_SIZE {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("{size} bytes is too large for a volume (at most 8TB)"),
            ));
        }
        if self
            .store
            .db()
            .read(|tx| tx.lookup_name(KIND, &name))?
            .is_some()
        {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("a volume named '{name}' exists already"),
            ));
        }
        let dir = self.volumes_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::internal("create the volumes directory", e))?;
        let path = dir.join(format!("{id}.ext4"));
        let made = crate::vm::mkfs_ext4(&path, size, "ignis-volume");
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let rec = VolumeRecord {
            id: id.clone(),
            name: name.clone(),
            created: crate::now(),
            size,
            path: path.display().to_string(),
            anonymous,
            labels,
            used_by: vec![],
        };
        let stored = self.store.db().tx(|tx| {
            if tx.lookup_name(KIND, &name)?.is_some() {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("a volume named '{name}' exists already"),
                ));
            }
            tx.insert_object(
                KIND,
                &id,
                rec.created,
                &serde_json::to_string(&rec).expect("json"),
            )?;
            tx.set_name(KIND, &name, &id)?;
            tx.add_file(&rec.path, KIND, &id)?;
            Ok::<_, Error>(())
        });
        if let Err(e) = stored {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(rec)
    }
}
