use ignis_api::VolumeRecord;

use super::{parse, KIND};
use crate::{Error, Ignis};

impl Ignis {
    /// `ignis volume inspect`: a volume by name or ID prefix.
    pub fn volume_inspect(&self, query: &str) -> Result<VolumeRecord, Error> {
        let rows = self.store.db().read(|tx| tx.list_objects(KIND))?;
        let v = parse(crate::resolve(KIND, query, None, &rows)?)?;
        self.volume_with_users(v)
    }
}
