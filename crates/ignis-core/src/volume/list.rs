use ignis_api::VolumeRecord;

use super::{parse, KIND};
use crate::{Error, Ignis};

impl Ignis {
    /// `ignis volume ls`: every volume with the VMs that mount it.
    pub fn volume_list(&self) -> Result<Vec<VolumeRecord>, Error> {
        let rows = self.store.db().read(|tx| tx.list_objects(KIND))?;
        let mut out = Vec::new();
        for row in &rows {
            out.push(self.volume_with_users(parse(row)?)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
