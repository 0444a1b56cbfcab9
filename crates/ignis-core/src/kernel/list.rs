use ignis_api::KernelRecord;

use super::{parse, KIND};
use crate::{resolve, Error, Ignis};

impl Ignis {
    /// `ignis kernel ls`.
    pub fn kernel_list(&self) -> Result<Vec<KernelRecord>, Error> {
        let rows = self.store.db().read(|tx| tx.list_objects(KIND))?;
        rows.iter().map(parse).collect()
    }

    /// Finds a kernel by name or ID prefix.
    pub fn kernel_inspect(&self, query: &str) -> Result<KernelRecord, Error> {
        let rows = self.store.db().read(|tx| tx.list_objects(KIND))?;
        parse(resolve(KIND, query, None, &rows)?)
    }
}
