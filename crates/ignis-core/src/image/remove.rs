use super::{normalize, KIND};
use crate::{resolve, Error, ErrorKind, Ignis};

/// What `image rm` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RemoveOutcome {
    /// Only a name was removed; the image has other names.
    Untagged(String),
    /// The image is in use: its names were removed (forced), the image stays
    /// until its users are gone.
    Dangling(String),
    /// The image, its disk and (once no other image needs them) its blobs.
    Deleted(String),
}

impl Ignis {
    /// `ignis image rm [-f] NAME|ID`. Removing by one of several names only
    /// untags (as Docker). An image used by a VM is refused unless `force`.
    pub fn image_remove(&self, query: &str, force: bool) -> Result<RemoveOutcome, Error> {
        let normalized = normalize(query);
        let outcome = self.store.db().tx(|tx| {
            let rows = tx.list_objects(KIND)?;
            let row = resolve(KIND, query, normalized.as_deref(), &rows)?;
            let by_name = row.names.iter().find(|n| *n == query || Some(n.as_str()) == normalized.as_deref());
            if let Some(name) = by_name {
                if row.names.len() > 1 {
                    tx.remove_name(KIND, name)?;
                    return Ok(RemoveOutcome::Untagged(name.clone()));
                }
            } else if row.names.len() > 1 && !force {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "image {} has several names ({}); remove them one by one or use -f",
                        ignis_api::short_id(&row.id),
                        row.names.join(", ")
                    ),
                ));
            }
            let users = tx.users_of(KIND, &row.id)?;
            if !users.is_empty() {
                let list: Vec<String> = users.iter().map(|(k, id)| format!("{k} {id}")).collect();
                if !force {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "image {} is used by {}; remove those first, or use -f to untag it now and delete it once unused",
                            ignis_api::short_id(&row.id),
                            list.join(", ")
                        ),
                    ));
                }
                for n in &row.names {
                    tx.remove_name(KIND, n)?;
                }
                return Ok(RemoveOutcome::Dangling(row.id.clone()));
            }
            tx.delete_object(KIND, &row.id)?;
            Ok(RemoveOutcome::Deleted(row.id.clone()))
        })?;
        if let RemoveOutcome::Deleted(id) = &outcome {
            self.remove_image_files(id);
        }
        Ok(outcome)
    }

    /// After a record is gone: delete its disk and collect its blobs if no
    /// operation is running (otherwise the next GC does).
    pub(crate) fn remove_image_files(&self, id: &str) {
        let hex = id.trim_start_matches("sha256:");
        let disk = self.store.disks_dir().join(format!("image-{hex}.ext4"));
        if let Err(e) = std::fs::remove_file(&disk) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %disk.display(), error = %e, "cannot remove image disk; prune will");
            }
        }
        if let Err(e) = self.store.gc(false) {
            tracing::warn!(error = %e, "garbage collection after rm failed; run ignis system prune");
        }
    }
}
