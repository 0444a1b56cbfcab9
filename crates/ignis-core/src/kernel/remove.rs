use super::KIND;
use crate::{resolve, Error, ErrorKind, Ignis};

impl Ignis {
    /// `ignis kernel rm [-f] NAME|ID`; refused while a VM uses it unless forced.
    pub fn kernel_remove(&self, query: &str, force: bool) -> Result<String, Error> {
        let id = self.store.db().tx(|tx| {
            let rows = tx.list_objects(KIND)?;
            let row = resolve(KIND, query, None, &rows)?;
            let users = tx.users_of(KIND, &row.id)?;
            if !users.is_empty() && !force {
                let list: Vec<String> = users.iter().map(|(k, id)| format!("{k} {id}")).collect();
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "kernel {} is used by {}; remove those first or use -f",
                        ignis_api::short_id(&row.id),
                        list.join(", ")
                    ),
                ));
            }
            tx.delete_object(KIND, &row.id)?;
            Ok(row.id.clone())
        })?;
        if let Err(e) = self.store.gc(false) {
            tracing::warn!(error = %e, "garbage collection after rm failed; run ignis system prune");
        }
        Ok(id)
    }
}
