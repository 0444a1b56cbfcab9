use std::path::PathBuf;

use ignis_api::ImageRecord;
use ignis_image::rootfs::{build_disk, BuildError};
use ignis_image::Fetched;

use super::{normalize, parse, KIND};
use crate::{fault, Error, ErrorKind, Ignis};

impl Ignis {
    /// Turns fetched blobs into a recorded image: unpack, build the ext4
    /// disk (once per image ID, even with concurrent imports), commit the
    /// record with its blob references and names. The caller holds the
    /// operation guard. On any failure nothing is recorded and the scratch
    /// space is removed.
    pub(crate) fn commit_image(
        &self,
        fetched: Fetched,
        extra_names: &[String],
    ) -> Result<ImageRecord, Error> {
        let id = fetched.config_digest.clone();
        let mut names: Vec<String> = Vec::new();
        for n in fetched.names.iter().chain(extra_names) {
            let n = normalize(n).unwrap_or_else(|| n.clone());
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let _lock = self
            .store
            .object_lock(KIND, &id)
            .map_err(|e| Error::internal("lock the image", e))?;
        if let Some(row) = self.store.db().read(|tx| tx.get_object(KIND, &id))? {
            // Stored already (maybe by a concurrent import): only add names.
            self.store.db().tx(|tx| {
                for n in &names {
                    tx.set_name(KIND, n, &id)?;
                }
                Ok::<_, Error>(())
            })?;
            let row = self
                .store
                .db()
                .read(|tx| tx.get_object(KIND, &row.id))?
                .expect("exists");
            return parse(&row);
        }

        let scratch = self
            .store
            .scratch("image")
            .map_err(|e| Error::internal("create scratch space", e))?;
        let tree = scratch.path().join("rootfs");
        std::fs::create_dir(&tree)
            .map_err(|e| Error::internal("create the unpack directory", e))?;
        let tmp_disk = scratch.path().join("disk.ext4");
        let (disk, layers, stats) = build_disk(
            &self.store,
            &fetched,
            &tree,
            &tmp_disk,
            self.disks.as_ref(),
            &self.progress(),
        )
        .map_err(build_error)?;
        let has_init = exists_in_tree(&tree, "sbin/init");
        fault::point("image:disk-built");
        tracing::debug!(image = %id, entries = stats.entries, bytes = stats.bytes, "unpacked");

        let hex = id.trim_start_matches("sha256:");
        let disk_path: PathBuf = self.store.disks_dir().join(format!("image-{hex}.ext4"));
        std::fs::rename(&tmp_disk, &disk_path)
            .map_err(|e| Error::internal("move the image disk into place", e))?;
        ignis_state::fsync_dir(&self.store.disks_dir())
            .map_err(|e| Error::internal("sync the disks directory", e))?;
        fault::point("image:before-record");

        let record = ImageRecord {
            id: id.clone(),
            names: vec![],
            manifest_digest: fetched.manifest_digest.clone(),
            source: fetched.source.clone(),
            os: fetched.config.os.clone(),
            architecture: fetched.config.architecture.clone(),
            created: crate::now(),
            content_size: fetched.layers.iter().map(|l| l.size).sum(),
            rootfs_size: disk.tree_bytes,
            disk_size: disk.disk_size,
            disk_path: disk_path.display().to_string(),
            config: fetched.config.image_config(),
            layers,
            has_init,
        };
        let json = serde_json::to_string(&record).expect("serializable");
        self.store.db().tx(|tx| {
            tx.insert_object(KIND, &id, record.created, &json)?;
            for b in &fetched.blobs {
                tx.add_blob_ref(b, KIND, &id)?;
            }
            tx.add_file(&record.disk_path, KIND, &id)?;
            for n in &names {
                tx.set_name(KIND, n, &id)?;
            }
            Ok::<_, Error>(())
        })?;
        drop(scratch);
        let row = self
            .store
            .db()
            .read(|tx| tx.get_object(KIND, &id))?
            .expect("just inserted");
        parse(&row)
    }
}

fn build_error(e: BuildError) -> Error {
    use ignis_image::ext4::DiskError;
    let kind = match &e {
        BuildError::Disk(DiskError::ToolMissing { .. }) => ErrorKind::Unavailable,
        BuildError::Disk(_) | BuildError::Blob { .. } => ErrorKind::Internal,
        _ => ErrorKind::Invalid,
    };
    Error::with_source(kind, "cannot build the image", e)
}

/// Whether `path` exists inside the image tree `root`, following symlinks
/// as the guest would (absolute targets are relative to the image root, and
/// never leave it).
pub(crate) fn exists_in_tree(root: &std::path::Path, path: &str) -> bool {
    let mut stack: Vec<String> = path
        .split('/')
        .rev()
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(comp) = stack.pop() {
        match comp.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        cur.push(comp);
        let host = root.join(cur.join("/"));
        let Ok(meta) = std::fs::symlink_metadata(&host) else {
            return false;
        };
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return false;
            }
            let Ok(target) = std::fs::read_link(&host) else {
                return false;
            };
            let target = target.to_string_lossy().into_owned();
            cur.pop();
            if target.starts_with('/') {
                cur.clear();
            }
            stack.extend(
                target
                    .split('/')
                    .rev()
                    .filter(|c| !c.is_empty())
                    .map(str::to_string),
            );
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::exists_in_tree;

    #[test]
    fn init_is_found_through_in_tree_symlinks_only() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
        std::fs::write(root.join("usr/lib/systemd/systemd"), b"").unwrap();
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::os::unix::fs::symlink("/usr/sbin", root.join("sbin")).unwrap();
        std::os::unix::fs::symlink("../lib/systemd/systemd", root.join("usr/sbin/init")).unwrap();
        assert!(exists_in_tree(root, "sbin/init"));
        std::os::unix::fs::symlink("/etc/passwd", root.join("escape")).unwrap();
        assert!(
            !exists_in_tree(root, "escape"),
            "absolute targets resolve inside the tree"
        );
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(!exists_in_tree(root, "loop"));
        assert!(!exists_in_tree(root, "bin/sh"));
    }
}
