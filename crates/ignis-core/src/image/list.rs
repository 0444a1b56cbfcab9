use ignis_api::ImageRecord;

use super::{parse, KIND};
use crate::{Error, Ignis};

impl Ignis {
    /// `ignis image ls`: all images, newest first.
    pub fn image_list(&self) -> Result<Vec<ImageRecord>, Error> {
        let rows = self.store.db().read(|tx| tx.list_objects(KIND))?;
        rows.iter().map(parse).collect()
    }
}
