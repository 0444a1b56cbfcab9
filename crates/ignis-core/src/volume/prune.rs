use ignis_api::VolumePruneReport;

use crate::{Error, Ignis};

impl Ignis {
    /// `ignis volume prune`: removes the volumes no VM mounts that are
    /// anonymous (dangling: their VM was removed without `-v`, or never
    /// recorded); with `all`, named ones too (as `docker volume prune
    /// -a`). Under the garbage-collection lock taken exclusively, so no
    /// create is between making or choosing its volumes and recording its
    /// VM meanwhile.
    pub fn volume_prune(&self, all: bool) -> Result<VolumePruneReport, Error> {
        let _lock = ignis_state::FileLock::exclusive(&self.store.root().join("locks/gc.lock"))
            .map_err(|e| Error::internal("take the garbage-collection lock", e))?;
        let mut report = VolumePruneReport::default();
        for v in self.volume_list()? {
            if !v.used_by.is_empty() || !(v.anonymous || all) {
                continue;
            }
            let held = std::fs::metadata(&v.path)
                .map_or(0, |m| std::os::unix::fs::MetadataExt::blocks(&m) * 512);
            self.volume_delete(&v)?;
            report.volumes_deleted.push(v.name);
            report.space_reclaimed += held;
        }
        Ok(report)
    }
}
