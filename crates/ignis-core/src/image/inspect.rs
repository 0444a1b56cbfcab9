use ignis_api::ImageRecord;

use super::{normalize, parse, KIND};
use crate::{resolve, Error, Ignis};

impl Ignis {
    /// `ignis image inspect NAME|ID`.
    pub fn image_inspect(&self, query: &str) -> Result<ImageRecord, Error> {
        let rows = self.store.db().read(|tx| tx.list_objects(KIND))?;
        let row = resolve(KIND, query, normalize(query).as_deref(), &rows)?;
        parse(row)
    }
}
